// LatencyHistogram: per-operation latencies in nanoseconds, log-linear (HdrHistogram's layout with
// 32 sub-buckets per power of two): values below 64 ns are exact, larger ones land in a bucket at
// most 1/32 (3.1%) of the value wide, and a percentile reports its bucket's midpoint, so it is within
// 1.6% of an exact nearest-rank percentile. O(1) record, fixed size (64 x 32 counters), mergeable.
// The exact maximum and count are kept besides the buckets.
#pragma once

#include <array>
#include <cstdint>

namespace tiermark {

class LatencyHistogram {
 public:
  void record(std::uint64_t ns) {
    ++counts_[bucket_of(ns)];
    ++count_;
    if (ns > max_) max_ = ns;
  }
  void merge(const LatencyHistogram& other);

  std::uint64_t count() const { return count_; }
  std::uint64_t max() const { return max_; }
  // Nearest-rank percentile, q in (0, 1]: the midpoint of the bucket holding the ceil(q * count)-th
  // smallest value (exact below 64 ns), never above max(). 0 when empty.
  double percentile(double q) const;

  // Bucket layout, exposed for tests and for the CDF the plots draw: bucket i holds [lower(i), upper(i)).
  static constexpr unsigned kSubBucketBits = 5;
  static constexpr std::size_t kBuckets = (64 - kSubBucketBits + 1) << kSubBucketBits;
  static std::size_t bucket_of(std::uint64_t ns);
  static std::uint64_t lower(std::size_t bucket);
  static std::uint64_t upper(std::size_t bucket);
  std::uint64_t bucket_count(std::size_t bucket) const { return counts_[bucket]; }
  // Adds `count` values that lie in `bucket` (< kBuckets), the largest of them `max`: with one call
  // per non-empty bucket and the histogram's max() as `max`, it rebuilds a histogram exactly from
  // its buckets (a system.* row's histograms come from a child process as JSON).
  void add_bucket_count(std::size_t bucket, std::uint64_t count, std::uint64_t max) {
    counts_[bucket] += count;
    count_ += count;
    if (count != 0 && max > max_) max_ = max;
  }

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace tiermark
