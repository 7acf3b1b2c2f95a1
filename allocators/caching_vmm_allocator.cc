// The cold half of CachingVmmAllocator: options, the slow path (over-aligned requests, a stream's first
// range), finding physical pages for a block (unmapped pool, stealing idle pages, making new ones), trim,
// statistics and the invariant checker. The hot path (round, best fit, split, count pages, merge) is
// inline in the header.
#include "allocators/caching_vmm_allocator.h"

#include <algorithm>
#include <new>
#include <set>
#include <utility>

namespace tiermark {
namespace {

using detail::vmm::Block;
using detail::vmm::FreeTree;
using detail::vmm::IdleEntry;
using detail::vmm::Page;
using detail::vmm::Range;

const std::vector<OptionSpec> kVmmOptions = {
    {"page_size", OptionType::kSize, "2MiB",
     "physical page size, the unit of mapping (cuMemGetAllocationGranularity, 2 MiB on NVIDIA GPUs); a power of two "
     "from 64KiB to 1GiB"},
    {"small_size", OptionType::kSize, "1MiB",
     "requests rounded to at most this go to the small pool, the rest to the large pool, each with its own range "
     "per stream (PyTorch kSmallSize = 1 MiB); a multiple of 512B, at most 1GiB"},
};

// Upstream pages are asked for at the block quantum; only their count matters, never their addresses.
constexpr std::size_t kPageAlignment = CachingVmmAllocator::kMinBlockSize;
// This project's choice: enough for a thousand live blocks before the first rehash (as caching.pytorch).
constexpr std::size_t kInitialBuckets = 1024;
constexpr std::uint64_t kMaxPageSize = std::uint64_t{1} << 30;
constexpr std::uint64_t kMaxSmallSize = std::uint64_t{1} << 30;
// Ranges that must fit the synthetic space: two streams of two pools (as caching.pytorch's check).
constexpr std::uint64_t kRangesThatMustFit = 4;
// This project's choice: free blocks (best fit first, then larger) examined for one whose pages are all
// mapped when the best fit's are not; enough to find the holes a training step leaves, cheap next to a map.
constexpr std::size_t kMappedFitCandidates = 16;

}  // namespace

std::span<const OptionSpec> CachingVmmAllocator::option_specs() { return kVmmOptions; }

CachingVmmAllocator::CachingVmmAllocator(const Options& options, Upstream& upstream)
    : upstream_(upstream),
      live_buckets_(kInitialBuckets),
      live_(detail::vmm::LiveTable::bucket_traits(live_buckets_.data(), live_buckets_.size())) {
  if (upstream_.touchable()) {
    options.reject("page_size", "caching.vmm needs a simulated upstream ('" + upstream_.config() +
                                    "' is host memory): remapping host pages under a reserved range would need "
                                    "memfd_create + mmap(MAP_FIXED), which tiermark's Upstream does not offer");
  }
  page_size_ = options.size("page_size");
  if (!is_power_of_two(page_size_) || page_size_ < kMinPageSize || page_size_ > kMaxPageSize) {
    options.reject("page_size", "must be a power of two from 64KiB to 1GiB");
  }
  page_shift_ = log2_floor(page_size_);
  small_size_ = options.size("small_size");
  if (small_size_ % kMinBlockSize != 0 || small_size_ > kMaxSmallSize) {
    options.reject("small_size", "must be a multiple of 512B and at most 1GiB");
  }
  range_size_ = align_up(synthetic_range_bytes(upstream_.capacity()), page_size_);
  if (!synthetic_space_holds(range_size_, kRangesThatMustFit)) {
    options.reject("page_size", "the upstream capacity is too large for the synthetic address space");
  }
  if (!nodes_.reserve(decltype(nodes_)::kMinSlab)) throw std::bad_alloc();
}

CachingVmmAllocator::~CachingVmmAllocator() {
  // Physical pages go back even under blocks still live (their owner leaked them).
  live_.clear();
  small_.clear();
  large_.clear();
  for (const auto& range : ranges_) {
    for (std::uint64_t i = 0; i < range->mapped_end; ++i) {
      if (void* p = range->pages[i].physical) upstream_.deallocate(p, page_size_, kPageAlignment);
    }
  }
  for (void* p : unmapped_pool_) upstream_.deallocate(p, page_size_, kPageAlignment);
}

void* CachingVmmAllocator::fail() noexcept {
  stats_.on_failure();
  return nullptr;
}

void* CachingVmmAllocator::allocate_slow(std::size_t size, std::size_t alignment, StreamId stream) noexcept {
  if (size - 1 >= kMaxRequest || alignment > kMaxRequest || !is_power_of_two(alignment)) return fail();
  if (!nodes_.reserve(nodes_.live() + 1)) return fail();  // the split
  const std::uint64_t bytes = round_size(alignment <= kMinBlockSize ? size : size + alignment - kMinBlockSize);
  if (bytes > range_size_) return fail();
  FreeTree& tree = tree_for(bytes);
  const bool small = &tree == &small_;
  Block* block = take_free_block(tree, stream, bytes);
  if (block == nullptr) {
    // A range is made on first use only; once it exists, a miss means its free space is too fragmented.
    const bool exists = std::any_of(ranges_.begin(), ranges_.end(), [&](const std::unique_ptr<Range>& r) {
      return r->stream == stream && r->small == small;
    });
    if (exists || add_range(stream, small) == nullptr) return fail();
    block = take_free_block(tree, stream, bytes);  // the new range is one free block of range_size_ >= bytes
  }
  Block& out = split_front(tree, *block, bytes);
  if (touch_pages(out)) return hand_out(out, size, alignment);
  return back_with_pages(out, size, alignment);
}

void* CachingVmmAllocator::back_with_pages(Block& block, std::uint64_t size, std::uint64_t alignment) noexcept {
  FreeTree& tree = tree_of(block);
  const std::uint64_t bytes = block.size;
  const StreamId stream = block.stream;
  // The best fit needs pages mapped. Undo the touch exactly (it changed nothing else: a page it made live
  // was idle and queued, and stays so) and put the block back whole, then look for a fit whose pages are
  // all mapped already: a map (and the steal or device call behind it) saved.
  Page* pages = block.range->pages.get();
  for (std::uint64_t i = first_page(block), last = last_page(block); i <= last; ++i) {
    if (--pages[i].live_blocks == 0) --live_pages_;
  }
  free_block(block);
  Block* chosen = mapped_fit(tree, stream, bytes);
  if (chosen != nullptr) {
    tree.erase(tree.iterator_to(*chosen));
  } else {
    chosen = take_free_block(tree, stream, bytes);  // the best fit again
  }
  Block& out = split_front(tree, *chosen, bytes);  // merging above recycled a node
  if (touch_pages(out) || map_missing_pages(out)) return hand_out(out, size, alignment);
  untouch_pages(out);
  free_block(out);
  return fail();
}

Block* CachingVmmAllocator::mapped_fit(FreeTree& tree, StreamId stream, std::uint64_t bytes) const noexcept {
  auto it = tree.lower_bound(detail::vmm::Key{stream, bytes, 0}, detail::vmm::ByStreamSizeAddress{});
  for (std::size_t n = 0; n < kMappedFitCandidates && it != tree.end() && it->stream == stream; ++n, ++it) {
    const Range& range = *it->range;
    const std::uint64_t first = (it->ptr - range.base) >> page_shift_;
    const std::uint64_t last = (it->ptr + bytes - 1 - range.base) >> page_shift_;
    if (last >= range.mapped_end) continue;
    bool mapped = true;
    for (std::uint64_t i = first; i <= last && mapped; ++i) mapped = range.pages[i].physical != nullptr;
    if (mapped) return &*it;
  }
  return nullptr;
}

bool CachingVmmAllocator::map_missing_pages(Block& block) noexcept {
  Range& range = *block.range;
  const std::uint64_t first = first_page(block);
  const std::uint64_t last = last_page(block);
  std::uint64_t missing = 0;
  for (std::uint64_t i = first; i <= last; ++i) missing += range.pages[i].physical == nullptr ? 1 : 0;
  // Gather every page first, so that a refusal leaves no half-mapped block. The block's own idle pages
  // have live_blocks >= 1 by now and cannot be stolen.
  std::uint64_t made = 0;
  while (unmapped_pool_.size() < missing) {
    if (steal_idle_page()) continue;
    if (make_physical_page()) {
      ++made;
      continue;
    }
    // Refused: the pages made for this request go back, so a failed request reserves nothing new.
    for (; made > 0; --made) {
      upstream_.deallocate(unmapped_pool_.back(), page_size_, kPageAlignment);
      unmapped_pool_.pop_back();
      stats_.on_release(page_size_);
      physical_pages_.subtract(1);
    }
    return false;
  }
  for (std::uint64_t i = first; i <= last; ++i) {
    Page& page = range.pages[i];
    if (page.physical != nullptr) continue;
    page.physical = unmapped_pool_.back();
    unmapped_pool_.pop_back();
    ++maps_;
    mapped_pages_.add(1);
  }
  range.mapped_end = std::max(range.mapped_end, last + 1);
  return true;
}

bool CachingVmmAllocator::steal_idle_page() noexcept {
  while (idle_queue_.size() > 0) {
    IdleEntry entry = idle_queue_.pop_front();
    Page& page = entry.range->pages[entry.page];
    if (page.live_blocks != 0) {
      page.queued = false;  // in use: queued again when it next falls idle
      continue;
    }
    if (page.idle_since != entry.idle_since) {
      // In use and idle again since it was queued: it is among the youngest idle pages now.
      entry.idle_since = page.idle_since;
      idle_queue_.push_back(entry);
      continue;
    }
    page.queued = false;
    unmapped_pool_.push_back(page.physical);
    page.physical = nullptr;
    ++unmaps_;
    ++steals_;
    mapped_pages_.subtract(1);
    return true;
  }
  return false;
}

bool CachingVmmAllocator::make_physical_page() noexcept {
  // The idle queue and the pool never hold more entries than there are physical pages: room for one more
  // is made here, geometrically, so that free and steal never call the heap.
  const std::uint64_t pages = physical_pages_.current + 1;
  try {
    idle_queue_.reserve(pages);
    if (unmapped_pool_.capacity() < pages) unmapped_pool_.reserve(std::max<std::uint64_t>(pages, 2 * unmapped_pool_.capacity()));
  } catch (const std::bad_alloc&) {
    return false;
  }
  void* p = upstream_.allocate(page_size_, kPageAlignment);
  if (p == nullptr) return false;
  stats_.on_reserve(page_size_);
  physical_pages_.add(1);
  unmapped_pool_.push_back(p);
  return true;
}

Range* CachingVmmAllocator::add_range(StreamId stream, bool small) noexcept {
  if (!nodes_.reserve(nodes_.live() + 2)) return nullptr;  // the range's block and the split of it
  // calloc: all-zero pages are unmapped and unused, and the table's untouched part is never backed.
  std::unique_ptr<Page[], detail::vmm::FreeDeleter> pages(
      static_cast<Page*>(std::calloc(range_size_ >> page_shift_, sizeof(Page))));
  if (pages == nullptr) return nullptr;
  Range* range = nullptr;
  try {
    ranges_.push_back(std::make_unique<Range>());
    range = ranges_.back().get();
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  range->base = range_cursor_.take(range_size_);
  if (range->base == 0) {
    ranges_.pop_back();
    return nullptr;
  }
  range->size = range_size_;
  range->stream = stream;
  range->small = small;
  range->pages = std::move(pages);
  Block* block = nodes_.make();  // reserved above
  block->ptr = range->base;
  block->size = range->size;
  block->range = range;
  block->stream = stream;
  range->head = block;
  (small ? small_ : large_).insert_equal(*block);
  return range;
}

void CachingVmmAllocator::trim() noexcept {
  for (std::size_t i = 0; i < idle_queue_.size(); ++i) {
    Page& page = idle_queue_[i].range->pages[idle_queue_[i].page];
    page.queued = false;
    if (page.live_blocks != 0) continue;
    unmapped_pool_.push_back(page.physical);
    page.physical = nullptr;
    ++unmaps_;
    mapped_pages_.subtract(1);
  }
  idle_queue_.clear();
  for (void* p : unmapped_pool_) {
    upstream_.deallocate(p, page_size_, kPageAlignment);
    stats_.on_release(page_size_);
    physical_pages_.subtract(1);
  }
  unmapped_pool_.clear();
}

VmmMemoryStats CachingVmmAllocator::vmm_stats() const {
  VmmMemoryStats out;
  out.physical_pages = physical_pages_;
  out.mapped_pages = mapped_pages_;
  out.live_pages = live_pages_;
  out.idle_pages = mapped_pages_.current - live_pages_;
  out.unmapped_pages = unmapped_pool_.size();
  out.maps = maps_;
  out.unmaps = unmaps_;
  out.steals = steals_;
  out.device_allocs = stats_.raw().upstream_allocs;
  out.device_frees = stats_.raw().upstream_frees;
  out.failed_requests = stats_.raw().failed_requests;
  out.ranges = ranges_.size();
  return out;
}

std::vector<CachingVmmAllocator::RangeInfo> CachingVmmAllocator::snapshot() const {
  std::vector<RangeInfo> out;
  for (const auto& range : ranges_) {
    RangeInfo info{range->base, range->size, range->stream, range->small, {}};
    for (const Block* b = range->head; b != nullptr; b = b->next) info.blocks.push_back({b->ptr, b->size, b->allocated});
    out.push_back(std::move(info));
  }
  return out;
}

bool CachingVmmAllocator::is_mapped(std::uintptr_t address) const {
  for (const auto& range : ranges_) {
    if (address >= range->base && address - range->base < range->size) {
      const std::uint64_t i = (address - range->base) >> page_shift_;
      return i < range->mapped_end && range->pages[i].physical != nullptr;
    }
  }
  return false;
}

std::string CachingVmmAllocator::check_invariants() const {
  const auto broken = [](const std::string& why) { return "caching.vmm: " + why; };
  std::uint64_t allocated = 0, requested = 0, live = 0, free = 0, blocks = 0;
  std::uint64_t live_pages = 0, mapped = 0, flagged = 0;
  std::set<std::pair<StreamId, bool>> owners;
  std::vector<std::uint32_t> expected;  // live blocks per page, recounted
  for (const auto& owned : ranges_) {
    const Range& range = *owned;
    if (range.size != range_size_ || range.base % kSyntheticRangeAlignment != 0) return broken("a range of the wrong size or base");
    if (!owners.emplace(range.stream, range.small).second) return broken("two ranges for one stream and pool");
    if (range.mapped_end > range.size >> page_shift_) return broken("mapped end beyond the range");
    expected.assign(range.mapped_end, 0);
    const Block* b = range.head;
    if (b == nullptr || b->prev != nullptr || b->ptr != range.base) return broken("range head is not its first block");
    std::uintptr_t at = range.base;
    const Block* previous = nullptr;
    for (; b != nullptr; previous = b, b = b->next) {
      ++blocks;
      if (b->range != &range || b->stream != range.stream) return broken("block with the wrong range or stream");
      if (b->prev != previous) return broken("prev/next links disagree");
      if (b->ptr != at) return broken("blocks do not tile their range (gap or overlap)");
      if (b->size == 0 || b->size % kMinBlockSize != 0) return broken("block size not a positive multiple of 512");
      at += b->size;
      if (at > range.base + range.size) return broken("blocks run past the end of their range");
      const FreeTree& tree = range.small ? small_ : large_;
      if (b->allocated) {
        ++live;
        allocated += b->size;
        requested += b->requested;
        if (b->user_ptr < b->ptr || b->user_ptr + b->requested > b->ptr + b->size) {
          return broken("a live block's handed-out range is outside the block");
        }
        const auto it = live_.find(b->user_ptr, detail::vmm::PointerHash{}, detail::vmm::PointerEqual{});
        if (it == live_.end() || &*it != b) return broken("a live block is missing from the live table");
        if (last_page(*b) >= range.mapped_end) return broken("a live block reaches a page that was never mapped");
        for (std::uint64_t i = first_page(*b); i <= last_page(*b); ++i) ++expected[i];
      } else {
        ++free;
        if (previous != nullptr && !previous->allocated) return broken("two adjacent free blocks (not merged)");
        const auto it = tree.find(detail::vmm::Key{b->stream, b->size, b->ptr}, detail::vmm::ByStreamSizeAddress{});
        if (it == tree.end() || &*it != b) return broken("a free block is missing from its pool's tree");
      }
    }
    if (at != range.base + range.size) return broken("blocks do not cover their range");
    for (std::uint64_t i = 0; i < range.mapped_end; ++i) {
      const Page& page = range.pages[i];
      if (page.live_blocks != expected[i]) return broken("a page's live-block count differs from a recount");
      if (page.live_blocks > 0) {
        ++live_pages;
        if (page.physical == nullptr) return broken("a page under a live block is not mapped");
      }
      if (page.physical != nullptr) {
        ++mapped;
        if (page.live_blocks == 0 && !page.queued) return broken("an idle mapped page is not in the idle queue");
      }
      if (page.queued) {
        ++flagged;
        if (page.physical == nullptr) return broken("an unmapped page is marked as queued");
      }
    }
  }
  std::set<std::pair<const Range*, std::uint64_t>> entries;
  for (std::size_t i = 0; i < idle_queue_.size(); ++i) {
    const IdleEntry& entry = idle_queue_[i];
    if (!entries.emplace(entry.range, entry.page).second) return broken("a page is twice in the idle queue");
    if (entry.page >= entry.range->mapped_end || !entry.range->pages[entry.page].queued) {
      return broken("an idle queue entry for a page not marked as queued");
    }
  }
  if (entries.size() != flagged) return broken("pages marked as queued that are not in the idle queue");
  std::uint64_t in_trees = 0;
  for (const FreeTree* tree : {&small_, &large_}) {
    for (const Block& b : *tree) {
      ++in_trees;
      if (b.allocated) return broken("an allocated block is in a free tree");
      if (b.range->small != (tree == &small_)) return broken("a block is in the other pool's tree");
    }
  }
  if (in_trees != free) return broken("free trees hold blocks outside every range");
  if (live_.size() != live) return broken("live table holds blocks outside every range");
  if (nodes_.live() != blocks) return broken("block nodes in use differ from blocks");
  if (live_buckets_.size() != live_.bucket_count()) return broken("live table bucket array out of step");

  if (live_pages != live_pages_) return broken("live page count differs from a recount");
  if (mapped != mapped_pages_.current) return broken("mapped page count differs from a recount");
  if (maps_ - unmaps_ != mapped) return broken("maps - unmaps differ from mapped pages");
  if (physical_pages_.current != mapped + unmapped_pool_.size()) return broken("physical pages != mapped + unmapped pool");
  if (idle_queue_.capacity() < physical_pages_.current || unmapped_pool_.capacity() < physical_pages_.current) {
    return broken("idle queue or pool capacity below the physical pages (free could call the heap)");
  }
  const AllocatorStats& s = stats_.raw();
  if (s.reserved_bytes.current != physical_pages_.current * page_size_) return broken("reserved bytes != physical pages x page size");
  if (s.upstream_allocs - s.upstream_frees != physical_pages_.current) return broken("device allocs - frees differ from physical pages");
  if (s.allocated_bytes.current != allocated) return broken("allocated bytes differ from the live blocks' sizes");
  if (s.requested_bytes.current != requested) return broken("requested bytes differ from the live blocks' requests");
  if (s.allocs - s.frees != live) return broken("allocs - frees differ from live blocks");
  return "";
}

}  // namespace tiermark
