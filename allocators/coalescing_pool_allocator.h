// CoalescingPoolAllocator (`pool.coalescing`): the seed project's "MemoryPool" and RAPIDS RMM's
// pool_memory_resource with its coalescing_free_list (rmm/mr/device/pool_memory_resource.hpp,
// rmm/mr/device/detail/coalescing_free_list.hpp). Chunks come from upstream, the first one in the
// constructor (RMM pre-allocates its initial pool). Free blocks are handed out best fit: the smallest
// block that fits, lowest address on ties; the caller takes the front part and the rest stays free.
// A freed block merges with its free address-neighbours in the same chunk, never across chunks (as RMM).
// A miss grows the pool by one new chunk: doubling, or half the remaining room under a maximum, halving
// the attempt while upstream refuses (RMM size_to_grow and try_to_expand). With release=true a chunk
// other than the floor goes back upstream the moment it is one whole free block. The floor is the first
// chunk, or, once trim() has emptied the pool, the next chunk it grows; trim() releases it too.
//
// All metadata lives outside the managed memory (a simulated device must never be touched): one node per
// free block, linked into two intrusive red-black trees (by (size, address) for best fit, by address for
// coalescing), nodes from a NodePool; chunks in a vector sorted by base. Allocated blocks carry no
// metadata: deallocate(p, size, ...) recomputes the block as [p, p + round_up(size, granularity)).
// A request aligned above the granularity takes the best fit among the first few blocks whose aligned
// front fits, else the smallest block of at least size + alignment - granularity (which always fits);
// the leading pad stays free as a block of its own, so the allocated block starts at the pointer.
// Streams are ignored: one free list serves them all (RMM keeps one per stream).
//
// Invariants (check_invariants): both trees hold the same blocks; free blocks are address-ordered,
// disjoint, each inside one chunk, never adjacent within a chunk (fully coalesced); their addresses and
// sizes are multiples of the granularity; free bytes = reserved - allocated; with release=true no wholly
// free chunk survives but the floor; requested <= allocated <= reserved (<= maximum); node capacity >=
// live blocks + chunks, which bounds the free blocks, so deallocate() never needs a node from the heap.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/intrusive/rbtree.hpp>

#include "allocators/allocator.h"
#include "allocators/bits.h"
#include "allocators/node_pool.h"

namespace tiermark {
namespace detail {

// normal_link: no safe-mode unlinking on the hot path (check_invariants() checks the trees instead).
// optimize_size: the red-black colour rides in the parent pointer, so a hook is three words.
using CoalescingHook = boost::intrusive::set_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>,
                                                         boost::intrusive::optimize_size<true>>;

// One free block: two 24-byte hooks, address and size: 64 bytes, one cache line.
struct alignas(64) FreeBlock {
  FreeBlock(std::uintptr_t a, std::uint64_t s) noexcept : address(a), size(s) {}
  CoalescingHook by_size;
  CoalescingHook by_address;
  std::uintptr_t address;
  std::uint64_t size;
  std::uintptr_t end() const { return address + size; }
};
static_assert(sizeof(FreeBlock) == 64, "a free-block node should fill exactly one cache line");

constexpr bool size_address_less(std::uint64_t size_a, std::uintptr_t address_a, std::uint64_t size_b,
                                 std::uintptr_t address_b) {
  return size_a < size_b || (size_a == size_b && address_a < address_b);
}

struct BySizeThenAddress {
  bool operator()(const FreeBlock& a, const FreeBlock& b) const noexcept {
    return size_address_less(a.size, a.address, b.size, b.address);
  }
  // Lookups by a size alone: size s stands for the key (s, 0), which sorts below every block of size s.
  bool operator()(const FreeBlock& a, std::uint64_t size) const noexcept { return a.size < size; }
  bool operator()(std::uint64_t size, const FreeBlock& a) const noexcept { return size <= a.size; }
};

struct ByAddress {
  bool operator()(const FreeBlock& a, const FreeBlock& b) const noexcept { return a.address < b.address; }
  bool operator()(const FreeBlock& a, std::uintptr_t address) const noexcept { return a.address < address; }
  bool operator()(std::uintptr_t address, const FreeBlock& a) const noexcept { return address < a.address; }
};

// Sizes are not kept in the trees (constant_time_size<false>): one counter less per operation.
using SizeTree = boost::intrusive::rbtree<
    FreeBlock, boost::intrusive::member_hook<FreeBlock, CoalescingHook, &FreeBlock::by_size>,
    boost::intrusive::compare<BySizeThenAddress>, boost::intrusive::constant_time_size<false>>;
using AddressTree = boost::intrusive::rbtree<
    FreeBlock, boost::intrusive::member_hook<FreeBlock, CoalescingHook, &FreeBlock::by_address>,
    boost::intrusive::compare<ByAddress>, boost::intrusive::constant_time_size<false>>;

}  // namespace detail

class CoalescingPoolAllocator final {
 public:
  static constexpr std::string_view kName = "pool.coalescing";
  static constexpr std::string_view kDescription =
      "address-ordered best fit over upstream chunks, coalescing on free, growth by doubling (RMM pool_memory_resource)";
  static std::span<const OptionSpec> option_specs();

