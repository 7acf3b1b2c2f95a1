// AllocatorStats: what every allocator reports, with the metric names of shared/REFERENCE.md
// section 6, and StatsRecorder, the one place that keeps them up to date on the hot path.
//
//   requested bytes  sum of sizes asked for and still live (its peak is the lower bound on memory)
//   allocated bytes  sum of block sizes handed out, after the allocator's rounding
//   reserved bytes   memory the allocator holds from its upstream
//   free bytes       reserved - allocated: memory held but not handed out
//   largest free     the largest single request size the allocator could serve without new upstream memory
// Invariants: requested <= allocated <= reserved (when reserved is known); every peak >= its current.
#pragma once

#include <algorithm>
#include <cstdint>

namespace tiermark {

struct Gauge {
  std::uint64_t current = 0;
  std::uint64_t peak = 0;

  void add(std::uint64_t bytes) {
    current += bytes;
    peak = std::max(peak, current);
  }
  void subtract(std::uint64_t bytes) { current -= bytes; }
};

// X-macros: the single list of stat names, used by the JSON writer, `tiermark list` and the tests.
#define TIERMARK_ALLOCATOR_GAUGES(X) \
  X(requested_bytes)                 \
  X(allocated_bytes)                 \
  X(reserved_bytes)
#define TIERMARK_ALLOCATOR_COUNTERS(X) \
  X(allocs)                            \
  X(frees)                             \
  X(upstream_allocs)                   \
  X(upstream_frees)                    \
  X(failed_requests)                   \
  X(free_bytes)                        \
  X(largest_free_block)

struct AllocatorStats {
#define TIERMARK_DECLARE_GAUGE(name) Gauge name;
  TIERMARK_ALLOCATOR_GAUGES(TIERMARK_DECLARE_GAUGE)
#undef TIERMARK_DECLARE_GAUGE
#define TIERMARK_DECLARE_COUNTER(name) std::uint64_t name = 0;
  TIERMARK_ALLOCATOR_COUNTERS(TIERMARK_DECLARE_COUNTER)
#undef TIERMARK_DECLARE_COUNTER
  // False when the allocator cannot see its reserved memory (the process's malloc): reserved_bytes,
  // free_bytes and largest_free_block are then zero and mean "unknown", not "none".
  bool reserved_known = true;

  // (free - largest free block) / free, 0 when nothing is free (REFERENCE section 6).
  double external_fragmentation() const {
    return free_bytes == 0 ? 0.0
                           : static_cast<double>(free_bytes - std::min(free_bytes, largest_free_block)) /
                                 static_cast<double>(free_bytes);
  }
};

// Inline bookkeeping for the allocators: a handful of adds and two max() per operation.
class StatsRecorder {
 public:
  void on_allocate(std::uint64_t requested, std::uint64_t allocated) {
    ++stats_.allocs;
    stats_.requested_bytes.add(requested);
    stats_.allocated_bytes.add(allocated);
  }
  void on_deallocate(std::uint64_t requested, std::uint64_t allocated) {
    ++stats_.frees;
    stats_.requested_bytes.subtract(requested);
    stats_.allocated_bytes.subtract(allocated);
  }
  void on_failure() { ++stats_.failed_requests; }
  void on_reserve(std::uint64_t bytes) {
    ++stats_.upstream_allocs;
    stats_.reserved_bytes.add(bytes);
  }
  void on_release(std::uint64_t bytes) {
    ++stats_.upstream_frees;
    stats_.reserved_bytes.subtract(bytes);
  }

  // The counters so far, completed with what only the allocator knows.
  AllocatorStats snapshot(std::uint64_t largest_free_block, bool reserved_known = true) const {
    AllocatorStats out = stats_;
    out.reserved_known = reserved_known;
    if (reserved_known) {
      out.free_bytes = out.reserved_bytes.current - std::min(out.reserved_bytes.current, out.allocated_bytes.current);
      out.largest_free_block = largest_free_block;
    }
    return out;
  }
  const AllocatorStats& raw() const { return stats_; }

 private:
  AllocatorStats stats_;
};

}  // namespace tiermark
