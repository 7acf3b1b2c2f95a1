// CachingPytorchAllocator (`caching.pytorch`): a model of PyTorch's CUDA caching allocator
// (pytorch/pytorch c10/cuda/CUDACachingAllocator.cpp, DeviceCachingAllocator; options as in
// c10/core/AllocatorConfig.cpp), on tiermark's Upstream: upstream allocate = cudaMalloc of a segment,
// upstream deallocate = cudaFree. The rules (shared/REFERENCE.md section 1, checked against the source):
//
//  * round_size: below 512 B -> 512 B, else a multiple of 512 B; with roundup_power2_divisions d for the
//    size's interval and size > 512·d, round up to the next of d steps between powers of two.
//  * Pools: small (rounded size <= 1 MiB, carved from 2 MiB segments) and large (others: 20 MiB segments
//    below 10 MiB, else a segment of the size rounded up to 2 MiB). Free blocks of a pool sit in one tree
//    ordered by (stream, size, address), so each (stream, pool) pair is its own free list; a request takes
//    the lower bound of (stream, size): best fit, lowest address on ties, never another stream's block.
//  * Oversize (get_free_block): a request below max_split_size never takes a block at or above it; one at
//    or above it takes a block only if the block is below request + max_non_split_rounding.
//  * Split (should_split): small pool when the remainder >= 512 B; large pool when the request is below
//    max_split_size and the remainder > 1 MiB. The caller gets the front; the rest goes back to the pool.
//  * Free (free_block): merge with free physical neighbours in the same segment, re-insert. Segments go
//    upstream only as one whole free block, on the miss path or in trim() (= torch.cuda.empty_cache()).
//  * Miss: [garbage collection] -> new segment -> free cached oversize blocks and retry (only with
//    max_split_size) -> free every unsplit cached segment and retry (num_alloc_retries) -> num_ooms, nullptr.
//
// tiermark additions, not in PyTorch (which always aligns to 512 B and looks blocks up by pointer):
// a request aligned above 512 B asks for size + alignment - 512 and is handed the first aligned address
// in its block; the live block is found again through an intrusive hash keyed by the pointer handed out.
// No CUDA events are modelled: a block is reusable as soon as it is freed, so active_bytes == allocated.
//
// expandable_segments=true (PyTorch's ExpandableSegment; simulated upstreams only): per (stream, pool) a
// synthetic virtual range of 1.125 x the upstream capacity, never dereferenced, into which pages of 2 MiB
// (small) or 20 MiB (large) are mapped; each page is one upstream allocate (a device call). Unmapped parts
// of a range are blocks too (mapped == false), kept in a second per-pool tree ordered by (stream, address);
// mapped and unmapped blocks merge only with their own kind; a page is mapped exactly when a mapped block
// covers part of it. Details in docs/allocator-caching-pytorch.md.
//
// All metadata lives on the side (a simulated device is never touched): a node per block from a NodePool,
// free blocks in intrusive red-black trees, live blocks in an intrusive hash table, segments in a list.
// Invariants (check_invariants): each segment's blocks tile it in address order through prev/next; no two
// adjacent free blocks; a free block is in its pool's tree exactly when it is free, a live one in the hash;
// every counter equals a recount; node counts equal block and segment counts. Expandable: unmapped blocks
// are whole pages, unallocated, never adjacent, in the unmapped tree; the page table holds exactly the pages
// that mapped blocks touch; segments never overlap; device allocs - frees = plain segments + mapped pages.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/rbtree.hpp>
#include <boost/intrusive/unordered_set.hpp>

#include "allocators/allocator.h"
#include "allocators/bits.h"
#include "allocators/caching_block_index.h"
#include "allocators/node_pool.h"
#include "allocators/synthetic_range.h"

