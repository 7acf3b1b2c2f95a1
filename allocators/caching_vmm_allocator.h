// CachingVmmAllocator (`caching.vmm`): tiermark's own caching allocator for a simulated device, built on
// virtual-memory stitching as in GMLake (Guo et al., "GMLake: Efficient and Transparent GPU Memory
// Defragmentation for Large-scale DNN Training with Virtual Memory Stitching", ASPLOS 2024) and CUDA's
// virtual memory management API (cuMemAddressReserve, cuMemCreate, cuMemMap, cuMemUnmap). Blocks are
// placed by best fit in a large virtual range; physical memory is a pool of fixed-size pages mapped only
// under the virtual pages that some live block overlaps, so a gap between live blocks costs no physical
// memory beyond the partial pages at its ends. Details and provenance: docs/allocator-caching-vmm.md.
//
//  * Requests round to 512 B as caching.pytorch's (kMinBlockSize); a request aligned above 512 B asks for
//    size + alignment - 512 and is handed the first aligned address of its block.
//  * Pools: small (rounded size <= small_size, 1 MiB as PyTorch's kSmallSize) and large; per (stream,
//    pool) one synthetic range (synthetic_range.h), made on first use and never dereferenced.
//  * Blocks tile each range (prev/next); free blocks sit in a per-pool tree ordered by (stream, size,
//    address): best fit, lowest address on ties; if the best fit has an unmapped page, a fit among the next
//    few whose pages are all mapped is taken instead (mapped_fit). A block is always split (the remainder
//    is >= 512 B); free merges with free neighbours.
//  * Pages: each virtual page counts the live blocks overlapping it. allocate: a page whose count goes
//    0 -> 1 keeps its mapping if it has one, else gets a physical page from the unmapped pool, else steals
//    an idle mapped page (count 0) anywhere, else makes one (one upstream allocate of page_size, a device
//    call). free: counts go down, a page reaching 0 stays mapped (idle). Only a steal or trim() unmaps;
//    trim() also returns every unmapped physical page upstream.
//
// All metadata lives on the side: blocks are NodePool nodes in intrusive trees and an intrusive hash keyed
// by the pointer handed out; each range has a zero-initialised page table. Idle pages are found through a
// lazy FIFO queue (an entry may be stale: its page was in use since) holding each page at most once, so
// its capacity, like the unmapped pool's, is reserved when a physical page is made and free never calls
// the heap; the page idle longest is stolen first.
// Invariants (check_invariants): blocks tile each range; no two adjacent free blocks; a block is in the
// tree exactly when free and in the hash exactly when live; page counts equal a recount from live blocks;
// every page with live blocks is mapped; every idle mapped page is queued, and only mapped pages are;
// physical pages = mapped + unmapped pool; reserved = physical pages x page_size; counters equal recounts.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/intrusive/rbtree.hpp>
#include <boost/intrusive/unordered_set.hpp>

#include "allocators/allocator.h"
#include "allocators/bits.h"
#include "allocators/caching_block_index.h"
#include "allocators/caching_pytorch_allocator.h"
#include "allocators/node_pool.h"
#include "allocators/synthetic_range.h"

