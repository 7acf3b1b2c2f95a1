#include "allocators/hierarchical_bitmap.h"

namespace tiermark::detail {

HierarchicalBitmap::HierarchicalBitmap(std::uint64_t bits) : bits_(bits) {
  std::uint64_t total = 0;
  std::uint64_t entries = bits;  // bits to hold at the current level
  do {
    const std::uint64_t words = (entries + 63) / 64;
    offset_[levels_++] = total;
    total += words;
    entries = words;  // one summary bit per word below
  } while (entries > 1);
  words_.assign(static_cast<std::size_t>(total), 0);
}

std::uint64_t HierarchicalBitmap::count() const noexcept {
  std::uint64_t n = 0;
  // Skips zero words: without -mpopcnt std::popcount is a libgcc call, and most words are zero.
  for (const std::uint64_t word : bit_words()) n += word == 0 ? 0 : static_cast<std::uint64_t>(std::popcount(word));
  return n;
}

std::string HierarchicalBitmap::check_invariants() const {
  std::uint64_t entries = bits_;
  for (unsigned level = 0; level < levels_; ++level) {
    const std::size_t words = level_words(level);
    const std::uint64_t* row = words_.data() + offset_[level];
    if (entries % 64 != 0 && (row[words - 1] >> (entries % 64)) != 0) {
      return "bitmap: a bit is set past the end of level " + std::to_string(level);
    }
    if (level + 1 < levels_) {
      const std::uint64_t* above = words_.data() + offset_[level + 1];
      for (std::size_t j = 0; j < words; ++j) {
        if (((above[j >> 6] >> (j & 63)) & 1u) != (row[j] != 0 ? 1u : 0u)) {
          return "bitmap: summary bit " + std::to_string(j) + " of level " + std::to_string(level + 1) +
                 " disagrees with the word below";
        }
      }
    }
    entries = words;
  }
  return "";
}

}  // namespace tiermark::detail
