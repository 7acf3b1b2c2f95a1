// Seven stress kernels modelled on mimalloc-bench's stress tests (github.com/daanx/mimalloc-bench,
// bench.sh's command lines) with their default parameters, adapted to the kernel contract of
// stress_kernel.h: the thread count is settings.threads, the originals' fixed round counts become
// the shared StressBudget (one unit per allocation; each original round structure and size mix is
// kept), every byte goes through StressTarget with its exact size, and every block is freed before
// a kernel returns. docs/stress-kernels.md gives each kernel's source file, parameters and mapping.
//
// Invariants every kernel keeps:
//  * A block is a Block record kept by the kernel (never inside the block, so a non-touchable
//    target's addresses are never dereferenced); `owner` is the serial of the OS thread that made
//    it, and a free by any other serial is a cross-thread free.
//  * With verify and a touchable target a block holds fill_block(id) from its allocation to its
//    free; kernels whose point is writing to their objects write the pattern's own bytes, so the
//    cache-line traffic is the original's and the pattern never breaks. Without verify they write
//    what the original writes. With a non-touchable target nothing is written or read.
//  * Setup allocations the originals make before their timed phase (larson's warm-up,
//    cache-scratch's handed-out objects) are counted in `allocs` but not charged to the budget,
//    which starts when the timed phase does.
//  * Threads are started, timed and sampled by run_stress_threads. larson and mstress, whose point
//    is threads that end with live blocks, run each lifetime or round of a slot on a fresh OS
//    thread started and joined inside that slot's thread.
#include "stress/peer_kernels.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "stress/block_pattern.h"
#include "stress/stress_run.h"

namespace tiermark {
namespace {

// What malloc guarantees on x86-64 Linux; the originals call malloc/new.
constexpr std::size_t kMallocAlign = alignof(std::max_align_t);

// splitmix64 (Steele, Lea and Flood 2014): the originals' generators (lran2, rand(), a splitmix
// finaliser) only supply uniform numbers, so one small generator stands in for all of them.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

struct Block {
  void* p = nullptr;
  std::uint64_t id = 0;
  std::uint32_t size = 0;
  std::uint32_t align = kMallocAlign;
  std::uint32_t owner = 0;
};

// State shared by one kernel run's threads.
class Shared {
 public:
  Shared(std::string_view kernel_name, StressTarget& stress_target, const StressSettings& run_settings)
      : kernel(kernel_name),
        target(stress_target),
        settings(run_settings),
        verify(run_settings.verify),
        touch(stress_target.touchable()) {}

  const std::string_view kernel;
  StressTarget& target;
  const StressSettings& settings;
  const bool verify;
  const bool touch;

  // The budget starts when the timed phase does (after any setup), so a time budget is all spent
  // on the kernel proper.
  void start_budget() { budget_.emplace(settings); }
  StressBudget& budget() { return *budget_; }

  std::uint32_t new_serial() { return next_serial_.fetch_add(1, std::memory_order_relaxed); }

  void note_corruption(const std::string& what) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (first_corruption_.empty()) first_corruption_ = std::string(kernel) + ": " + what;
  }

  void merge(const StressCounters& c) {
    const std::lock_guard<std::mutex> lock(mutex_);
    total_.allocs += c.allocs;
    total_.frees += c.frees;
    total_.failed_allocs += c.failed_allocs;
    total_.cross_thread_frees += c.cross_thread_frees;
    total_.verified_ops += c.verified_ops;
    total_.corruptions += c.corruptions;
    total_.bytes_allocated += c.bytes_allocated;
    total_.untimed_ops += c.untimed_ops;
  }

  StressResult result(double seconds) {
    const std::lock_guard<std::mutex> lock(mutex_);
    StressResult r;
    r.counters = total_;
    r.seconds = seconds;
    r.first_corruption = first_corruption_;
    return r;
  }

