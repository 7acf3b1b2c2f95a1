// TraceStats: what a trace contains, computed in one pass as a sink: event counts, distinct sizes,
// peak live bytes, block lifetimes (in events between alloc and free), a power-of-two size
// histogram, bytes per tag, counters and the trace's own metadata. It is the data behind
// `tiermark trace stats`; the report (text or JSON) is the harness's business.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "workloads/trace_stream.h"

namespace tiermark {

struct TagUsage {
  std::string tag;
  std::uint64_t allocs = 0;
  std::uint64_t bytes = 0;  // sum of sizes allocated under the tag
};

struct CounterSummary {
  std::string name;
  std::uint64_t updates = 0;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::uint64_t max = 0;
};

struct SizeBucket {
  std::uint64_t lower = 0;  // [lower, 2*lower): power-of-two buckets
  std::uint64_t allocs = 0;
  std::uint64_t bytes = 0;
};

class TraceStats final : public TraceSink {
 public:
  void begin(const TraceMetadata& metadata, const TagTable& tags) override;
  void event(const TraceEvent& event) override;
  void end() override;

  std::uint64_t events = 0, allocs = 0, frees = 0, phases = 0, counters = 0;
  std::uint64_t allocated_bytes_total = 0;  // sum of all alloc sizes
  std::uint64_t peak_live_bytes = 0;
  std::uint64_t peak_live_blocks = 0;
  std::uint64_t peak_event = 0;  // index (from 0) of the event after which live bytes peaked
  std::uint64_t end_live_blocks = 0;
  std::uint64_t end_live_bytes = 0;
  std::uint64_t threads = 0, streams = 0;
  std::map<std::uint64_t, std::uint64_t> distinct_sizes;  // size -> allocs
  std::vector<SizeBucket> size_histogram;                 // ascending, non-empty buckets only
  TraceMetadata metadata;

  // Lifetime of freed blocks in events (free index - alloc index); nullopt when nothing was freed.
  std::optional<std::uint64_t> lifetime_percentile(double p) const;
  std::uint64_t freed_blocks() const { return lifetimes_.size(); }
  // Tags by bytes allocated, largest first; at most `limit`.
  std::vector<TagUsage> top_tags(std::size_t limit) const;
  const std::vector<CounterSummary>& counter_summaries() const { return counter_list_; }

 private:
  struct Live {
    std::uint64_t size;
    std::uint64_t alloc_event;
  };
  const TagTable* tags_ = nullptr;
  std::unordered_map<SlotId, Live> live_;
  std::uint64_t live_bytes_ = 0;
  mutable std::vector<std::uint64_t> lifetimes_;  // sorted lazily by lifetime_percentile()
  mutable bool lifetimes_sorted_ = false;
  std::vector<TagUsage> tag_usage_;           // by TagId
  std::vector<CounterSummary> counter_list_;  // in first-update order
  std::unordered_map<TagId, std::size_t> counter_index_;
  std::map<std::uint64_t, SizeBucket> buckets_;
  std::unordered_set<ThreadId> thread_set_;
  std::unordered_set<StreamId> stream_set_;
};

}  // namespace tiermark
