// The working-set sizes of a tier sweep: log-spaced points from `min_bytes` to `max_bytes` (pmbw's
// and lat_mem_rd's sweeps), made denser around each cache capacity with the points 1/4, 1/2, 3/4, 1,
// 1.5 and 2 times that capacity, where a tier's behaviour changes.
// Invariants: sorted, no duplicates, every size a multiple of 4 KiB within [min_bytes, max_bytes]
// (after rounding min up and max down to 4 KiB), both ends included.
#pragma once

#include <cstdint>
#include <vector>

namespace tiermark {

inline constexpr std::uint64_t kSweepGranuleBytes = 4096;
inline constexpr double kCapacityFractions[] = {0.25, 0.5, 0.75, 1.0, 1.5, 2.0};

std::vector<std::uint64_t> size_sweep(const std::vector<std::uint64_t>& capacities, std::uint64_t min_bytes,
                                      std::uint64_t max_bytes, int points_per_octave);

// `bytes` rounded to the nearest multiple of kSweepGranuleBytes, at least one granule.
std::uint64_t round_to_granule(double bytes);

}  // namespace tiermark