 private:
  std::optional<StressBudget> budget_;
  std::atomic<std::uint32_t> next_serial_{1};
  std::mutex mutex_;
  StressCounters total_;
  std::string first_corruption_;
};

// One OS thread's view: its serial, its counters (merged into Shared when it goes), and the
// verified allocate and release every kernel uses.
class Worker {
 public:
  // `untimed`: the worker of setup before, or clean-up after, the timed phase; its operations are
  // counted in untimed_ops too.
  explicit Worker(Shared& shared, bool untimed = false) : shared_(shared), serial_(shared.new_serial()), untimed_(untimed) {}
  ~Worker() {
    if (untimed_) counters_.untimed_ops += counters_.allocs + counters_.frees;
    shared_.merge(counters_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Allocates into `b` (which must be empty). False, with the failure counted, when the target
  // refuses; the kernel carries on without that block.
  bool allocate(Block& b, std::size_t size, std::size_t align = kMallocAlign) {
    void* p = shared_.target.allocate(size, align);
    if (p == nullptr) {
      ++counters_.failed_allocs;
      b = Block{};
      return false;
    }
    ++counters_.allocs;
    counters_.bytes_allocated += size;
    b.p = p;
    b.id = (std::uint64_t{serial_} << 40) | ++blocks_made_;
    b.size = static_cast<std::uint32_t>(size);
    b.align = static_cast<std::uint32_t>(align);
    b.owner = serial_;
    if (shared_.verify) {
      const std::string why = shared_.target.check_block(p, size);
      if (!why.empty()) {
        ++counters_.corruptions;
        shared_.note_corruption(why);
      }
      if (shared_.touch) fill_block(p, size, b.id);
    }
    return true;
  }

  // Frees `b` if it holds a block, checking its pattern first; leaves it empty.
  void release(Block& b) {
    if (b.p == nullptr) return;
    if (shared_.verify) {
      if (shared_.touch) {
        ++counters_.verified_ops;
        if (!check_block(b.p, b.size, b.id)) {
          ++counters_.corruptions;
          shared_.note_corruption("block " + std::to_string(b.id) + " of " + std::to_string(b.size) +
                                  " bytes no longer holds its pattern when freed");
        }
      }
      shared_.target.forget_block(b.p, b.size);
    }
    if (b.owner != serial_) ++counters_.cross_thread_frees;
    shared_.target.deallocate(b.p, b.size, b.align);
    ++counters_.frees;
    b = Block{};
  }

  // Kernel-specific content checks (mstress's own) report here.
  void corruption(const std::string& what) {
    ++counters_.corruptions;
    shared_.note_corruption(what);
  }

  std::uint32_t serial() const { return serial_; }

 private:
  Shared& shared_;
  const std::uint32_t serial_;
  const bool untimed_;
  std::uint64_t blocks_made_ = 0;
  StressCounters counters_;
};

// The pattern's own bytes of a small block, for kernels that keep writing to their objects while
// verifying (see the file comment).
template <std::size_t N>
std::array<unsigned char, N> pattern_bytes(std::uint64_t id) {
  std::array<unsigned char, N> bytes{};
  fill_block(bytes.data(), N, id);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// larson: bench/larson/larson.cpp (Paul Larson's server simulation, from Hoard's suite), run by
// bench.sh as `larson 5 8 1000 5000 100 4141 $procs`: 5 s, sizes [8, 1000), 5000 blocks per
// thread, 100 rounds, seed 4141. The main thread allocates every thread's blocks, shuffles them
// and replaces 4x their number at random (warm-up); each worker then replaces a random block of
// its own array (free, allocate a random size, write two bytes) 100 x 5000 times and exits, and a
// fresh thread takes over the same array: every block the old thread made is freed by the new
// one. Here each of settings.threads slots runs such lifetimes one after another (a fresh OS
// thread each, so allocators see threads end with live blocks, which is larson's point) until the
// budget is spent.
namespace larson {
constexpr std::size_t kMinSize = 8;
constexpr std::size_t kMaxSize = 1000;  // exclusive: min + rand % (max - min)
constexpr std::size_t kBlocksPerThread = 5000;
constexpr std::uint64_t kRounds = 100;
constexpr std::uint64_t kSeed = 4141;

std::size_t draw_size(Rng& rng) { return kMinSize + rng.below(kMaxSize - kMinSize); }
}  // namespace larson

}  // namespace

StressResult run_larson(StressTarget& target, const StressSettings& settings) {
  using namespace larson;
  Shared shared("larson", target, settings);
  const int threads = std::max(settings.threads, 1);
  const std::size_t total = kBlocksPerThread * static_cast<std::size_t>(threads);
  std::vector<Block> blocks(total);
  Rng main_rng(settings.seed ^ kSeed);
  std::vector<std::uint64_t> seeds(threads);
  {
    Worker warm(shared, true);
    for (Block& b : blocks) warm.allocate(b, draw_size(main_rng));
    for (std::size_t i = total; i > 1; --i) std::swap(blocks[i - 1], blocks[main_rng.below(i)]);
    for (std::size_t i = 0; i < 4 * total; ++i) {
      Block& b = blocks[main_rng.below(total)];
      warm.release(b);
      warm.allocate(b, draw_size(main_rng));
    }
    for (auto& s : seeds) s = main_rng.next();
  }
  shared.start_budget();
  const double seconds = run_stress_threads(threads, settings, [&](int t) {
    Block* mine = blocks.data() + static_cast<std::size_t>(t) * kBlocksPerThread;
    Rng rng(seeds[t]);
    std::uint64_t local = 0;
    bool spent = false;
    while (!spent) {
      std::thread lifetime([&] {
        Worker w(shared);
        for (std::uint64_t op = 0; op < kRounds * kBlocksPerThread; ++op) {
          if (!shared.budget().take(local)) {
            spent = true;
            return;
          }
          Block& b = mine[rng.below(kBlocksPerThread)];
          w.release(b);
          if (w.allocate(b, draw_size(rng)) && shared.touch && !shared.verify) {
            volatile char* c = static_cast<char*>(b.p);  // larson's "write something"
            c[0] = 'a';
            c[1] = 'b';
          }
        }
      });
      lifetime.join();
    }
  });
  {
    Worker last(shared, true);
    for (Block& b : blocks) last.release(b);
  }
  return shared.result(seconds);
}

// ---------------------------------------------------------------------------------------------
// xmalloc-test: bench/xmalloc-test/xmalloc-test.c (Lever and Boreham, USENIX 2000), run by
// bench.sh as `xmalloc-test -w $procs -t 5 -s 64`: $procs producer and $procs consumer threads
// for 5 s, 64-byte objects. A producer allocates a batch record (8 + 4096 pointers = 32776 bytes)
// and 4096 objects, writes the first min(size, 128) bytes of each, and pushes the batch on a
// shared LIFO list of at most 100 batches; a consumer pops a batch and frees its objects and the
// record. Here settings.threads is split: threads - threads/2 producers, threads/2 consumers (one
// thread alone produces a batch and consumes it itself). The batch list's bookkeeping lives in
// kernel records; the 32776-byte batch block is still allocated from the target (and, without
// verify, holds the object pointers as in the original). Batches left when the budget is spent are
// freed by the calling thread afterwards, as the original's main does.
namespace {
namespace xmalloc {
constexpr std::size_t kObjectSize = 64;
constexpr std::size_t kObjectsPerBatch = 4096;
constexpr std::size_t kBatchBytes = 8 + kObjectsPerBatch * sizeof(void*);
constexpr std::size_t kBatchLimit = 100;
constexpr std::size_t kWrittenPerObject = 128;

struct Batch {
  Block record;
  std::vector<Block> objects;
  std::size_t count = 0;
  Batch* next = nullptr;
};

class Queue {
 public:
  Batch* acquire_record() {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (pool_.empty()) {
      all_.push_back(std::make_unique<Batch>());
      all_.back()->objects.resize(kObjectsPerBatch);
      return all_.back().get();
    }
    Batch* b = pool_.back();
    pool_.pop_back();
    return b;
  }
  void recycle(Batch* b) {
    const std::lock_guard<std::mutex> lock(mutex_);
    pool_.push_back(b);
  }
  void push(Batch* b) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (count_ >= kBatchLimit && !done_) full_.wait_for(lock, std::chrono::milliseconds(1));
    b->next = head_;
    head_ = b;
    ++count_;
    empty_.notify_one();
  }
  // Waits for a batch; nullptr once the run is done.
  Batch* pop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (head_ == nullptr && !done_) empty_.wait_for(lock, std::chrono::milliseconds(1));
    if (done_) return nullptr;
    Batch* b = head_;
    head_ = b->next;
    --count_;
    full_.notify_one();
    return b;
  }
  Batch* pop_left() {
    const std::lock_guard<std::mutex> lock(mutex_);
    Batch* b = head_;
    if (b != nullptr) {
      head_ = b->next;
      --count_;
    }
    return b;
  }
  void finish() {
    const std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    empty_.notify_all();
    full_.notify_all();
  }
 private:
  std::mutex mutex_;
  std::condition_variable empty_, full_;
  Batch* head_ = nullptr;
  std::size_t count_ = 0;
  bool done_ = false;
  std::vector<std::unique_ptr<Batch>> all_;
  std::vector<Batch*> pool_;
};

// Fills one batch; false when the budget ran out (the batch may be partial, even empty).
bool produce(Shared& shared, Worker& w, Batch& b, std::uint64_t& local) {
  b.count = 0;
  b.record = Block{};
  if (!shared.budget().take(local)) return false;
  w.allocate(b.record, kBatchBytes);
  const bool write = shared.touch && !shared.verify;
  for (std::size_t i = 0; i < kObjectsPerBatch; ++i) {
    if (!shared.budget().take(local)) return false;
    Block& o = b.objects[b.count];
    if (!w.allocate(o, kObjectSize)) continue;
    if (write) {
      std::memset(o.p, static_cast<int>(i % 256), std::min(kObjectSize, kWrittenPerObject));
      if (b.record.p != nullptr) std::memcpy(static_cast<char*>(b.record.p) + 8 + 8 * b.count, &o.p, sizeof(void*));
    }
    ++b.count;
  }
  return true;
}

void consume(Worker& w, Batch& b) {
  for (std::size_t i = 0; i < b.count; ++i) w.release(b.objects[i]);
  w.release(b.record);
  b.count = 0;
}
}  // namespace xmalloc
}  // namespace

StressResult run_xmalloc_test(StressTarget& target, const StressSettings& settings) {
  using namespace xmalloc;
  Shared shared("xmalloc-test", target, settings);
  const int threads = std::max(settings.threads, 1);
  const int consumers = threads / 2;
  Queue queue;
  shared.start_budget();
  const double seconds = run_stress_threads(threads, settings, [&](int t) {
    Worker w(shared);
    std::uint64_t local = 0;
    if (threads == 1) {
      for (bool more = true; more;) {
        Batch* b = queue.acquire_record();
        more = produce(shared, w, *b, local);
        consume(w, *b);
        queue.recycle(b);
      }
      return;
    }
    if (t < threads - consumers) {  // producer
      for (bool more = true; more;) {
        Batch* b = queue.acquire_record();
        more = produce(shared, w, *b, local);
        queue.push(b);
      }
      queue.finish();
      return;
    }
    while (Batch* b = queue.pop()) {  // consumer
      consume(w, *b);
      queue.recycle(b);
    }
  });
  {
    Worker main_thread(shared, true);
    while (Batch* b = queue.pop_left()) {
      consume(main_thread, *b);
      queue.recycle(b);
    }
  }
  return shared.result(seconds);
}

// ---------------------------------------------------------------------------------------------
// cache-scratch and cache-thrash: bench/cache-scratch/cache-scratch.cpp and
// bench/cache-thrash/cache-thrash.cpp (Emery Berger's Hoard suite), run by bench.sh as
// `cache-scratch $procs 1000 1 2000000 $procs` and `cache-thrash $procs 1000 1 2000000 $procs`
// (and once with 1 thread): $procs threads, 1000 iterations each, 1-byte objects, 2000000
// repetitions shared among the threads. Each iteration allocates an object, writes every byte of
// it repetitions/threads times (reading each back through a volatile), and frees it. An allocator
// that hands different threads' objects out of one cache line makes them fight over it: actively
// in cache-thrash; passively in cache-scratch, where the main thread first allocates one object
// per thread (adjacent, likely one line) and each worker starts by freeing the one it was given,
// so an allocator that reuses freed memory for the freeing thread serves it from the shared line.
// Here the budget replaces the 1000 iterations (one unit per iteration).
namespace {
namespace cache {
constexpr std::size_t kObjectSize = 1;
constexpr std::uint64_t kRepetitions = 2000000;

void hammer(Shared& shared, Worker& w, std::uint64_t repetitions) {
  std::uint64_t local = 0;
  for (;;) {
    // An iteration that writes costs about a millisecond, so the clock is read on every take
    // (StressBudget reads it when `local` is a multiple of 64) rather than overshooting a time
    // budget by 63 iterations.
    if (shared.touch) local = 0;
    if (!shared.budget().take(local)) break;
    Block b;
    if (!w.allocate(b, kObjectSize)) continue;
    if (shared.touch) {
      // Verifying: write the pattern's own bytes, so the traffic is the same and the pattern holds.
      std::array<unsigned char, kObjectSize> value{};
      if (shared.verify) {
        value = pattern_bytes<kObjectSize>(b.id);
      } else {
        for (std::size_t k = 0; k < kObjectSize; ++k) value[k] = static_cast<unsigned char>(k);
      }
      volatile unsigned char* obj = static_cast<unsigned char*>(b.p);
      for (std::uint64_t j = 0; j < repetitions; ++j) {
        for (std::size_t k = 0; k < kObjectSize; ++k) {
          obj[k] = value[k];
          volatile unsigned char ch = obj[k];
          ch = static_cast<unsigned char>(ch + 1);
        }
      }
    }
    w.release(b);
  }
}

StressResult run(std::string_view name, bool scratch, StressTarget& target, const StressSettings& settings) {
  Shared shared(name, target, settings);
  const int threads = std::max(settings.threads, 1);
  const std::uint64_t repetitions = kRepetitions / static_cast<std::uint64_t>(threads);
  std::vector<Block> given(scratch ? threads : 0);
  {
    Worker main_thread(shared, true);
    for (Block& b : given) main_thread.allocate(b, kObjectSize);
  }
  shared.start_budget();
  const double seconds = run_stress_threads(threads, settings, [&](int t) {
    Worker w(shared);
    if (scratch) w.release(given[t]);
    hammer(shared, w, repetitions);
  });
  return shared.result(seconds);
}
}  // namespace cache
}  // namespace

StressResult run_cache_scratch(StressTarget& target, const StressSettings& settings) {
  return cache::run("cache-scratch", true, target, settings);
}

StressResult run_cache_thrash(StressTarget& target, const StressSettings& settings) {
  return cache::run("cache-thrash", false, target, settings);
}

// ---------------------------------------------------------------------------------------------
// glibc-thread: bench/glibc-bench/bench-malloc-thread.c (glibc's benchtests), run by bench.sh as
// `glibc-thread $procs`: $procs threads for 2 s (BENCHMARK_DURATION), each with its own working
// set of 1024 slots (WORKING_SET_SIZE). Sizes come from a table of 8000 (NUM_BLOCK_SIZES) drawn
// with an inverse-square density over [4, 32768], slots from a table of 4096 (NUM_OFFSETS); every
// thread walks the same two tables from the start, freeing the slot, allocating the next size
// into it and writing every byte. No block crosses threads. Here the budget replaces the 2 s.
namespace {
namespace glibc {
constexpr std::size_t kWorkingSet = 1024;
constexpr std::size_t kMinSize = 4;
constexpr std::size_t kMaxSize = 32768;
constexpr std::size_t kSizes = 8000;
constexpr std::size_t kOffsets = kWorkingSet * 4;

// Inverse-square density on [min, max]: inverting its CDF, 1/size is uniform on [1/max, 1/min].
std::uint32_t inverse_square_size(double r) {
  const double lo = 1.0 / static_cast<double>(kMinSize);
  const double hi = 1.0 / static_cast<double>(kMaxSize);
  return static_cast<std::uint32_t>(1.0 / ((hi - lo) * r + lo));
}
}  // namespace glibc
}  // namespace

StressResult run_glibc_thread(StressTarget& target, const StressSettings& settings) {
  using namespace glibc;
  Shared shared("glibc-thread", target, settings);
  const int threads = std::max(settings.threads, 1);
  std::vector<std::uint32_t> sizes(kSizes);
  std::vector<std::uint32_t> offsets(kOffsets);
  Rng rng(settings.seed ^ 88);  // RAND_SEED in the original
  for (auto& s : sizes) s = std::clamp<std::uint32_t>(inverse_square_size(rng.unit()), kMinSize, kMaxSize);
  for (auto& o : offsets) o = static_cast<std::uint32_t>(rng.below(kWorkingSet));
  shared.start_budget();
  const double seconds = run_stress_threads(threads, settings, [&](int) {
    Worker w(shared);
    std::vector<Block> set(kWorkingSet);
    std::size_t size_at = 0;
    std::size_t offset_at = 0;
    std::uint64_t local = 0;
    while (shared.budget().take(local)) {
      offset_at = offset_at + 1 == kOffsets ? 0 : offset_at + 1;
      size_at = size_at + 1 == kSizes ? 0 : size_at + 1;
      Block& b = set[offsets[offset_at]];
      w.release(b);
      const std::size_t size = sizes[size_at];
      if (w.allocate(b, size) && shared.touch && !shared.verify) {
        auto* bytes = static_cast<volatile char*>(b.p);
        for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i);
      }
    }
    for (Block& b : set) w.release(b);
  });
  return shared.result(seconds);
}