namespace tiermark {

// Page-level counters of caching.vmm, beside the common AllocatorStats (as caching.pytorch's memory_stats()).
// A real device pays microseconds per map and unmap; the counts let a reader price them.
struct VmmMemoryStats {
  Gauge physical_pages;  // pages made upstream and not yet returned (reserved = physical x page size)
  Gauge mapped_pages;    // physical pages mapped under some virtual page
  std::uint64_t live_pages = 0;      // virtual pages overlapped by at least one live block
  std::uint64_t idle_pages = 0;      // mapped, no live block: reused in place or stolen
  std::uint64_t unmapped_pages = 0;  // physical pages in the pool, mapped nowhere
  std::uint64_t maps = 0;            // cuMemMap calls modelled
  std::uint64_t unmaps = 0;          // cuMemUnmap calls modelled (steals + trim)
  std::uint64_t steals = 0;          // idle pages unmapped to be mapped elsewhere
  std::uint64_t device_allocs = 0;   // cuMemCreate: upstream allocate of one page
  std::uint64_t device_frees = 0;    // cuMemRelease: upstream deallocate of one page (trim)
  std::uint64_t failed_requests = 0;
  std::uint64_t ranges = 0;          // synthetic ranges reserved (one per stream and pool used)
};

namespace detail {
namespace vmm {
namespace bi = boost::intrusive;
using FreeHook = bi::set_member_hook<bi::link_mode<bi::normal_link>, bi::optimize_size<true>>;
using LiveHook = bi::unordered_set_member_hook<bi::link_mode<bi::normal_link>>;

struct Range;

// One block of a range, free or live.
struct Block {
  FreeHook free_hook;  // in its pool's tree while free
  LiveHook live_hook;  // in the live table while allocated
  std::uintptr_t ptr = 0;
  std::uint64_t size = 0;
  Block* prev = nullptr;  // neighbours in the same range, in address order
  Block* next = nullptr;
  Range* range = nullptr;
  std::uintptr_t user_ptr = 0;  // the pointer handed out (above ptr only for over-aligned requests)
  std::uint64_t requested = 0;  // the size asked for
  StreamId stream = 0;
  bool allocated = false;
};

// One virtual page. All-zero bytes mean unmapped, unused, off the idle queue (the table is calloc'ed).
struct Page {
  void* physical;              // the upstream page mapped here, or nullptr
  std::uint32_t live_blocks;   // live blocks overlapping this page
  std::uint32_t idle_since;    // the idle clock when live_blocks last fell to 0 (wraps; compared for equality)
  bool queued;                 // has an entry (maybe stale) in the idle queue
};

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

// One synthetic virtual range of a (stream, pool).
struct Range {
  std::uintptr_t base = 0;
  std::uint64_t size = 0;
  StreamId stream = 0;
  bool small = false;
  Block* head = nullptr;  // the block at base
  std::unique_ptr<Page[], FreeDeleter> pages;  // size / page_size entries; untouched ones stay unbacked
  std::uint64_t mapped_end = 0;  // every page at or above this index has never been mapped
};

// An entry of the idle queue: a page and its idle_since when queued. If the page has been in use since,
// the entry is stale: a live page is dropped, a page idle again is queued anew at the back.
struct IdleEntry {
  Range* range;
  std::uint64_t page;
  std::uint32_t idle_since;
};

// A FIFO ring of IdleEntry, so that the page idle longest is stolen first (least recently used: the
// pages a training step frees last are the ones its next step wants back first). push_back never calls
// the heap: reserve() is called when a physical page is made, and each page has at most one entry.
class IdleQueue {
 public:
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return ring_.size(); }
  const IdleEntry& operator[](std::size_t i) const noexcept { return ring_[(head_ + i) & (ring_.size() - 1)]; }
  void push_back(const IdleEntry& entry) noexcept {
    ring_[(head_ + size_) & (ring_.size() - 1)] = entry;
    ++size_;
  }
  IdleEntry pop_front() noexcept {
    const IdleEntry entry = ring_[head_];
    head_ = (head_ + 1) & (ring_.size() - 1);
    --size_;
    return entry;
  }
  void clear() noexcept { head_ = size_ = 0; }
  // Room for `entries`, in a power-of-two ring; throws std::bad_alloc.
  void reserve(std::size_t entries) {
    if (entries <= ring_.size()) return;
    std::vector<IdleEntry> bigger(std::bit_ceil(std::max<std::size_t>(entries, 64)));
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = (*this)[i];
    ring_.swap(bigger);
    head_ = 0;
  }

 private:
  std::vector<IdleEntry> ring_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

using Key = detail::BlockKey;
using detail::ByStreamSizeAddress;
using detail::PointerEqual;
using detail::PointerHash;

using FreeTree = bi::rbtree<Block, bi::member_hook<Block, FreeHook, &Block::free_hook>, bi::compare<ByStreamSizeAddress>,
                            bi::constant_time_size<false>>;
using LiveTable = bi::unordered_set<Block, bi::member_hook<Block, LiveHook, &Block::live_hook>, bi::hash<PointerHash>,
                                    bi::equal<PointerEqual>, bi::power_2_buckets<true>, bi::constant_time_size<true>>;
}  // namespace vmm
}  // namespace detail

class CachingVmmAllocator final {
 public:
  static constexpr std::string_view kName = "caching.vmm";
  static constexpr std::string_view kDescription =
      "best fit in a virtual range per stream and pool, physical pages mapped only under live blocks, idle "
      "pages stolen before the device is asked (GMLake-style stitching, CUDA cuMemMap); simulated upstreams only";
  static std::span<const OptionSpec> option_specs();

  static constexpr std::uint64_t kMinBlockSize = CachingPytorchAllocator::kMinBlockSize;
  // cuMemGetAllocationGranularity on NVIDIA GPUs is 2 MiB (the usual value; PyTorch's expandable
  // segments map 2 MiB pages too); below 64 KiB page tables would dominate the model.
  static constexpr std::uint64_t kDefaultPageSize = std::uint64_t{2} << 20;
  static constexpr std::uint64_t kMinPageSize = std::uint64_t{64} << 10;

  CachingVmmAllocator(const Options& options, Upstream& upstream);
  ~CachingVmmAllocator();
  CachingVmmAllocator(const CachingVmmAllocator&) = delete;
  CachingVmmAllocator& operator=(const CachingVmmAllocator&) = delete;