namespace tiermark {

// torch.cuda.memory_stats() names ("...all.current" / "...all.peak"); active == allocated (no events).
struct PytorchMemoryStats {
  Gauge allocated_bytes;       // block sizes handed out (rounded)
  Gauge reserved_bytes;        // segment sizes
  Gauge active_bytes;          // allocated + blocks waiting on events; no events here, so == allocated
  Gauge inactive_split_bytes;  // free blocks inside split segments: what cannot go back upstream
  Gauge requested_bytes;       // sizes as asked for
  Gauge segment;               // segments held
  std::uint64_t num_alloc_retries = 0;
  std::uint64_t num_ooms = 0;
  std::uint64_t num_device_alloc = 0;
  std::uint64_t num_device_free = 0;
};

namespace detail {

namespace pyt {
namespace bi = boost::intrusive;
using FreeHook = bi::set_member_hook<bi::link_mode<bi::normal_link>, bi::optimize_size<true>>;
using LiveHook = bi::unordered_set_member_hook<bi::link_mode<bi::normal_link>>;
using SegmentHook = bi::list_member_hook<bi::link_mode<bi::normal_link>>;

struct Segment;

// One block of a segment, free or live (PyTorch's Block).
struct Block {
  FreeHook free_hook;  // in its pool's tree while free
  LiveHook live_hook;  // in the live table while allocated
  std::uintptr_t ptr = 0;
  std::uint64_t size = 0;
  Block* prev = nullptr;  // physical neighbours in the same segment
  Block* next = nullptr;
  Segment* segment = nullptr;
  std::uintptr_t user_ptr = 0;  // the pointer handed out (above ptr only for over-aligned requests)
  std::uint64_t requested = 0;  // the size asked for
  std::uint64_t gc_base = 0;    // the pool's search count when the block last became free
  StreamId stream = 0;
  bool allocated = false;
  bool mapped = true;  // false only for the unmapped address space of an expandable segment
  bool is_split() const { return prev != nullptr || next != nullptr; }
};

struct Segment {
  SegmentHook hook;
  std::uintptr_t base = 0;
  std::uint64_t size = 0;
  Block* head = nullptr;  // the block at base
  StreamId stream = 0;
  bool small = false;
  bool expandable = false;      // a reserved virtual range whose pages are mapped on demand
  std::uint64_t page_size = 0;  // expandable only: 2 MiB (small) or 20 MiB (large)
};

// BlockComparatorSize (stream, size, address) and the live table's hash: caching_block_index.h.
using Key = detail::BlockKey;
using detail::ByStreamSizeAddress;
using detail::PointerEqual;
using detail::PointerHash;

// BlockComparatorAddress: (stream, address), the order of the unmapped blocks.
struct ByStreamAddress {
  static bool less(StreamId sa, std::uintptr_t pa, StreamId sb, std::uintptr_t pb) noexcept {
    return sa != sb ? sa < sb : pa < pb;
  }
  bool operator()(const Block& a, const Block& b) const noexcept { return less(a.stream, a.ptr, b.stream, b.ptr); }
  bool operator()(const Block& a, const Key& k) const noexcept { return less(a.stream, a.ptr, k.stream, k.ptr); }
  bool operator()(const Key& k, const Block& a) const noexcept { return less(k.stream, k.ptr, a.stream, a.ptr); }
};

using FreeTree = bi::rbtree<Block, bi::member_hook<Block, FreeHook, &Block::free_hook>,
                            bi::compare<ByStreamSizeAddress>, bi::constant_time_size<false>>;
// An unmapped block is never in the free tree, so it reuses the free hook.
using UnmappedTree = bi::rbtree<Block, bi::member_hook<Block, FreeHook, &Block::free_hook>,
                                bi::compare<ByStreamAddress>, bi::constant_time_size<false>>;
using LiveTable = bi::unordered_set<Block, bi::member_hook<Block, LiveHook, &Block::live_hook>, bi::hash<PointerHash>,
                                    bi::equal<PointerEqual>, bi::power_2_buckets<true>, bi::constant_time_size<true>>;
using SegmentList = bi::list<Segment, bi::member_hook<Segment, SegmentHook, &Segment::hook>, bi::constant_time_size<true>>;

// One BlockPool: its free tree and the number of searches made in it (the clock of block ages).
struct Pool {
  FreeTree blocks;
  UnmappedTree unmapped;  // expandable segments only
  std::uint64_t searches = 0;
  bool small = false;
};
}  // namespace pyt
}  // namespace detail

class CachingPytorchAllocator final {
 public:
  static constexpr std::string_view kName = "caching.pytorch";
  static constexpr std::string_view kDescription =
      "PyTorch's CUDA caching allocator: 2 MiB / 20 MiB segments, best fit per stream, split and merge, "
      "retry after freeing cached segments (c10 CUDACachingAllocator)";
  static std::span<const OptionSpec> option_specs();