// ---------------------------------------------------------------------------------------------
// mstress: bench/mstress/mstress.c (mimalloc's test/test-stress.c), run by bench.sh as
// `mstress $procs 50 25`: THREADS = $procs, SCALE = 50, ITER = 25. In each of ITER rounds every
// thread is created afresh; thread t makes allocs = 100 * SCALE * (t % 8 + 1) short-lived
// allocations of 1 << (r % 5) words and allocs / 2 retained ones of 1 << (r % 7) words (2% of
// objects are enlarged: 2% of those x10000, 11% x1000, the rest x100; 40 words become 41), each
// step allocating one (a retained one when a coin says so or the short-lived quota is used up),
// then with 67% freeing a random earlier short-lived one, then with 26% swapping a random one with
// one of 1000 shared transfer slots (so objects migrate between threads and survive their thread).
// The originals' chance(p) is `r % 100 <= p`, hence 67% and 26% for 66 and 25. A thread frees what
// it holds when its round ends; after each round 51% of the transfer slots are freed, all of them
// after the last. Objects are initialised word by word and checked when freed. Here rounds run
// until the budget is spent (one unit per allocation; a thread whose take fails ends its round);
// each of settings.threads slots starts a fresh OS thread per round, and a std::barrier's
// completion step does the between-round transfer freeing.
namespace {
namespace mstress {
constexpr std::uint64_t kScale = 50;
constexpr std::size_t kTransfers = 1000;
constexpr std::size_t kStripes = 64;
constexpr std::uint64_t kItemShift = 5;
constexpr std::uint64_t kRetainedShift = kItemShift + 2;
constexpr std::uint64_t kCookie = 0xbf58476d1ce4e5b9ULL;  // the original's word cookie

bool chance(Rng& r, std::uint64_t perc) { return r.below(100) <= perc; }

std::size_t items_for(Rng& r, std::size_t items) {
  if (chance(r, 1)) {
    if (chance(r, 1)) {
      items *= 10000;
    } else if (chance(r, 10)) {
      items *= 1000;
    } else {
      items *= 100;
    }
  }
  if (items == 40) ++items;  // the original avoids the size pthreads uses for stacks
  return items;
}

class Transfers {
 public:
  Block exchange(std::size_t slot, const Block& in) {
    const std::lock_guard<std::mutex> lock(stripes_[slot % kStripes]);
    const Block out = slots_[slot];
    slots_[slot] = in;
    return out;
  }
  Block& slot(std::size_t i) { return slots_[i]; }  // only between rounds

