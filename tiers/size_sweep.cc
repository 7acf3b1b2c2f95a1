#include "tiers/size_sweep.h"

#include <algorithm>
#include <cmath>

namespace tiermark {

std::uint64_t round_to_granule(double bytes) {
  const double granules = std::round(bytes / double(kSweepGranuleBytes));
  return std::max<std::uint64_t>(1, std::uint64_t(granules)) * kSweepGranuleBytes;
}

std::vector<std::uint64_t> size_sweep(const std::vector<std::uint64_t>& capacities, std::uint64_t min_bytes,
                                      std::uint64_t max_bytes, int points_per_octave) {
  const std::uint64_t low = std::max<std::uint64_t>(
      kSweepGranuleBytes, (min_bytes + kSweepGranuleBytes - 1) / kSweepGranuleBytes * kSweepGranuleBytes);
  const std::uint64_t high = max_bytes / kSweepGranuleBytes * kSweepGranuleBytes;
  std::vector<std::uint64_t> sizes;
  if (high < low) return sizes;
  sizes.push_back(low);
  sizes.push_back(high);
  if (points_per_octave > 0) {
    for (int step = 1;; ++step) {
      const double bytes = double(low) * std::exp2(double(step) / points_per_octave);
      if (bytes >= double(high)) break;
      sizes.push_back(round_to_granule(bytes));
    }
  }
  for (const std::uint64_t capacity : capacities) {
    for (const double fraction : kCapacityFractions) {
      const std::uint64_t bytes = round_to_granule(double(capacity) * fraction);
      if (bytes >= low && bytes <= high) sizes.push_back(bytes);
    }
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

}  // namespace tiermark