  // Constants of CUDACachingAllocator.cpp (kMinBlockSize, kSmallSize, kSmallBuffer, kLargeBuffer,
  // kMinLargeAlloc, kRoundLarge) and AllocatorConfig.cpp (kRoundUpPowerOfTwoStart, ...Intervals).
  static constexpr std::uint64_t kMinBlockSize = 512;
  static constexpr std::uint64_t kSmallSize = 1 << 20;
  static constexpr std::uint64_t kSmallBuffer = 2 << 20;
  static constexpr std::uint64_t kLargeBuffer = 20 << 20;
  static constexpr std::uint64_t kMinLargeAlloc = 10 << 20;
  static constexpr std::uint64_t kRoundLarge = 2 << 20;
  static constexpr unsigned kRoundUpPowerOfTwoStartLog2 = 20;  // 1 MiB
  static constexpr std::size_t kRoundUpPowerOfTwoIntervals = 16;
  using Divisions = std::array<std::uint32_t, kRoundUpPowerOfTwoIntervals>;

  CachingPytorchAllocator(const Options& options, Upstream& upstream);
  ~CachingPytorchAllocator();
  CachingPytorchAllocator(const CachingPytorchAllocator&) = delete;
  CachingPytorchAllocator& operator=(const CachingPytorchAllocator&) = delete;

  void* allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept {
    // Fast path: plain alignment, a node for a split, and a hit in the pool. `size - 1` sends 0 and
    // sizes whose rounding could overflow to the slow path.
    if (size - 1 < kMaxRequest && alignment <= kMinBlockSize && nodes_.live() < nodes_.capacity()) [[likely]] {
      const std::uint64_t bytes = round_size(size);
      detail::pyt::Pool& pool = pool_for(bytes);
      ++pool.searches;
      if (detail::pyt::Block* block = get_free_block(pool, stream, bytes)) [[likely]] {
        return hand_out(pool, *block, bytes, size, alignment);
      }
      --pool.searches;  // the slow path searches again and counts it
    }
    return allocate_slow(size, alignment, stream);
  }

  void deallocate(void* p, std::size_t /*size*/, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    const auto it = live_.find(address_of(p), detail::pyt::PointerHash{}, detail::pyt::PointerEqual{});
    detail::pyt::Block& block = *it;  // p came from allocate(): it is live (allocator.h contract)
    live_.erase(it);
    stats_.on_deallocate(block.requested, block.size);
    free_block(block);
  }

  AllocatorStats stats() const { return stats_.snapshot(largest_free_block()); }
  std::string check_invariants() const;
  // torch.cuda.empty_cache(): every cached segment that is one whole free block goes back upstream.
  void trim() { release_cached_blocks(); }

  // torch.cuda.memory_stats() counters, current and peak.
  PytorchMemoryStats memory_stats() const;
  // round_size() with this allocator's roundup_power2_divisions.
  std::uint64_t round_size(std::uint64_t size) const noexcept {
    if (size < kMinBlockSize) return kMinBlockSize;
    if (any_divisions_) [[unlikely]] {
      const std::uint64_t d = divisions_for(size);
      if (d > 1 && size > kMinBlockSize * d) return roundup_power2_next_division(size, d);
    }
    return align_up(size, kMinBlockSize);
  }
  // CUDACachingAllocator's helper: 1200 with 4 divisions of [1024, 2048) -> 1280.
  static std::uint64_t roundup_power2_next_division(std::uint64_t size, std::uint64_t divisions) noexcept;
  // Parses roundup_power2_divisions as AllocatorConfig does: `N` (a power of two, or 0 for off) for every
  // interval, or `[256:1,512:2,>:8]` (interval starts in MiB, powers of two; `>` for all later intervals).
  // Returns the 16 values, or nullopt with `why` set.
  static std::optional<Divisions> parse_divisions(std::string_view text, std::string& why);

  // Introspection for tests (not for hot paths).
  struct BlockInfo {
    std::uintptr_t address;
    std::uint64_t size;
    bool allocated;
    bool mapped = true;  // false: unmapped address space of an expandable segment
  };
  struct SegmentInfo {
    std::uintptr_t address;
    std::uint64_t size;
    StreamId stream;
    bool small;
    std::vector<BlockInfo> blocks;  // in address order
    bool expandable = false;        // size is then the reserved virtual range, not reserved bytes
  };
  std::vector<SegmentInfo> snapshot() const;  // sorted by address
  const Divisions& divisions() const { return divisions_; }
  std::uint64_t memory_limit() const { return limit_; }  // 0: none (no per_process_memory_fraction)
  bool expandable_segments() const { return expandable_; }
  // The virtual range reserved per (stream, pool) with expandable_segments (0 otherwise).
  std::uint64_t expandable_range(bool small) const { return small ? small_range_ : large_range_; }