 private:
  std::array<std::mutex, kStripes> stripes_;
  std::array<Block, kTransfers> slots_{};
};

void alloc_items(Shared& shared, Worker& w, Block& b, std::size_t items) {
  if (!w.allocate(b, items * sizeof(std::uint64_t)) || !shared.touch || shared.verify) return;
  auto* words = static_cast<std::uint64_t*>(b.p);
  for (std::size_t i = 0; i < items; ++i) words[i] = (items - i) ^ kCookie;
}

void free_items(Shared& shared, Worker& w, Block& b) {
  if (b.p != nullptr && shared.touch && !shared.verify) {
    const std::size_t items = b.size / sizeof(std::uint64_t);
    const auto* words = static_cast<const std::uint64_t*>(b.p);
    for (std::size_t i = 0; i < items; ++i) {
      if ((words[i] ^ kCookie) != items - i) {
        w.corruption("block of " + std::to_string(b.size) + " bytes lost its initialisation at word " + std::to_string(i));
        break;
      }
    }
  }
  w.release(b);
}
}  // namespace mstress
}  // namespace

StressResult run_mstress(StressTarget& target, const StressSettings& settings) {
  using namespace mstress;
  Shared shared("mstress", target, settings);
  const int threads = std::max(settings.threads, 1);
  Transfers transfers;
  Rng between(settings.seed ^ (43 * 43));
  bool last_round = false;
  auto end_of_round = [&]() noexcept {
    last_round = shared.budget().spent();
    Worker main_thread(shared);
    for (std::size_t i = 0; i < kTransfers; ++i) {
      if (chance(between, 50) || last_round) free_items(shared, main_thread, transfers.slot(i));
    }
  };
  std::barrier rounds(threads, end_of_round);
  shared.start_budget();
  const double seconds = run_stress_threads(threads, settings, [&](int t) {
    const std::uint64_t quota = 100 * kScale * static_cast<std::uint64_t>(t % 8 + 1);
    std::vector<Block> data;
    std::vector<Block> retained;
    data.reserve(quota);
    retained.reserve(quota / 2);
    Rng r(settings.seed ^ (static_cast<std::uint64_t>(t + 1) * 43));
    std::uint64_t local = 0;
    for (std::uint64_t round = 0;; ++round) {
      std::thread worker([&] {
        Worker w(shared);
        std::uint64_t allocs = quota;
        std::uint64_t retain = quota / 2;
        while (allocs > 0 || retain > 0) {
          if (!shared.budget().take(local)) break;
          if (retain == 0 || (chance(r, 50) && allocs > 0)) {
            --allocs;
            data.emplace_back();
            alloc_items(shared, w, data.back(), items_for(r, std::size_t{1} << r.below(kItemShift)));
          } else {
            --retain;
            retained.emplace_back();
            alloc_items(shared, w, retained.back(), items_for(r, std::size_t{1} << r.below(kRetainedShift)));
          }
          if (chance(r, 66) && !data.empty()) free_items(shared, w, data[r.below(data.size())]);
          if (chance(r, 25) && !data.empty()) {
            Block& mine = data[r.below(data.size())];
            mine = transfers.exchange(r.below(kTransfers), mine);
          }
        }
        for (Block& b : retained) free_items(shared, w, b);
        for (Block& b : data) free_items(shared, w, b);
        retained.clear();
        data.clear();
      });
      worker.join();
      rounds.arrive_and_wait();
      if (last_round) break;
    }
  });
  return shared.result(seconds);
}

