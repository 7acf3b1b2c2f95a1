// SizeClassPoolAllocator (`pool.sizeclass`): segregated size classes, each a fixed-size BlockPool; a
// request goes to the smallest class that fits it (RMM binning_memory_resource). Above the largest
// class, requests go straight to upstream, rounded to 4 KiB pages.
//
// Classes follow jemalloc's spacing: 16, 32, 48, 64, then four classes per doubling (80, 96, 112, 128,
// 160, ...), so rounding wastes at most 25% (jemalloc size classes, sc.h: LG_QUANTUM 4, SC_LG_NGROUP 2).
// An over-aligned request takes the smallest class >= its size whose size is a multiple of the
// alignment; blocks of class c are aligned to the largest power of two dividing c.
// Invariants: those of every class's BlockPool; live blocks over all classes plus large blocks equal
// allocs - frees; reserved = class chunks + large blocks.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/bits.h"
#include "allocators/block_pool.h"

namespace tiermark {

class SizeClassPoolAllocator final {
 public:
  static constexpr std::string_view kName = "pool.sizeclass";
  static constexpr std::string_view kDescription =
      "segregated size classes, each a fixed pool; larger requests straight to upstream (RMM binning_memory_resource)";
  static std::span<const OptionSpec> option_specs();
  static constexpr std::size_t kLargePage = 4096;

  SizeClassPoolAllocator(const Options& options, Upstream& upstream);
  ~SizeClassPoolAllocator();
  SizeClassPoolAllocator(const SizeClassPoolAllocator&) = delete;
  SizeClassPoolAllocator& operator=(const SizeClassPoolAllocator&) = delete;

  // The class index serving `size` before alignment is considered (size >= 1).
  static constexpr unsigned class_index(std::uint64_t size) {
    if (size <= 64) return static_cast<unsigned>((size + 15) / 16 - 1);
    const std::uint64_t x = size - 1;
    const unsigned lg = log2_floor(x);
    return 4 + (lg - 6) * 4 + static_cast<unsigned>((x >> (lg - 2)) & 3);
  }
  static constexpr std::uint64_t class_size(unsigned index) {
    if (index < 4) return (index + 1) * std::uint64_t{16};
    const std::uint64_t base = std::uint64_t{64} << ((index - 4) / 4);
    return base + ((index - 4) % 4 + 1) * (base / 4);
  }

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    const unsigned index = index_for(size, alignment);
    if (index >= pools_.size()) return allocate_large(size, alignment);
    detail::BlockPool& pool = pools_[index];
    void* p = pool.pop();
    if (p == nullptr) [[unlikely]] {
      p = detail::grow_and_pop(pool, upstream_, stats_);
      if (p == nullptr) return nullptr;
    }
    stats_.on_allocate(size, pool.block_size());
    return p;
  }

  void deallocate(void* p, std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    const unsigned index = index_for(size, alignment);
    if (index >= pools_.size()) return deallocate_large(p, size, alignment);
    pools_[index].push(p);
    stats_.on_deallocate(size, pools_[index].block_size());
  }

  AllocatorStats stats() const;
  std::string check_invariants() const;
  void trim();

 private:
  unsigned index_for(std::size_t size, std::size_t alignment) const noexcept {
    if (size > max_size_) return kLarge;
    unsigned index = class_index(size);
    // Rare: only alignments above 16 can need a larger class (every class is a multiple of 16).
    while (alignment > 16 && index < pools_.size() && class_size(index) % alignment != 0) ++index;
    return index;
  }
  void* allocate_large(std::size_t size, std::size_t alignment) noexcept;
  void deallocate_large(void* p, std::size_t size, std::size_t alignment) noexcept;

  static constexpr unsigned kLarge = ~0u;
  Upstream& upstream_;
  std::uint64_t max_size_;
  std::vector<detail::BlockPool> pools_;  // one per class, index = class_index
  std::uint64_t large_live_ = 0;   // blocks served straight from upstream
  std::uint64_t large_bytes_ = 0;
  StatsRecorder stats_;
};

}  // namespace tiermark
