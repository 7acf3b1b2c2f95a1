// AllocatorRunner: replays a FlatTrace against one allocator configuration, each pass on a fresh
// allocator over a fresh upstream, in three kinds of pass:
//
//  * throughput  the ops and nothing else in the timed loop (no clock, no stats, no virtual call: the
//                loop is instantiated for the allocator's concrete type), timed as a whole;
//  * latency     every operation timed alone with steady_clock, the measured cost of an empty timed
//                region subtracted, into log-linear histograms for alloc and free;
//  * memory      stats() sampled every `sample_every` ops, just after the trace's peak op and at the
//                counters that need it; then a second replay up to the peak op followed by trim()
//                measures what could not go back upstream at the peak.
//
// Blocks a trace never frees are released after each pass, outside any timing. A failed allocation
// is counted by the allocator and its free is skipped. Allocators run single-threaded here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "allocators/allocator_stats.h"
#include "allocators/offline_planner.h"
#include "allocators/upstream.h"
#include "replay/flat_trace.h"
#include "replay/latency_histogram.h"

namespace tiermark {

// What the replay writes into each block it gets (host memory only).
enum class Touch : std::uint8_t {
  kNone,   // nothing: only the allocator's own work is measured
  kFirst,  // one byte in each 4 KiB page of the block: every page faulted in (first touch)
  kFull,   // every byte (memset), as a kernel writing its output would
};
Touch parse_touch(std::string_view name);  // throws InputError; names: none, first, full
std::string_view touch_name(Touch touch);

struct ReplaySettings {
  std::string upstream_spec = "simulated";  // a fresh upstream of this spec for every pass
  Touch touch = Touch::kNone;
  std::uint64_t sample_every = 0;  // 0: about 1000 samples over the trace
  // Replay threads for the throughput and latency passes (threaded_replay.h); the memory pass
  // always replays in trace order on one thread, so its numbers do not depend on scheduling.
  std::size_t threads = 1;
  // The last-level cache's size (from hwloc), for the locality pass's cache model; 0: no locality pass.
  std::uint64_t cache_bytes = 0;
};

struct RepetitionResult {
  double seconds = 0;          // the throughput pass's timed loop
  double ops_per_second = 0;   // (allocs + frees) / seconds
  AllocatorStats stats;        // after the whole trace, before leftovers are released
  UpstreamStats upstream;
  bool latency_measured = false;
  LatencyHistogram alloc_ns;  // latency pass (only when asked for)
  LatencyHistogram free_ns;
  // Metrics only some runners can measure, written beside the others under these names: a system.*
  // row's peak_rss_bytes, page_faults and rss_before_pass_bytes (docs/metrics.md).
  std::vector<std::pair<std::string, double>> extra_metrics;
};

struct MemorySample {
  std::uint64_t op_index = 0;  // stats taken just after ops[op_index]
  std::uint64_t requested_bytes = 0;
  std::uint64_t allocated_bytes = 0;
  std::uint64_t reserved_bytes = 0;
  double external_fragmentation = 0;
};

struct MemoryObservation {
  std::vector<MemorySample> timeline;
  AllocatorStats at_peak;  // just after the trace's peak op
  double max_external_fragmentation = 0;
  std::uint64_t max_external_fragmentation_op = 0;
  // Free bytes still held after trim() at the peak op: memory the allocator cannot give back.
  std::uint64_t unreturnable_bytes_at_peak = 0;
  bool reserved_known = true;
  // llm-serve counters (see kv_utilisation in docs/metrics.md), time-weighted by sim.step_ns:
  // the sums of kv.token_bytes x dt, kv.committed_bytes x dt and (reserved - non-KV requested) x dt.
  double kv_token_time = 0, kv_committed_time = 0, kv_reserved_time = 0;
  bool kv_counters = false;
};

// A pass that could not run to its end for a reason outside the allocator (a system.* row's child
// process crashed or exited non-zero): the replay marks that row failed, with the message as its
// note, and goes on with the others.
class PassFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The locality pass (with --memory host --touch full): each block is written once, whole, right
// after it is handed out, the write timed alone; a page-LRU model of the last-level cache
// (page_lru.h) says how many of those bytes were still cached from earlier use. A block is "hot" when
// most of its bytes were.
struct LocalityObservation {
  std::uint64_t cache_bytes = 0;     // the modelled cache
  std::uint64_t touched_bytes = 0;   // every byte of every block handed out
  std::uint64_t resident_bytes = 0;  // of those, in pages the model still held
  double touch_seconds = 0;          // sum of the timed writes, timer overhead subtracted
  std::uint64_t hot_bytes = 0, cold_bytes = 0;  // bytes of blocks mostly resident / mostly not
  double hot_seconds = 0, cold_seconds = 0;
};

class AllocatorRunner {
 public:
  virtual ~AllocatorRunner() = default;
  // The allocator's kind (`caching.pytorch`) and canonical configuration with every option.
  virtual std::string_view name() const = 0;
  virtual const std::string& config() const = 0;
  // Both may throw PassFailure.
  virtual RepetitionResult repetition(bool latency) = 0;
  virtual MemoryObservation observe_memory() = 0;
  // The locality pass; nullopt unless touch is full, cache_bytes is set and memory is touchable.
  virtual std::optional<LocalityObservation> observe_locality() { return std::nullopt; }
  // Facts recorded in the run's JSON besides name and config, replacing the run's own value for the
  // same key (a system.* row: "memory": "host", "library": the preloaded file, "malloc": its name).
  virtual std::vector<std::pair<std::string, std::string>> facts() const { return {}; }
};

// A runner for allocator `spec` (`buddy:min_block=256`) on `trace`. Builds one allocator at once so
// that a bad configuration, or one that cannot run on this upstream, throws InputError here and not
// in the middle of a run. The trace must outlive the runner.
std::unique_ptr<AllocatorRunner> make_runner(std::string_view spec, const FlatTrace& trace, const ReplaySettings& settings);
// A runner for the offline plan of `trace` (PlannedAllocator); `buffers` and `plan` must outlive it.
std::unique_ptr<AllocatorRunner> make_planner_runner(const FlatTrace& trace, const std::vector<PlannedBuffer>& buffers,
                                                     const MemoryPlan& plan, const ReplaySettings& settings);

// The median cost in ns of an empty timed region shaped like the latency pass's.
std::uint64_t timer_overhead_ns();

}  // namespace tiermark