  void* allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept {
    // Fast path: plain alignment, a node for the split, a free block of the stream, its pages mapped.
    // `size - 1` sends 0 and sizes whose rounding could overflow to the slow path.
    if (size - 1 < kMaxRequest && alignment <= kMinBlockSize && nodes_.live() < nodes_.capacity()) [[likely]] {
      const std::uint64_t bytes = round_size(size);
      detail::vmm::FreeTree& tree = tree_for(bytes);
      if (detail::vmm::Block* block = take_free_block(tree, stream, bytes)) [[likely]] {
        detail::vmm::Block& out = split_front(tree, *block, bytes);
        if (touch_pages(out)) [[likely]] return hand_out(out, size, alignment);
        return back_with_pages(out, size, alignment);
      }
    }
    return allocate_slow(size, alignment, stream);
  }

  void deallocate(void* p, std::size_t /*size*/, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    const auto it = live_.find(address_of(p), detail::vmm::PointerHash{}, detail::vmm::PointerEqual{});
    detail::vmm::Block& block = *it;  // p came from allocate(): it is live (allocator.h contract)
    live_.erase(it);
    stats_.on_deallocate(block.requested, block.size);
    untouch_pages(block);
    free_block(block);
  }

  AllocatorStats stats() const { return stats_.snapshot(largest_free_block()); }
  std::string check_invariants() const;
  // Unmaps every idle page and returns every unmapped physical page upstream.
  void trim() noexcept;

  VmmMemoryStats vmm_stats() const;
  std::uint64_t page_size() const { return page_size_; }
  std::uint64_t small_size() const { return small_size_; }
  // The synthetic range reserved per (stream, pool): 1.125 x the upstream capacity, whole pages.
  std::uint64_t range_size() const { return range_size_; }
  std::uint64_t round_size(std::uint64_t size) const noexcept {
    return size < kMinBlockSize ? kMinBlockSize : align_up(size, kMinBlockSize);
  }

  // Introspection for tests (not for hot paths).
  struct BlockInfo {
    std::uintptr_t address;
    std::uint64_t size;
    bool allocated;
  };
  struct RangeInfo {
    std::uintptr_t address;
    std::uint64_t size;
    StreamId stream;
    bool small;
    std::vector<BlockInfo> blocks;  // in address order
  };
  std::vector<RangeInfo> snapshot() const;  // in order of creation (= address)
  // Whether the virtual page holding `address` (inside some range) has a physical page mapped.
  bool is_mapped(std::uintptr_t address) const;

 private:
  static constexpr std::uint64_t kMaxRequest = std::uint64_t{1} << 62;

  detail::vmm::FreeTree& tree_for(std::uint64_t bytes) noexcept { return bytes <= small_size_ ? small_ : large_; }
  detail::vmm::FreeTree& tree_of(const detail::vmm::Block& block) noexcept { return block.range->small ? small_ : large_; }

  // Best fit of the stream: the lower bound of (stream, bytes); removed from the tree.
  static detail::vmm::Block* take_free_block(detail::vmm::FreeTree& tree, StreamId stream, std::uint64_t bytes) noexcept {
    const auto it = tree.lower_bound(detail::vmm::Key{stream, bytes, 0}, detail::vmm::ByStreamSizeAddress{});
    if (it == tree.end() || it->stream != stream) return nullptr;
    detail::vmm::Block* block = &*it;
    tree.erase(it);
    return block;
  }

  // The front `bytes` of `block` (out of the tree) for the caller; any remainder goes back to the tree.
  // Needs one free node when there is a remainder (the caller checked).
  detail::vmm::Block& split_front(detail::vmm::FreeTree& tree, detail::vmm::Block& block, std::uint64_t bytes) noexcept {
    if (block.size == bytes) return block;
    detail::vmm::Block* out = nodes_.make();
    out->ptr = block.ptr;
    out->size = bytes;
    out->prev = block.prev;
    out->next = &block;
    out->range = block.range;
    out->stream = block.stream;
    if (out->prev != nullptr) {
      out->prev->next = out;
    } else {
      block.range->head = out;
    }
    block.prev = out;
    block.ptr += bytes;
    block.size -= bytes;
    tree.insert_equal(block);
    return *out;
  }

  std::uint64_t first_page(const detail::vmm::Block& b) const noexcept { return (b.ptr - b.range->base) >> page_shift_; }
  std::uint64_t last_page(const detail::vmm::Block& b) const noexcept {
    return (b.ptr + b.size - 1 - b.range->base) >> page_shift_;
  }

