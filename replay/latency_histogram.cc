#include "replay/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tiermark {

// Group g = 0 covers [0, 64) one nanosecond per bucket (64 buckets: two groups' worth); group g >= 1
// covers [2^(g+5), 2^(g+6)) in 32 equal steps of 2^(g+0).
std::size_t LatencyHistogram::bucket_of(std::uint64_t ns) {
  constexpr std::uint64_t kLinear = std::uint64_t{2} << kSubBucketBits;  // 64
  if (ns < kLinear) return static_cast<std::size_t>(ns);
  const unsigned msb = 63u - static_cast<unsigned>(std::countl_zero(ns));  // >= 6
  const unsigned shift = msb - kSubBucketBits;                              // >= 1
  const std::uint64_t sub = (ns >> shift) - (std::uint64_t{1} << kSubBucketBits);  // [0, 32)
  return static_cast<std::size_t>(kLinear + (std::size_t{shift} - 1) * (std::size_t{1} << kSubBucketBits) + sub);
}

std::uint64_t LatencyHistogram::lower(std::size_t bucket) {
  constexpr std::size_t kLinear = std::size_t{2} << kSubBucketBits;
  if (bucket < kLinear) return bucket;
  const std::size_t shift = (bucket - kLinear) / (std::size_t{1} << kSubBucketBits) + 1;
  const std::size_t sub = (bucket - kLinear) % (std::size_t{1} << kSubBucketBits);
  return ((std::uint64_t{1} << kSubBucketBits) + sub) << shift;
}

std::uint64_t LatencyHistogram::upper(std::size_t bucket) {
  constexpr std::size_t kLinear = std::size_t{2} << kSubBucketBits;
  if (bucket < kLinear) return bucket + 1;
  const std::size_t shift = (bucket - kLinear) / (std::size_t{1} << kSubBucketBits) + 1;
  // The last bucket's upper bound would be 2^64: saturate.
  const std::uint64_t width = std::uint64_t{1} << shift;
  const std::uint64_t lo = lower(bucket);
  return lo > UINT64_MAX - width ? UINT64_MAX : lo + width;
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

double LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return 0;
  const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const std::uint64_t lo = lower(i), hi = upper(i);
      const double mid = hi - lo == 1 ? static_cast<double>(lo) : (static_cast<double>(lo) + static_cast<double>(hi - 1)) / 2;
      return std::min(mid, static_cast<double>(max_));
    }
  }
  return static_cast<double>(max_);
}

}  // namespace tiermark