 private:
  static constexpr std::uint64_t kMaxRequest = std::uint64_t{1} << 62;
  static constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

  std::uint64_t divisions_for(std::uint64_t size) const noexcept {
    const unsigned log_size = log2_floor(size);
    std::size_t index = log_size > kRoundUpPowerOfTwoStartLog2 ? log_size - kRoundUpPowerOfTwoStartLog2 : 0;
    if (index >= kRoundUpPowerOfTwoIntervals) index = kRoundUpPowerOfTwoIntervals - 1;
    return divisions_[index];
  }
  detail::pyt::Pool& pool_for(std::uint64_t bytes) noexcept { return bytes <= kSmallSize ? small_ : large_; }
  detail::pyt::Pool& pool_of(const detail::pyt::Block& block) noexcept { return block.segment->small ? small_ : large_; }

  // get_free_block: the lower bound of (stream, bytes), subject to the oversize rules; removes it.
  detail::pyt::Block* get_free_block(detail::pyt::Pool& pool, StreamId stream, std::uint64_t bytes) noexcept {
    auto it = pool.blocks.lower_bound(detail::pyt::Key{stream, bytes, 0}, detail::pyt::ByStreamSizeAddress{});
    if (it == pool.blocks.end() || it->stream != stream) return nullptr;
    if (expandable_) [[unlikely]] {
      // As PyTorch: for best fit a block counts as what it can grow to (itself and an unmapped next block),
      // so a block at the mapped end is passed over for a later one of the stream that can grow less.
      for (auto next = std::next(it); next != pool.blocks.end() && next->stream == stream &&
                                      expandable_size(*next) < expandable_size(*it);
           ++next) {
        it = next;
      }
    }
    if (bytes < max_split_ && it->size >= max_split_) return nullptr;
    if (bytes >= max_split_ && it->size >= bytes + max_non_split_) return nullptr;
    detail::pyt::Block* block = &*it;
    pool.blocks.erase(it);
    return block;
  }

  static std::uint64_t expandable_size(const detail::pyt::Block& b) noexcept {
    return b.size + (b.next != nullptr && !b.next->mapped ? b.next->size : 0);
  }

  bool should_split(const detail::pyt::Pool& pool, std::uint64_t bytes, std::uint64_t block_size) const noexcept {
    const std::uint64_t remaining = block_size - bytes;
    if (pool.small || expandable_) return remaining >= kMinBlockSize;
    return bytes < max_split_ && remaining > kSmallSize;
  }

  // alloc_found_block: splits off the front for the caller when should_split says so.
  // Needs one free node (the caller checked).
  void* hand_out(detail::pyt::Pool& pool, detail::pyt::Block& block, std::uint64_t bytes, std::uint64_t size,
                 std::uint64_t alignment) noexcept {
    const bool already_split = block.is_split();
    detail::pyt::Block* out = &block;
    if (should_split(pool, bytes, block.size)) {
      out = nodes_.make();
      out->ptr = block.ptr;
      out->size = bytes;
      out->prev = block.prev;
      out->next = &block;
      out->segment = block.segment;
      out->stream = block.stream;
      if (out->prev != nullptr) {
        out->prev->next = out;
      } else {
        block.segment->head = out;
      }
      block.prev = out;
      block.ptr += bytes;
      block.size -= bytes;
      block.gc_base = pool.searches;
      pool.blocks.insert_equal(block);
      if (already_split) {
        inactive_split_bytes_.subtract(bytes);  // a free block of a split segment shrinks
      } else {
        inactive_split_bytes_.add(block.size);  // a new split: the remainder is inactive split memory
      }
    } else if (already_split) {
      inactive_split_bytes_.subtract(block.size);
    }
    out->allocated = true;
    out->requested = size;
    out->user_ptr = alignment <= kMinBlockSize ? out->ptr : align_up(out->ptr, alignment);
    if (live_.size() >= live_buckets_.size()) [[unlikely]] detail::grow_live_table(live_, live_buckets_);
    live_.insert(*out);
    stats_.on_allocate(size, out->size);
    return pointer_at(out->user_ptr);
  }