  // Counts `block` in every page it overlaps; true when all of them are mapped already.
  bool touch_pages(const detail::vmm::Block& block) noexcept {
    detail::vmm::Page* pages = block.range->pages.get();
    bool all_mapped = true;
    for (std::uint64_t i = first_page(block), last = last_page(block); i <= last; ++i) {
      detail::vmm::Page& page = pages[i];
      if (page.live_blocks++ == 0) {
        ++live_pages_;
        all_mapped &= page.physical != nullptr;
      }
    }
    return all_mapped;
  }

  // Undoes touch_pages; a mapped page left without live blocks stays mapped and joins the idle queue,
  // whose capacity (>= physical pages) was reserved when the page was made.
  void untouch_pages(const detail::vmm::Block& block) noexcept {
    detail::vmm::Page* pages = block.range->pages.get();
    for (std::uint64_t i = first_page(block), last = last_page(block); i <= last; ++i) {
      detail::vmm::Page& page = pages[i];
      if (--page.live_blocks == 0) {
        --live_pages_;
        page.idle_since = ++idle_clock_;
        if (page.physical != nullptr && !page.queued) {
          page.queued = true;
          idle_queue_.push_back({block.range, i, page.idle_since});
        }
      }
    }
  }

  void* hand_out(detail::vmm::Block& block, std::uint64_t size, std::uint64_t alignment) noexcept {
    block.allocated = true;
    block.requested = size;
    block.user_ptr = alignment <= kMinBlockSize ? block.ptr : align_up(block.ptr, alignment);
    if (live_.size() >= live_buckets_.size()) [[unlikely]] detail::grow_live_table(live_, live_buckets_);
    live_.insert(block);
    stats_.on_allocate(size, block.size);
    return pointer_at(block.user_ptr);
  }

  // Merges `block` (out of the live table, pages untouched) with free neighbours and files it as free.
  void free_block(detail::vmm::Block& block) noexcept {
    detail::vmm::FreeTree& tree = tree_of(block);
    block.allocated = false;
    if (detail::vmm::Block* src = block.prev; src != nullptr && !src->allocated) {
      tree.erase(tree.iterator_to(*src));
      block.ptr = src->ptr;
      block.prev = src->prev;
      if (block.prev != nullptr) {
        block.prev->next = &block;
      } else {
        block.range->head = &block;
      }
      block.size += src->size;
      nodes_.recycle(src);
    }
    if (detail::vmm::Block* src = block.next; src != nullptr && !src->allocated) {
      tree.erase(tree.iterator_to(*src));
      block.next = src->next;
      if (block.next != nullptr) block.next->prev = &block;
      block.size += src->size;
      nodes_.recycle(src);
    }
    tree.insert_equal(block);
  }

  void* allocate_slow(std::size_t size, std::size_t alignment, StreamId stream) noexcept;
  // A touched block with unmapped pages: map them, or undo and fail.
  void* back_with_pages(detail::vmm::Block& block, std::uint64_t size, std::uint64_t alignment) noexcept;
  // A free block of the stream that fits `bytes` with every page under it mapped, among the first few
  // from the best fit up; nullptr if none.
  detail::vmm::Block* mapped_fit(detail::vmm::FreeTree& tree, StreamId stream, std::uint64_t bytes) const noexcept;
  bool map_missing_pages(detail::vmm::Block& block) noexcept;
  bool steal_idle_page() noexcept;  // the page idle longest; false when none is idle
  bool make_physical_page() noexcept;
  detail::vmm::Range* add_range(StreamId stream, bool small) noexcept;
  std::uint64_t largest_free_block() const noexcept {
    return (physical_pages_.current - live_pages_) << page_shift_;
  }
  void* fail() noexcept;

  Upstream& upstream_;
  std::uint64_t page_size_ = kDefaultPageSize;
  unsigned page_shift_ = 0;
  std::uint64_t small_size_ = CachingPytorchAllocator::kSmallSize;
  std::uint64_t range_size_ = 0;
  SyntheticRangeCursor range_cursor_;
  std::vector<std::unique_ptr<detail::vmm::Range>> ranges_;
  // Declared before the structures that link them, so nodes outlive trees and table.
  detail::NodePool<detail::vmm::Block> nodes_;
  std::vector<detail::vmm::LiveTable::bucket_type> live_buckets_;
  detail::vmm::LiveTable live_;
  detail::vmm::FreeTree small_;
  detail::vmm::FreeTree large_;
  detail::vmm::IdleQueue idle_queue_;               // capacity >= physical pages
  std::uint32_t idle_clock_ = 0;                    // counts pages falling idle
  std::vector<void*> unmapped_pool_;                // capacity >= physical pages
  std::uint64_t live_pages_ = 0;  // pages with live_blocks > 0
  Gauge physical_pages_;
  Gauge mapped_pages_;
  std::uint64_t maps_ = 0;
  std::uint64_t unmaps_ = 0;
  std::uint64_t steals_ = 0;
  StatsRecorder stats_;
};

}  // namespace tiermark
