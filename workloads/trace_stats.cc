#include "workloads/trace_stats.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tiermark {

void TraceStats::begin(const TraceMetadata& trace_metadata, const TagTable& tags) {
  metadata = trace_metadata;
  tags_ = &tags;
}

void TraceStats::event(const TraceEvent& event) {
  switch (event.kind) {
    case EventKind::kAlloc: {
      ++allocs;
      allocated_bytes_total += event.size;
      live_.emplace(event.id, Live{event.size, events});
      live_bytes_ += event.size;
      if (live_bytes_ > peak_live_bytes) {
        peak_live_bytes = live_bytes_;
        peak_live_blocks = live_.size();
        peak_event = events;
      }
      ++distinct_sizes[event.size];
      const std::uint64_t lower = std::bit_floor(event.size);
      SizeBucket& bucket = buckets_[lower];
      bucket.lower = lower;
      ++bucket.allocs;
      bucket.bytes += event.size;
      if (event.tag >= tag_usage_.size()) tag_usage_.resize(event.tag + 1);
      ++tag_usage_[event.tag].allocs;
      tag_usage_[event.tag].bytes += event.size;
      thread_set_.insert(event.thread);
      stream_set_.insert(event.stream);
      break;
    }
    case EventKind::kFree: {
      ++frees;
      if (auto it = live_.find(event.id); it != live_.end()) {
        lifetimes_.push_back(events - it->second.alloc_event);
        live_bytes_ -= it->second.size;
        live_.erase(it);
      }
      thread_set_.insert(event.thread);
      break;
    }
    case EventKind::kPhase:
      ++phases;
      break;
    case EventKind::kCounter: {
      ++counters;
      auto [it, inserted] = counter_index_.try_emplace(event.tag, counter_list_.size());
      if (inserted) counter_list_.push_back({std::string(tags_->name(event.tag)), 0, event.size, 0, 0});
      CounterSummary& summary = counter_list_[it->second];
      ++summary.updates;
      summary.last = event.size;
      summary.max = std::max(summary.max, event.size);
      break;
    }
  }
  ++events;
}

void TraceStats::end() {
  end_live_blocks = live_.size();
  end_live_bytes = live_bytes_;
  threads = thread_set_.size();
  streams = stream_set_.size();
  size_histogram.clear();
  for (const auto& [lower, bucket] : buckets_) size_histogram.push_back(bucket);
  for (TagId tag = 0; tag < tag_usage_.size(); ++tag) tag_usage_[tag].tag = std::string(tags_->name(tag));
  tags_ = nullptr;
}

std::optional<std::uint64_t> TraceStats::lifetime_percentile(double p) const {
  if (lifetimes_.empty()) return std::nullopt;
  if (!lifetimes_sorted_) {
    std::sort(lifetimes_.begin(), lifetimes_.end());
    lifetimes_sorted_ = true;
  }
  const std::vector<std::uint64_t>& sorted = lifetimes_;
  // Nearest-rank percentile: the smallest value with at least p% of the values at or below it.
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const std::size_t index = rank <= 1 ? 0 : std::min(sorted.size() - 1, static_cast<std::size_t>(rank) - 1);
  return sorted[index];
}

std::vector<TagUsage> TraceStats::top_tags(std::size_t limit) const {
  std::vector<TagUsage> usage;
  for (const TagUsage& u : tag_usage_) {
    if (u.allocs != 0) usage.push_back(u);
  }
  std::sort(usage.begin(), usage.end(), [](const TagUsage& a, const TagUsage& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.tag < b.tag;
  });
  if (usage.size() > limit) usage.resize(limit);
  return usage;
}

}  // namespace tiermark