// ---------------------------------------------------------------------------------------------
// rptest: bench/rptest/rptest.c (Mattias Jansson's rpmalloc benchmark), run by bench.sh as
// `rptest $procs 0 1 2 500 1000 100 8 16000`: $procs threads, random sizes (mode 0) with linear
// drop-off (size mode 1) in [8, 16000], a cross-thread batch every 2nd loop (cross rate 2), 500
// loops per iteration (2 iterations), 1000 live-pointer slots per thread, 100 operations per loop.
// A loop frees 0.8 x 100 x f% slots (f from a 257-entry table of 30..99) walking by a stride of 11,
// frees every batch other threads sent it, then fills 100 x a% slots (a from a 311-entry table of
// 30..99) walking by a stride of 7 (freeing an occupied slot first), with alignment cycling over
// default/8/16 below 4096 bytes, writing the size into the first word, one byte per page and the
// last byte. Every 2nd loop it also allocates a batch (a 32-byte header, a pointer array and as
// many blocks as it just allocated) and sends it to the next thread round-robin. At the end of an
// iteration it frees all its slots. Strides 7 and 11 are the first primes from 7 that do not
// divide 1000, as the original picks them. The original's fixed tables of random numbers are
// replaced by tables of the same length and range drawn from settings.seed. Here the budget
// replaces the 2 x 500 loops; once it is spent no more batches are sent and every thread drains
// its inbox until all have stopped sending.
namespace {
namespace rptest {
constexpr std::size_t kMinSize = 8;
constexpr std::size_t kMaxSize = 16000;
constexpr std::uint64_t kCrossRate = 2;
constexpr std::uint64_t kLoops = 500;
constexpr std::size_t kSlots = 1000;
constexpr double kOpCount = 100;
constexpr std::size_t kAllocScatter = 7;
constexpr std::size_t kFreeScatter = 11;
constexpr std::size_t kRandomSizes = 2000;
constexpr std::size_t kAllocOpTable = 311;
constexpr std::size_t kFreeOpTable = 257;
constexpr std::size_t kHeaderBytes = 32;  // sizeof(thread_pointers) on x86-64
constexpr std::size_t kPage = 4096;

struct Batch {
  Block header;
  Block array;
  std::vector<Block> blocks;
  Batch* next = nullptr;
};

struct Tables {
  std::vector<std::uint32_t> sizes;
  std::vector<std::uint32_t> alloc_ops;
  std::vector<std::uint32_t> free_ops;

