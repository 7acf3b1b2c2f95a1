// BuddyAllocator (`buddy`): a binary buddy allocator (Knuth, TAOCP vol. 1, 2.5; the allocator vLLM's
// Orca baselines used for KV chunks, shared/REFERENCE.md section 3) over power-of-two arenas taken
// from upstream, with a per-order deferred-coalescing cache in front (as Linux keeps per-CPU page
// lists in front of its buddy allocator, mm/page_alloc.c).
//
// A block of order k is min_block << k bytes; a request gets the smallest order whose block holds
// max(size, alignment) (an alignment above `arena` is a counted failure). Arenas are `arena` bytes,
// aligned to their size, so a block of order k lies at an arena offset that is a multiple of its size
// and is naturally aligned. A request above `arena` gets a dedicated arena of exactly its order that is
// never split (its metadata is O(1)); once free it serves the next request of that order.
// Allocation: the order's cache; else the most recently used arena; else the arena needing the least
// splitting; else drain the caches and retry; else a new arena; else (upstream refused) return wholly
// free arenas and try once more. Free: the order's cache while it has room, else eager merging.
// All metadata lives on the host, outside the managed memory (a simulated device is never touched):
// per arena and order a HierarchicalBitmap of free blocks and a flat bitmap of allocated heads
// (blocks handed out or cached), about 4 bits per min_block, plus a mask of non-empty orders.
//
// Invariants (check_invariants): every arena is tiled exactly once by free and allocated heads; no
// two buddies are free at the same order below the arena's top (merging is eager outside the cache);
// summaries and masks agree with the bitmaps; cache entries are allocated heads of their order, at
// most `cache` per order; allocated heads minus cached blocks = allocated_bytes; arena sizes sum to
// reserved_bytes. Cached blocks are free for the stats but allocated for the buddy structures.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/hierarchical_bitmap.h"

namespace tiermark {
namespace detail {

// One arena: orders low..top, all free at construction (one free block of order top). A standard
// arena has low = 0; a dedicated arena has low = top, so it is one block, free or allocated.
class BuddyArena {
 public:
  BuddyArena(std::uintptr_t base, unsigned shift, unsigned low, unsigned top);

  std::uintptr_t base() const noexcept { return base_; }
  std::uint64_t bytes() const noexcept { return bytes_; }
  unsigned low() const noexcept { return low_; }
  unsigned top() const noexcept { return top_; }
  bool contains(std::uintptr_t address) const noexcept { return address - base_ < bytes_; }
  bool wholly_free() const noexcept { return (nonempty_ >> top_) & 1u; }
  // Highest order with a free block, or -1 when none is free.
  int largest_free_order() const noexcept {
    return nonempty_ == 0 ? -1 : static_cast<int>(std::bit_width(nonempty_)) - 1;
  }
  bool can_serve(unsigned order) const noexcept { return order >= low_ && (nonempty_ >> order) != 0; }
  // The order take(order) would split from; requires can_serve(order).
  unsigned split_order(unsigned order) const noexcept {
    return order + static_cast<unsigned>(std::countr_zero(nonempty_ >> order));
  }

  // Removes a free block of `order` (splitting a larger one if needed); requires can_serve(order).
  std::uintptr_t take(unsigned order) noexcept;
  // Frees the allocated head at `address` of `order`, merging with free buddies up to the top.
  void give(std::uintptr_t address, unsigned order) noexcept;
  bool is_head(std::uintptr_t address, unsigned order) const noexcept;

  std::uint64_t head_bytes() const noexcept;  // sum of the sizes of all allocated heads
  std::string check_invariants() const;

 private:
  HierarchicalBitmap& free_at(unsigned order) noexcept { return free_[order - low_]; }
  std::uint64_t* heads_at(unsigned order) noexcept { return heads_.data() + head_offset_[order - low_]; }
  const std::uint64_t* heads_at(unsigned order) const noexcept {
    return heads_.data() + head_offset_[order - low_];
  }
  std::uint64_t index_of(std::uintptr_t address, unsigned order) const noexcept {
    return (address - base_) >> (order + shift_);
  }
  struct TilingError {
    enum Kind { kNone, kFreeAndAllocated, kOverlap, kGap } kind = kNone;
    unsigned order = 0;
    std::uint64_t index = 0;  // of the first offending block at `order`
  };
  struct TilingWords {  // level 0 of each order's bitmaps, indexed by order
    std::array<const std::uint64_t*, 64> free{};
    std::array<const std::uint64_t*, 64> heads{};
  };
  TilingError check_tiling(const TilingWords& words, unsigned order, std::uint64_t word,
                           std::uint64_t inherited) const noexcept;