  // A byte range: a chunk from upstream or a free block.
  struct Range {
    std::uintptr_t address;
    std::uint64_t size;
    std::uintptr_t end() const { return address + size; }
  };

  CoalescingPoolAllocator(const Options& options, Upstream& upstream);
  ~CoalescingPoolAllocator();
  CoalescingPoolAllocator(const CoalescingPoolAllocator&) = delete;
  CoalescingPoolAllocator& operator=(const CoalescingPoolAllocator&) = delete;

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    // Fast path: a plain alignment, a free node guaranteed for the block's eventual free, and a hit.
    // `size - 1` also sends size 0 and sizes whose rounding would overflow to the slow path.
    if (size - 1 < kMaxRequest && alignment <= granularity_ && live_blocks_ < node_limit_) [[likely]] {
      const std::uint64_t bytes = align_up(size, granularity_);
      const auto it = by_size_.lower_bound(bytes, detail::BySizeThenAddress{});
      if (it != by_size_.end()) [[likely]] {
        const std::uintptr_t address = take_front(*it, bytes);
        ++live_blocks_;
        stats_.on_allocate(size, bytes);
        return pointer_at(address);
      }
    }
    return allocate_slow(size, alignment);
  }

  void deallocate(void* p, std::size_t size, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    // The pad an over-aligned request left in front of its block is a free block of its own, so the
    // block is [p, p + bytes) whatever the alignment was.
    const std::uint64_t bytes = align_up(size, granularity_);
    free_block(address_of(p), bytes);
    --live_blocks_;
    stats_.on_deallocate(size, bytes);
  }

  AllocatorStats stats() const { return stats_.snapshot(by_size_.empty() ? 0 : by_size_.rbegin()->size); }
  std::string check_invariants() const;
  // Returns every chunk that is one whole free block to upstream, the floor included.
  void trim();

  // Introspection for tests and debugging (not for hot paths).
  std::span<const Range> chunks() const { return chunks_; }
  std::vector<Range> free_blocks() const;  // in address order
  std::uintptr_t floor_chunk() const { return floor_; }  // base of the chunk kept as the floor, 0 if none
  std::uint64_t granularity() const { return granularity_; }

 private:
  // Larger requests (or alignments) fail: with this bound no size arithmetic below can overflow.
  static constexpr std::uint64_t kMaxRequest = std::uint64_t{1} << 62;

  void* allocate_slow(std::size_t size, std::size_t alignment) noexcept;
  std::uintptr_t carve_aligned(detail::FreeBlock& block, std::uint64_t bytes, std::uint64_t alignment) noexcept;
  detail::FreeBlock* grow(std::uint64_t need) noexcept;
  detail::FreeBlock* add_chunk(std::uintptr_t base, std::uint64_t bytes) noexcept;
  void release_chunk(detail::FreeBlock& block, Range chunk) noexcept;
  void refresh_node_limit() noexcept;