  // free_block + try_merge_blocks.
  void free_block(detail::pyt::Block& block) noexcept {
    detail::pyt::Pool& pool = pool_of(block);
    block.allocated = false;
    std::uint64_t subsumed = 0;
    if (detail::pyt::Block* src = block.prev; src != nullptr && !src->allocated && src->mapped) {
      pool.blocks.erase(pool.blocks.iterator_to(*src));
      block.ptr = src->ptr;
      block.prev = src->prev;
      if (block.prev != nullptr) {
        block.prev->next = &block;
      } else {
        block.segment->head = &block;
      }
      block.size += src->size;
      subsumed += src->size;
      nodes_.recycle(src);
    }
    if (detail::pyt::Block* src = block.next; src != nullptr && !src->allocated && src->mapped) {
      pool.blocks.erase(pool.blocks.iterator_to(*src));
      block.next = src->next;
      if (block.next != nullptr) block.next->prev = &block;
      block.size += src->size;
      subsumed += src->size;
      nodes_.recycle(src);
    }
    block.gc_base = pool.searches;
    pool.blocks.insert_equal(block);
    // The merged neighbours were inactive split bytes already; the block joins them if still split.
    const std::uint64_t joined = block.is_split() ? block.size : 0;
    if (joined >= subsumed) {
      inactive_split_bytes_.add(joined - subsumed);
    } else {
      inactive_split_bytes_.subtract(subsumed - joined);
    }
  }

  void* allocate_slow(std::size_t size, std::size_t alignment, StreamId stream) noexcept;
  detail::pyt::Block* alloc_block(detail::pyt::Pool& pool, StreamId stream, std::uint64_t bytes, std::uint64_t alloc_size,
                                  bool is_retry) noexcept;
  // Expandable segments (cold): find room, map pages into it, unmap whole free pages, drop an empty range.
  detail::pyt::Block* try_allocate_expandable_block(detail::pyt::Pool& pool, StreamId stream, std::uint64_t bytes) noexcept;
  detail::pyt::Block* find_expandable_block(detail::pyt::Pool& pool, StreamId stream, std::uint64_t bytes) noexcept;
  bool map_block(detail::pyt::Pool& pool, detail::pyt::Block& to_map, std::uint64_t size) noexcept;
  std::uint64_t unmap_block(detail::pyt::Pool& pool, detail::pyt::Block& block) noexcept;
  void release_expandable_segment(detail::pyt::Pool& pool, detail::pyt::Block& block) noexcept;
  void absorb(detail::pyt::Block& dst, detail::pyt::Block& src) noexcept;
  void link_after(detail::pyt::Block& at, detail::pyt::Block& block) noexcept;
  void link_before(detail::pyt::Block& at, detail::pyt::Block& block) noexcept;
  void adjust_inactive_split(std::uint64_t before, std::uint64_t after) noexcept;
  bool release_available_cached_blocks(detail::pyt::Pool& pool, StreamId stream, std::uint64_t bytes) noexcept;
  void release_cached_blocks() noexcept;
  void release_blocks(detail::pyt::Pool& pool) noexcept;
  void release_block(detail::pyt::Block& block) noexcept;
  void garbage_collect_cached_blocks() noexcept;
  std::uint64_t largest_free_block() const noexcept;
  void* fail(bool oom) noexcept;

  Upstream& upstream_;
  std::uint64_t max_split_ = kUnlimited;
  std::uint64_t max_non_split_ = kLargeBuffer;
  Divisions divisions_{};
  bool any_divisions_ = false;
  double gc_threshold_ = 0;  // 0: off
  std::uint64_t limit_ = 0;  // allowed_memory_maximum; 0: no fraction set
  bool expandable_ = false;
  std::uint64_t small_range_ = 0;  // virtual range per (stream, pool) with expandable segments
  std::uint64_t large_range_ = 0;
  SyntheticRangeCursor ranges_;  // where the next range starts (synthetic_range.h)
  // Mapped pages of expandable segments, by virtual page address.
  std::unordered_map<std::uintptr_t, std::pair<void*, std::uint64_t>> pages_;  // page -> (upstream block, page size)
  // Declared before the structures that link them, so nodes outlive trees, table and list.
  detail::NodePool<detail::pyt::Block> nodes_;
  detail::NodePool<detail::pyt::Segment> segment_nodes_;
  std::vector<detail::pyt::LiveTable::bucket_type> live_buckets_;
  detail::pyt::LiveTable live_;
  detail::pyt::Pool small_;
  detail::pyt::Pool large_;
  detail::pyt::SegmentList segments_;
  Gauge inactive_split_bytes_;
  Gauge segment_count_;
  std::uint64_t num_alloc_retries_ = 0;
  std::uint64_t num_ooms_ = 0;
  StatsRecorder stats_;
};

}  // namespace tiermark