  std::uintptr_t base_;
  std::uint64_t bytes_;
  unsigned shift_;  // log2(min_block)
  unsigned low_;
  unsigned top_;
  std::uint64_t nonempty_;                // bit k: the free bitmap of order k has a set bit
  std::vector<HierarchicalBitmap> free_;  // [k - low]: free blocks of order k
  std::vector<std::uint64_t> heads_;      // allocated-head bits, order k from head_offset_[k - low]
  std::vector<std::uint64_t> head_offset_;
};

}  // namespace detail

class BuddyAllocator final {
 public:
  static constexpr std::string_view kName = "buddy";
  static constexpr std::string_view kDescription =
      "binary buddy over power-of-two arenas, out-of-band hierarchical bitmaps, per-order deferred-coalescing cache";
  static std::span<const OptionSpec> option_specs();

  BuddyAllocator(const Options& options, Upstream& upstream);
  ~BuddyAllocator();
  BuddyAllocator(const BuddyAllocator&) = delete;
  BuddyAllocator& operator=(const BuddyAllocator&) = delete;

  // Fast path: a pop from the order's cache. cache_count_ is never non-zero above the arena's top
  // order, so no range check is needed here.
  [[nodiscard]] void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    const unsigned order = order_of(size, alignment);
    std::uint32_t& count = cache_count_[order];
    if (count != 0) [[likely]] {
      void* p = cache_slots_[(std::size_t{order} << cache_stride_shift_) + --count];
      stats_.on_allocate(size, block_bytes(order));
      return p;
    }
    return allocate_slow(size, alignment, order);
  }

  // Fast path: a push onto the order's cache while it has room (cache_limit_ is 0 above the top order).
  void deallocate(void* p, std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    const unsigned order = order_of(size, alignment);
    std::uint32_t& count = cache_count_[order];
    if (count < cache_limit_[order]) [[likely]] {
      assert_live_head(p, order);
      cache_slots_[(std::size_t{order} << cache_stride_shift_) + count++] = p;
      stats_.on_deallocate(size, block_bytes(order));
      return;
    }
    deallocate_slow(p, size, order);
  }

  AllocatorStats stats() const;
  std::string check_invariants() const;
  void trim();

 private:
  static constexpr unsigned kOrders = 64;

  // The smallest k with (min_block << k) >= max(size, alignment); size > 0.
  unsigned order_of(std::size_t size, std::size_t alignment) const noexcept {
    const std::size_t want = size > alignment ? size : alignment;
    return static_cast<unsigned>(std::bit_width((want - 1) >> shift_));
  }
  std::uint64_t block_bytes(unsigned order) const noexcept { return std::uint64_t{1} << (order + shift_); }

  void* allocate_slow(std::size_t size, std::size_t alignment, unsigned order) noexcept;
  void deallocate_slow(void* p, std::size_t size, unsigned order) noexcept;
  std::uintptr_t take(unsigned order) noexcept;
  std::uintptr_t grow_and_take(unsigned order) noexcept;
  std::size_t release_free_arenas() noexcept;
  void drain_caches() noexcept;
  std::size_t arena_index(std::uintptr_t address) const noexcept;  // the arena holding address, or size()
  // Debug builds only: aborts unless p is an allocated head of `order` (a wrong size or a stray free).
  void assert_live_head([[maybe_unused]] const void* p, [[maybe_unused]] unsigned order) const noexcept {
#ifndef NDEBUG
    check_live_head(p, order);
#endif
  }
  void check_live_head(const void* p, unsigned order) const noexcept;

  Upstream& upstream_;
  unsigned shift_;            // log2(min_block)
  unsigned top_order_;        // log2(arena / min_block): the top order of a standard arena
  unsigned max_order_;        // the largest order whose block size fits in 62 bits
  std::uint64_t arena_bytes_;
  unsigned cache_stride_shift_;   // each order owns 1 << cache_stride_shift_ cache slots
  std::array<std::uint32_t, kOrders> cache_count_{};  // blocks cached per order
  std::array<std::uint32_t, kOrders> cache_limit_{};  // `cache` up to the top order, 0 above
  std::vector<void*> cache_slots_;
  std::vector<detail::BuddyArena> arenas_;  // sorted by base address
  std::size_t mru_ = 0;                     // index of the most recently used arena
  StatsRecorder stats_;
};

}  // namespace tiermark