  // The chunk holding `address` (which must lie in one).
  Range chunk_of(std::uintptr_t address) const noexcept {
    const auto it = std::upper_bound(chunks_.begin(), chunks_.end(), address,
                                     [](std::uintptr_t a, const Range& c) { return a < c.address; });
    return *(it - 1);
  }

  // Hands out the first `bytes` of `block`; the rest stays free.
  std::uintptr_t take_front(detail::FreeBlock& block, std::uint64_t bytes) noexcept {
    const std::uintptr_t address = block.address;
    if (block.size == bytes) {
      by_size_.erase(by_size_.iterator_to(block));
      by_address_.erase(by_address_.iterator_to(block));
      nodes_.recycle(&block);
    } else {
      rekey(block, address + bytes, block.size - bytes);
    }
    return address;
  }

  // Give `block` a new (size, address) key: smaller after a split, larger after absorbing a neighbour.
  // Its place in the address tree never changes (callers only move an address within the gap between
  // its neighbours); in the size tree it moves only when the neighbour on the side it moved towards now
  // sorts past it, which is rare, so the common case is two stores.
  void rekey(detail::FreeBlock& block, std::uintptr_t address, std::uint64_t size) noexcept {
    const auto it = by_size_.iterator_to(block);
    bool out_of_order;
    if (detail::size_address_less(size, address, block.size, block.address)) {
      out_of_order = it != by_size_.begin() &&
                     !detail::size_address_less(std::prev(it)->size, std::prev(it)->address, size, address);
    } else {
      const auto after = std::next(it);
      out_of_order = after != by_size_.end() && !detail::size_address_less(size, address, after->size, after->address);
    }
    if (out_of_order) by_size_.erase(it);
    block.address = address;
    block.size = size;
    if (out_of_order) by_size_.insert_equal(block);
  }

  void free_block(std::uintptr_t start, std::uint64_t bytes) noexcept {
    const std::uintptr_t end = start + bytes;
    const Range chunk = chunk_of(start);
    const auto next = by_address_.upper_bound(start, detail::ByAddress{});
    detail::FreeBlock* previous = next != by_address_.begin() ? &*std::prev(next) : nullptr;
    // Never merge across a chunk boundary, even when the next chunk happens to start right there.
    const bool merge_previous = previous != nullptr && previous->end() == start && start != chunk.address;
    const bool merge_next = next != by_address_.end() && next->address == end && end != chunk.end();
    detail::FreeBlock* merged;
    if (merge_previous && merge_next) {
      detail::FreeBlock& absorbed = *next;
      const std::uint64_t total = previous->size + bytes + absorbed.size;
      by_address_.erase(next);
      by_size_.erase(by_size_.iterator_to(absorbed));
      nodes_.recycle(&absorbed);
      rekey(*previous, previous->address, total);
      merged = previous;
    } else if (merge_previous) {
      rekey(*previous, previous->address, previous->size + bytes);
      merged = previous;
    } else if (merge_next) {
      merged = &*next;
      rekey(*merged, start, merged->size + bytes);
    } else {
      // Cannot fail: allocate() keeps node capacity >= live blocks + chunks >= the free blocks after this.
      merged = nodes_.make(start, bytes);
      by_address_.insert_before(next, *merged);
      by_size_.insert_equal(*merged);
    }
    if (release_ && merged->size == chunk.size && chunk.address != floor_) [[unlikely]] {
      release_chunk(*merged, chunk);
    }
  }

  Upstream& upstream_;
  std::uint64_t granularity_;
  std::uint64_t maximum_;   // 0: unlimited
  bool release_;
  std::uintptr_t floor_ = 0;          // base of the floor chunk; 0 when there is none
  std::uint64_t live_blocks_ = 0;     // allocated blocks
  std::uint64_t node_limit_ = 0;      // node capacity - chunks: the fast path needs live_blocks_ below it
  std::vector<Range> chunks_;         // sorted by address
  detail::NodePool<detail::FreeBlock> nodes_;  // declared before the trees, so it outlives them
  detail::SizeTree by_size_;
  detail::AddressTree by_address_;
  StatsRecorder stats_;
};

}  // namespace tiermark
