// Synthetic virtual ranges: address space an allocator on a simulated device reserves for itself and
// never dereferences, the model of cuMemAddressReserve. Blocks handed out from such a range are plain
// numbers; physical memory (upstream blocks) is mapped under them only in the allocator's own tables.
// Used by caching.pytorch's expandable segments and by caching.vmm.
//
// Invariants: ranges are carved upwards from kSyntheticRangeBase at 1 GiB-aligned bases with a 1 GiB
// gap between neighbours and end at or below kSyntheticRangeEnd, which lies under the simulated device's
// own addresses (SimulatedUpstream::kDeviceBase = 0x5100'0000'0000'0000), so a synthetic block never
// overlaps an upstream block or a block of another range of the same allocator.
#pragma once

#include <cstdint>

#include "allocators/bits.h"

namespace tiermark {

inline constexpr std::uintptr_t kSyntheticRangeBase = 0x2000'0000'0000'0000;
inline constexpr std::uintptr_t kSyntheticRangeEnd = 0x5000'0000'0000'0000;
// This project's choice for the range when the upstream has no capacity (PyTorch uses the device's).
inline constexpr std::uint64_t kSyntheticRangeWithoutCapacity = std::uint64_t{1} << 40;  // 1 TiB
inline constexpr std::uint64_t kSyntheticRangeAlignment = std::uint64_t{1} << 30;

// PyTorch's find_expandable_block reserves totalGlobalMem + totalGlobalMem / 8 per (stream, pool).
constexpr std::uint64_t synthetic_range_bytes(std::uint64_t capacity) noexcept {
  return capacity == 0 ? kSyntheticRangeWithoutCapacity : capacity + capacity / 8;
}

// True when ranges of `bytes` fit the synthetic space often enough for `ranges` (stream, pool) pairs.
constexpr bool synthetic_space_holds(std::uint64_t bytes, std::uint64_t ranges) noexcept {
  return bytes <= (kSyntheticRangeEnd - kSyntheticRangeBase) / ranges;
}

// Hands out range bases in address order; 0 when the synthetic space is used up.
class SyntheticRangeCursor {
 public:
  std::uintptr_t take(std::uint64_t bytes) noexcept {
    if (bytes > kSyntheticRangeEnd - next_) return 0;
    const std::uintptr_t base = next_;
    const std::uint64_t step = align_up(bytes, kSyntheticRangeAlignment) + kSyntheticRangeAlignment;
    next_ = step > kSyntheticRangeEnd - next_ ? kSyntheticRangeEnd : next_ + step;
    return base;
  }

 private:
  std::uintptr_t next_ = kSyntheticRangeBase;
};

}  // namespace tiermark
