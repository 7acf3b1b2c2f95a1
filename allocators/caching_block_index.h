// How the caching allocators (caching.pytorch, caching.vmm) index their blocks, shared so that the
// order and the hash are defined once: free blocks in a tree ordered by (stream, size, address), which
// makes the lower bound of (stream, size) the stream's best fit with the lowest address on ties (PyTorch's
// BlockComparatorSize); live blocks in an intrusive hash table keyed by the pointer handed out.
// Works on any block type with fields `stream`, `size`, `ptr` and `user_ptr`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "common/allocation_request.h"

namespace tiermark::detail {

// A search key for the block trees (a block is compared through the same three fields).
struct BlockKey {
  StreamId stream;
  std::uint64_t size;
  std::uintptr_t ptr;
};

struct ByStreamSizeAddress {
  static bool less(StreamId sa, std::uint64_t za, std::uintptr_t pa, StreamId sb, std::uint64_t zb,
                   std::uintptr_t pb) noexcept {
    if (sa != sb) return sa < sb;
    if (za != zb) return za < zb;
    return pa < pb;
  }
  template <class A, class B>
  bool operator()(const A& a, const B& b) const noexcept {
    return less(a.stream, a.size, a.ptr, b.stream, b.size, b.ptr);
  }
};

inline std::size_t hash_pointer(std::uintptr_t p) noexcept {
  // Block pointers are multiples of 512: mix so that the low bits the power-of-two table uses vary.
  const std::uint64_t h = static_cast<std::uint64_t>(p) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::size_t>(h ^ (h >> 29));
}
struct PointerHash {
  template <class Block>
  std::size_t operator()(const Block& b) const noexcept {
    return hash_pointer(b.user_ptr);
  }
  std::size_t operator()(std::uintptr_t p) const noexcept { return hash_pointer(p); }
};
struct PointerEqual {
  template <class Block>
  bool operator()(const Block& a, const Block& b) const noexcept {
    return a.user_ptr == b.user_ptr;
  }
  template <class Block>
  bool operator()(std::uintptr_t p, const Block& b) const noexcept {
    return p == b.user_ptr;
  }
};

// Doubles a live table's buckets. An optimisation only: if the heap refuses, the old table keeps
// working, slower.
template <class Table>
void grow_live_table(Table& table, std::vector<typename Table::bucket_type>& buckets) noexcept {
  try {
    std::vector<typename Table::bucket_type> bigger(buckets.size() * 2);
    table.rehash(typename Table::bucket_traits(bigger.data(), bigger.size()));
    buckets.swap(bigger);
  } catch (const std::bad_alloc&) {
  }
}

}  // namespace tiermark::detail
