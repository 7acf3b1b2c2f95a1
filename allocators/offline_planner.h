// Offline memory planning: with every buffer's size and lifetime known in advance, assign each an
// offset in one arena so that buffers alive at the same time never share bytes. This is the
// "practical oracle" every online allocator is compared with (shared/REFERENCE.md section 4).
//
//  plan_greedy_by_size  greedy-by-size with best fit (Pisarchyk and Lee 2020, "Efficient Memory
//      Management for Deep Neural Net Inference"; TFLite GreedyBySizeAssignment; XLA
//      GlobalDecreasingSizeBestFitHeap). Also computes the lower bound: the peak of live requested
//      bytes over time (XLA NoFragmentationStatsHeap).
//  validate_plan        the independent check of a plan, used by tests and by PlannedAllocator.
//  PlannedAllocator     replays a plan: the i-th allocate() gets base + offsets[i].
//
// Lifetimes are closed intervals of event indices: buffers i and j conflict iff
// first_use_i <= last_use_j and first_use_j <= last_use_i. A buffer never freed lives to the end of
// the trace (the caller sets last_use to the last event index, or to UINT64_MAX).
// Invariants of a plan from plan_greedy_by_size (validate_plan checks the first three):
//   conflicting buffers get disjoint [offset, offset + size); offsets[i] % alignment_i == 0;
//   offset + size <= arena_bytes; lower_bound_bytes <= arena_bytes <= sum of (size + alignment - 1)
//   (each buffer goes in a gap or just above the highest conflicting one, padded by < its alignment;
//   with alignment 1 everywhere, arena <= the sum of sizes: no worse than no reuse at all).
// This layer takes plain lifetimes; the replay issue builds them from traces (the layer rule keeps
// workloads/ out of allocators/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/bits.h"

namespace tiermark {

struct PlannedBuffer {
  std::uint64_t size;       // > 0, as allocate() requires
  std::uint64_t alignment;  // a power of two
  std::uint64_t first_use;  // event index of the allocation
  std::uint64_t last_use;   // event index of the free (inclusive); >= first_use
};

struct MemoryPlan {
  std::vector<std::uint64_t> offsets;  // offsets[i] for buffers[i]
  std::uint64_t arena_bytes = 0;       // max over i of offsets[i] + size_i
  std::uint64_t lower_bound_bytes = 0; // max over time of live requested bytes
};

// Greedy-by-size with best fit. Buffers are placed in order of size, largest first (ties: earlier
// first_use, then lower index, so the plan is deterministic). Each goes into the smallest gap that
// fits between the already placed buffers whose lifetimes conflict with it (at the gap's lowest
// aligned offset; ties between equal gaps: the lower one), or, when no gap fits, directly above the
// highest of them. Throws InputError for a buffer with size 0, an alignment that is not a power of
// two, or last_use < first_use. O(n log n + sum over buffers of k log n), k = the number of placed
// buffers conflicting with it; O(n^2 log n) at worst (docs/planner.md has measured times).
MemoryPlan plan_greedy_by_size(std::span<const PlannedBuffer> buffers);

// max over time of the sum of sizes of live buffers: no placement can use less (REFERENCE section 4).
std::uint64_t lower_bound_bytes(std::span<const PlannedBuffer> buffers);

// "" when `plan` is valid for `buffers`, else a one-line description of the first problem found:
// offsets count, alignment, a buffer outside the arena, two conflicting buffers that overlap in
// memory, lower_bound_bytes above the arena. O(n log n) (a sweep over time), so it runs on 10^6 buffers.
std::string validate_plan(std::span<const PlannedBuffer> buffers, const MemoryPlan& plan);

// PlannedAllocator (`planner`): the plan as an allocator for a replay loop. It takes one upstream
// block of arena_bytes at construction and serves the i-th allocate() call with base + offsets[i].
// The i-th call is buffer i whether or not it matches, so one bad request does not shift all later
// ones; a request whose size differs from the plan's, whose alignment the planned address does not
// meet, beyond the plan's end, or after the arena could not be obtained, returns nullptr and is
// counted in failed_requests. deallocate() is bookkeeping only: the plan already knows when memory
// is reused.
//
// It is not in the registry (allocator_types.h): it needs a plan, not just options, so it does not
// meet AllocatorImpl's (Options, Upstream) constructor; the replay issue plans a trace and constructs
// it directly. Invariants: allocs + failed_requests <= planned buffers; requested == allocated (the
// plan rounds nothing; alignment padding lies in gaps the plan leaves); reserved = arena_bytes while
// the arena is held.
class PlannedAllocator final {
 public:
  static constexpr std::string_view kName = "planner";
  static constexpr std::string_view kDescription =
      "offline greedy-by-size plan (TFLite/XLA): one arena, the i-th request at its planned offset";

  // Throws InputError when validate_plan(buffers, plan) is not empty. Does not throw when the
  // upstream refuses the arena: every request then fails, as a capacity search needs.
  PlannedAllocator(const MemoryPlan& plan, std::span<const PlannedBuffer> buffers, Upstream& upstream);
  ~PlannedAllocator();
  PlannedAllocator(const PlannedAllocator&) = delete;
  PlannedAllocator& operator=(const PlannedAllocator&) = delete;

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    const std::size_t i = next_++;
    if (i >= slots_.size() || base_ == 0 || slots_[i].size != size) return fail();
    const std::uintptr_t address = base_ + slots_[i].offset;
    if ((address & (alignment - 1)) != 0) return fail();
    stats_.on_allocate(size, size);
    return pointer_at(address);
  }

  void deallocate(void* p, std::size_t size, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    // A pointer outside the arena is not ours (a caller bug); leaving the counts alone lets
    // check_invariants() expose it as live blocks that never go away.
    if (base_ == 0 || address_of(p) < base_ || address_of(p) - base_ >= arena_bytes_) return;
    stats_.on_deallocate(size, size);
  }

  // largest_free_block is the size of the next planned request (0 once the plan is used up): the
  // planner can serve nothing else, whatever gaps the arena has.
  AllocatorStats stats() const {
    const bool next_ok = base_ != 0 && next_ < slots_.size();
    return stats_.snapshot(next_ok ? slots_[next_].size : 0);
  }
  std::string check_invariants() const;
  // Gives the arena back once every planned request has been made and nothing is live: before that,
  // the plan still needs it.
  void trim();

  std::uint64_t arena_bytes() const { return arena_bytes_; }
  // The arena's base address (0 when the upstream refused it or trim() released it).
  std::uintptr_t base() const { return base_; }

 private:
  struct Slot {
    std::uint64_t offset;
    std::uint64_t size;
  };

  void* fail() noexcept {
    stats_.on_failure();
    return nullptr;
  }

  Upstream& upstream_;
  std::vector<Slot> slots_;
  std::uint64_t arena_bytes_;
  std::size_t base_alignment_;
  std::uintptr_t base_ = 0;
  std::size_t next_ = 0;  // index of the next allocate() call (may exceed slots_.size())
  StatsRecorder stats_;
};

}  // namespace tiermark
