// The verification pattern of a stress block: every 8-byte word of a block holds a value derived
// from the block's id and the word's index, the tail bytes likewise, so a block that was overwritten
// by another (an overlap, a use after free) or handed out twice fails its check. The one pattern
// every kernel uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tiermark {

namespace detail {
// splitmix64's finaliser: distinct ids give unrelated words, so two blocks never share a pattern.
inline std::uint64_t pattern_word(std::uint64_t id, std::uint64_t index) {
  std::uint64_t z = id * 0x9E3779B97F4A7C15ULL + index;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
}  // namespace detail

// Writes the pattern of block `id` over [p, p + bytes).
inline void fill_block(void* p, std::size_t bytes, std::uint64_t id) {
  auto* bytes_out = static_cast<unsigned char*>(p);
  const std::size_t words = bytes / 8;
  for (std::size_t i = 0; i < words; ++i) {
    const std::uint64_t w = detail::pattern_word(id, i);
    std::memcpy(bytes_out + 8 * i, &w, 8);
  }
  const std::uint64_t tail = detail::pattern_word(id, words);
  std::memcpy(bytes_out + 8 * words, &tail, bytes % 8);
}

// True when [p, p + bytes) still holds the pattern of block `id`.
inline bool check_block(const void* p, std::size_t bytes, std::uint64_t id) {
  const auto* bytes_in = static_cast<const unsigned char*>(p);
  const std::size_t words = bytes / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, bytes_in + 8 * i, 8);
    if (w != detail::pattern_word(id, i)) return false;
  }
  const std::uint64_t tail = detail::pattern_word(id, words);
  return std::memcmp(bytes_in + 8 * words, &tail, bytes % 8) == 0;
}

}  // namespace tiermark
