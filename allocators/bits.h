// Power-of-two arithmetic shared by every allocator. All functions are constexpr and branch-light
// because they sit on allocation fast paths.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace tiermark {

constexpr bool is_power_of_two(std::uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Rounds `x` up to a multiple of `alignment` (a power of two).
constexpr std::uint64_t align_up(std::uint64_t x, std::uint64_t alignment) {
  return (x + alignment - 1) & ~(alignment - 1);
}

// Rounds `x` down to a multiple of `alignment` (a power of two).
constexpr std::uint64_t align_down(std::uint64_t x, std::uint64_t alignment) { return x & ~(alignment - 1); }

// floor(log2(x)) for x > 0.
constexpr unsigned log2_floor(std::uint64_t x) { return 63u - static_cast<unsigned>(std::countl_zero(x)); }

// ceil(log2(x)) for x > 0: the order of the smallest power of two >= x.
constexpr unsigned log2_ceil(std::uint64_t x) { return x <= 1 ? 0u : log2_floor(x - 1) + 1; }

// The largest power of two dividing x (x > 0): the natural alignment of an offset or a block size.
constexpr std::uint64_t lowest_set_bit(std::uint64_t x) { return x & (~x + 1); }

inline std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }
inline void* pointer_at(std::uintptr_t address) { return reinterpret_cast<void*>(address); }

}  // namespace tiermark
