// Multi-thread replay (`--threads N`): the trace's thread t is replayed by thread t % N, each
// replay thread taking its own ops in trace order. Operations on one slot keep their trace order
// across threads (a block allocated on one thread and freed on another is freed after it was
// allocated, and a slot is not reused before its block is freed): every op carries its turn on its
// slot, and waits until the slot's previous op has completed. Waits only ever point to an earlier
// op of the trace, and the earliest unfinished op can always run, so replay cannot deadlock.
//
// Allocators that are not thread-safe (tiermark's own, until issue 8 makes them so) are called under
// one mutex (LockedAllocator); the process's malloc is called directly.
#pragma once

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "replay/flat_trace.h"
#include "replay/latency_histogram.h"
#include "replay/replay_loop.h"

namespace tiermark {

// One replay thread's ops, each with its turn on its slot (the number of earlier ops on that slot).
struct ThreadOps {
  std::vector<ReplayOp> ops;
  std::vector<std::uint32_t> turns;
};

// Splits an in-memory trace into `threads` streams (trace thread t -> stream t % threads).
std::vector<ThreadOps> split_by_thread(const FlatTrace& trace, std::size_t threads);

template <class A>
class LockedAllocator {
 public:
  explicit LockedAllocator(A& allocator) : allocator_(allocator) {}
  void* allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept {
    std::lock_guard lock(mutex_);
    return allocator_.allocate(size, alignment, stream);
  }
  void deallocate(void* p, std::size_t size, std::size_t alignment, StreamId stream) noexcept {
    std::lock_guard lock(mutex_);
    allocator_.deallocate(p, size, alignment, stream);
  }

 private:
  A& allocator_;
  std::mutex mutex_;
};

// Waits for the slot's earlier ops: spin briefly, then yield (threads may outnumber cores).
inline void wait_turn(const std::atomic<std::uint32_t>& done, std::uint32_t turn) {
  for (int spins = 0; done.load(std::memory_order_acquire) != turn; ++spins) {
    if (spins > 64) std::this_thread::yield();
  }
}

struct ThreadedPassResult {
  std::uint64_t wall_ns = 0;  // from the start barrier to the last thread's end
  LatencyHistogram alloc_ns, free_ns;
};

// Replays `streams` on one thread each against `allocator` (already safe to call from several
// threads). With `timed`, every operation is timed alone (minus `overhead`) into the histograms.
template <class A>
ThreadedPassResult replay_threads(A& allocator, const std::vector<ThreadOps>& streams, std::size_t slot_count,
                                  void** slots, Touch touch, bool timed, std::uint64_t overhead) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::atomic<std::uint32_t>> done(slot_count);
  for (auto& d : done) d.store(0, std::memory_order_relaxed);
  std::vector<LatencyHistogram> alloc_ns(streams.size()), free_ns(streams.size());
  std::barrier start(static_cast<std::ptrdiff_t>(streams.size() + 1));
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < streams.size(); ++t) {
    workers.emplace_back([&, t] {
      const ThreadOps& s = streams[t];
      start.arrive_and_wait();
      for (std::size_t i = 0; i < s.ops.size(); ++i) {
        const ReplayOp& op = s.ops[i];
        std::atomic<std::uint32_t>& slot_done = done[op.slot];
        wait_turn(slot_done, s.turns[i]);
        const Clock::time_point t0 = timed ? Clock::now() : Clock::time_point{};
        if (op.kind == ReplayOpKind::kAlloc) {
          void* p = allocator.allocate(op.size, op.alignment(), op.stream);
          slots[op.slot] = p;
          if (timed) {
            const auto ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
            alloc_ns[t].record(ns > overhead ? ns - overhead : 0);
          }
          if (p != nullptr && touch != Touch::kNone) {
            if (touch == Touch::kFirst) touch_block<Touch::kFirst>(p, op.size);
            else touch_block<Touch::kFull>(p, op.size);
          }
        } else if (void* p = slots[op.slot]; p != nullptr) {
          allocator.deallocate(p, op.size, op.alignment(), op.stream);
          if (timed) {
            const auto ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
            free_ns[t].record(ns > overhead ? ns - overhead : 0);
          }
        }
        slot_done.store(s.turns[i] + 1, std::memory_order_release);
      }
    });
  }
  const Clock::time_point t0 = Clock::now();
  start.arrive_and_wait();
  for (std::thread& w : workers) w.join();
  ThreadedPassResult out;
  out.wall_ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  for (std::size_t t = 0; t < streams.size(); ++t) {
    out.alloc_ns.merge(alloc_ns[t]);
    out.free_ns.merge(free_ns[t]);
  }
  return out;
}

}  // namespace tiermark
