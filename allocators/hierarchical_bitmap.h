// HierarchicalBitmap: a fixed-size bitmap with summary levels, so that the first set bit is found in
// O(levels) word reads (levels = ceil(log64(size)): 4 reads for the 2^21 order-0 blocks of a 1 GiB
// arena at 512 B) instead of a linear scan. The buddy allocator keeps one per arena and order as its
// free set; it lives entirely in host memory, never in the memory it describes.
//
// Layout: every level in one vector, level 0 (the bits themselves) first, then level 1, ..., up to a
// top level of exactly one word. Invariants: bit j of level l+1 is set iff word j of level l is
// non-zero; bits past the end of each level are zero. Set and clear touch a level above only when a
// word changes between zero and non-zero, so they cost one word write in the common case.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tiermark::detail {

class HierarchicalBitmap {
 public:
  // 64^11 = 2^66 > 2^64: enough levels for any 64-bit size.
  static constexpr unsigned kMaxLevels = 11;

  // `bits` > 0 bits, all clear. Allocates ~bits/63 words; may throw std::bad_alloc.
  explicit HierarchicalBitmap(std::uint64_t bits);

  std::uint64_t size() const noexcept { return bits_; }
  bool test(std::uint64_t i) const noexcept { return (words_[i >> 6] >> (i & 63)) & 1u; }
  bool any() const noexcept { return words_[offset_[levels_ - 1]] != 0; }

  void set(std::uint64_t i) noexcept {
    for (unsigned level = 0; level < levels_; ++level) {
      std::uint64_t& word = words_[offset_[level] + (i >> 6)];
      const std::uint64_t before = word;
      word = before | (std::uint64_t{1} << (i & 63));
      if (before != 0) return;  // the summary above already says "non-empty"
      i >>= 6;
    }
  }

  // Clears bit i; returns true when the whole bitmap has become empty.
  bool clear(std::uint64_t i) noexcept {
    for (unsigned level = 0; level < levels_; ++level) {
      std::uint64_t& word = words_[offset_[level] + (i >> 6)];
      word &= ~(std::uint64_t{1} << (i & 63));
      if (word != 0) return false;  // the summary above still says "non-empty"
      i >>= 6;
    }
    return true;
  }

  // The lowest set bit; requires any().
  std::uint64_t find_first() const noexcept {
    std::uint64_t i = 0;
    for (unsigned level = levels_; level-- > 0;) {
      i = (i << 6) | static_cast<unsigned>(std::countr_zero(words_[offset_[level] + i]));
    }
    return i;
  }

  // Level 0, the bits themselves, for whole-bitmap checks (popcount, buddy pairs).
  std::span<const std::uint64_t> bit_words() const noexcept { return {words_.data(), level_words(0)}; }
  std::uint64_t count() const noexcept;

  // "" when the summary levels agree with the levels below and no bit lies past the end.
  std::string check_invariants() const;

 private:
  std::size_t level_words(unsigned level) const noexcept {
    return static_cast<std::size_t>((level + 1 < levels_ ? offset_[level + 1] : words_.size()) - offset_[level]);
  }

  std::vector<std::uint64_t> words_;
  std::array<std::uint64_t, kMaxLevels> offset_{};  // first word of each level in words_
  unsigned levels_ = 0;
  std::uint64_t bits_ = 0;
};

}  // namespace tiermark::detail