  explicit Tables(std::uint64_t seed) {
    Rng rng(seed);
    std::vector<double> even(kRandomSizes);
    const double range = static_cast<double>(kMaxSize - kMinSize);
    for (double& e : even) e = std::round(range * static_cast<double>(rng.below(100000)) / 100000.0);
    sizes.resize(kRandomSizes);
    for (std::size_t i = 0; i < kRandomSizes; ++i) {  // the original's linear drop-off
      const double w0 = 1.0 - even[i] / range;
      const double w1 = 1.0 - even[(i + 1) % kRandomSizes] / range;
      const double dropped = even[(i + 2) % kRandomSizes] * std::fabs((w0 + w1) - 1.0);
      sizes[i] = static_cast<std::uint32_t>(kMinSize + static_cast<std::size_t>(dropped));
    }
    // The original's tables hold percentages in [30, 99]: a loop allocates op_count x a% and
    // frees 0.8 x op_count x f%.
    for (std::size_t i = 0; i < kAllocOpTable; ++i) {
      alloc_ops.push_back(static_cast<std::uint32_t>(kOpCount * static_cast<double>(30 + rng.below(70)) / 100.0));
    }
    for (std::size_t i = 0; i < kFreeOpTable; ++i) {
      free_ops.push_back(static_cast<std::uint32_t>(0.8 * kOpCount * static_cast<double>(30 + rng.below(70)) / 100.0));
    }
  }
};

class Pool {
 public:
  Batch* acquire() {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (free_.empty()) {
      all_.push_back(std::make_unique<Batch>());
      return all_.back().get();
    }
    Batch* b = free_.back();
    free_.pop_back();
    return b;
  }
  void recycle(Batch* b) {
    const std::lock_guard<std::mutex> lock(mutex_);
    b->blocks.clear();
    free_.push_back(b);
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Batch>> all_;
  std::vector<Batch*> free_;
};

void write_block(const Shared& shared, const Block& b) {
  if (!shared.touch || shared.verify || b.p == nullptr) return;
  auto* bytes = static_cast<char*>(b.p);
  const std::int32_t size = static_cast<std::int32_t>(b.size);
  std::memcpy(bytes, &size, sizeof(size));
  const std::size_t pages = (b.size - 1) / kPage;
  for (std::size_t page = 1; page < pages; ++page) bytes[page * kPage] = 1;
  bytes[b.size - 1] = 1;
}

std::size_t alignment_for(std::size_t size, std::size_t k) {
  static constexpr std::array<std::size_t, 3> kAlignments = {kMallocAlign, 8, 16};  // 0 is "default"
  return size < kPage ? kAlignments[k % 3] : kMallocAlign;
}

void free_batches(Worker& w, Pool& pool, Batch* b) {
  while (b != nullptr) {
    Batch* next = b->next;
    for (Block& blk : b->blocks) w.release(blk);
    w.release(b->array);
    w.release(b->header);
    pool.recycle(b);
    b = next;
  }
}
}  // namespace rptest
}  // namespace

StressResult run_rptest(StressTarget& target, const StressSettings& settings) {
  using namespace rptest;
  Shared shared("rptest", target, settings);
  const int threads = std::max(settings.threads, 1);
  const Tables tables(settings.seed ^ 0x7270746573ULL);  // salted ("rptes") so it differs from the other kernels' streams
  Pool pool;
  std::vector<std::atomic<Batch*>> inbox(threads);
  for (auto& in : inbox) in.store(nullptr);
  std::atomic<int> stopped_sending{0};
  shared.start_budget();
  const double seconds = run_stress_threads(threads, settings, [&](int t) {
    Worker w(shared);
    std::vector<Block> slots(kSlots);
    std::size_t alloc_idx = 0;
    std::size_t free_idx = 0;
    std::size_t cross_index = 0;
    std::uint64_t local = 0;
    bool more = true;
    for (std::size_t iter = 0; more; ++iter) {
      std::size_t size_index = (static_cast<std::size_t>(t + 1) * ((iter % 2 + 1) * 37)) % kRandomSizes;
      for (std::uint64_t loop = 0; loop < kLoops && more; ++loop) {
        free_batches(w, pool, inbox[t].exchange(nullptr, std::memory_order_acquire));
        const std::size_t frees = tables.free_ops[(iter + loop) % kFreeOpTable];
        const std::size_t allocs = tables.alloc_ops[(iter + loop) % kAllocOpTable];
        for (std::size_t i = 0; i < frees; ++i) {
          w.release(slots[free_idx]);
          free_idx = (free_idx + kFreeScatter) % kSlots;
        }
        for (std::size_t i = 0; i < allocs && more; ++i) {
          if (!shared.budget().take(local)) {
            more = false;
            break;
          }
          Block& b = slots[alloc_idx];
          w.release(b);
          const std::size_t size = tables.sizes[(size_index + 2) % kRandomSizes];
          w.allocate(b, size, alignment_for(size, size_index + i));
          write_block(shared, b);
          alloc_idx = (alloc_idx + kAllocScatter) % kSlots;
          size_index = (size_index + 1) % kRandomSizes;
        }
        if (!more || threads == 1 || loop % kCrossRate != 0) continue;
        Batch* batch = pool.acquire();
        more = shared.budget().take(local);
        if (more) w.allocate(batch->header, kHeaderBytes);
        more = more && shared.budget().take(local);
        if (more) w.allocate(batch->array, std::max<std::size_t>(allocs, 1) * sizeof(void*));
        write_block(shared, batch->header);
        for (std::size_t i = 0; i < allocs && more; ++i) {
          if (!shared.budget().take(local)) {
            more = false;
            break;
          }
          Block blk;
          const std::size_t size = tables.sizes[(size_index + 2) % kRandomSizes];
          if (w.allocate(blk, size, alignment_for(size, size_index + i))) {
            write_block(shared, blk);
            if (shared.touch && !shared.verify && batch->array.p != nullptr) {
              std::memcpy(static_cast<char*>(batch->array.p) + i * sizeof(void*), &blk.p, sizeof(void*));
            }
            batch->blocks.push_back(blk);
          }
          size_index = (size_index + 1) % kRandomSizes;
        }
        cross_index = (cross_index + 1) % static_cast<std::size_t>(threads);
        if (cross_index == static_cast<std::size_t>(t)) cross_index = (cross_index + 1) % static_cast<std::size_t>(threads);
        std::atomic<Batch*>& to = inbox[cross_index];
        batch->next = to.load(std::memory_order_relaxed);
        while (!to.compare_exchange_weak(batch->next, batch, std::memory_order_release, std::memory_order_relaxed)) {
        }
      }
      if (more) {  // end of an iteration: free every slot
        for (Block& b : slots) w.release(b);
      }
    }
    stopped_sending.fetch_add(1, std::memory_order_acq_rel);
    while (stopped_sending.load(std::memory_order_acquire) != threads) {
      free_batches(w, pool, inbox[t].exchange(nullptr, std::memory_order_acquire));
      std::this_thread::yield();
    }
    free_batches(w, pool, inbox[t].exchange(nullptr, std::memory_order_acquire));
    for (Block& b : slots) w.release(b);
  });
  return shared.result(seconds);
}

}  // namespace tiermark
