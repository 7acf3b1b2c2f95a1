// The cold half of CachingBfcAllocator: construction, the miss path (over-aligned requests, region
// growth with back-off, garbage collection), trim(), TF's counters and the invariant checker. The hot
// paths (search, split, free with coalescing) are inline in the header.
#include "allocators/caching_bfc_allocator.h"

#include <algorithm>
#include <limits>
#include <new>
#include <vector>

namespace tiermark {
namespace {

const std::vector<OptionSpec> kBfcOptions = {
    // true: BFCAllocator::Options::allow_growth defaults to true. TF's GPU device overrides it with
    // GPUOptions.allow_growth (false unless set, or TF_FORCE_GPU_ALLOW_GROWTH): allow_growth=false
    // reproduces that.
    {"allow_growth", OptionType::kBool, "true",
     "grow by regions of 2MiB, 4MiB, 8MiB...; false: one region of memory_limit taken when the allocator is built"},
    {"memory_limit", OptionType::kSize, "",
     "most bytes the regions may hold in total (TF total_memory); unset: the upstream's capacity, or unlimited "
     "with allow_growth when the upstream has none"},
    // true: TF's GPU BFC allocator turns it on unless TF_ENABLE_GPU_GARBAGE_COLLECTION=false
    // (GPUBFCAllocator::GetGarbageCollectionValue); the bare BFCAllocator::Options default is false.
    {"garbage_collection", OptionType::kBool, "true",
     "on a miss growth cannot serve, return wholly free regions upstream and grow again"},
    // 0: TF's default (BFCAllocator::Options::fragmentation_fraction), which means 128 MiB.
    {"fragmentation_fraction", OptionType::kNumber, "0",
     "split a chunk whose slack is at least this fraction of memory_limit (0: at least 128MiB), besides chunks "
     "at least twice the request"},
};

// Over-aligned requests probe at most this many chunks in best-fit order before taking the smallest
// chunk that fits whatever its address (this project's choice, as in pool.coalescing).
constexpr unsigned kAlignedProbes = 8;

}  // namespace

std::span<const OptionSpec> CachingBfcAllocator::option_specs() { return kBfcOptions; }

CachingBfcAllocator::CachingBfcAllocator(const Options& options, Upstream& upstream)
    : upstream_(upstream),
      allow_growth_(options.flag("allow_growth")),
      garbage_collection_(options.flag("garbage_collection")),
      limit_(options.has("memory_limit") ? options.size("memory_limit") : upstream.capacity()) {
  if (options.has("memory_limit") && (limit_ < kMinAllocationSize || limit_ > kMaxRequest)) {
    options.reject("memory_limit", "must be from 256B to 4EiB");
  }
  if (!allow_growth_ && limit_ == 0) {
    options.reject("memory_limit", "must be set with allow_growth=false when the upstream has no capacity");
  }
  const double fraction = options.number("fragmentation_fraction");
  if (fraction > 1.0) options.reject("fragmentation_fraction", "must be from 0 to 1");
  if (fraction > 0.0) {
    if (limit_ == 0) options.reject("fragmentation_fraction", "needs a memory limit (memory_limit or a capacity)");
    max_internal_fragmentation_ = static_cast<std::uint64_t>(fraction * static_cast<double>(limit_));
  }
  // TF constructor: 2 MiB, or the whole limit if smaller; without growth the whole limit.
  curr_region_bytes_ = rounded_bytes(allow_growth_ && (limit_ == 0 || limit_ > kInitialRegion) ? kInitialRegion : limit_);
  if (!nodes_.reserve(decltype(nodes_)::kMinSlab)) throw std::bad_alloc();
  regions_.reserve(8);
  if (!allow_growth_) {
    const std::uint64_t bytes = align_down(limit_, kMinAllocationSize);
    void* base = upstream_.allocate(bytes, kMinAllocationSize);
    if (base == nullptr) {
      options.reject("memory_limit", "upstream '" + upstream_.config() + "' refused the region of " +
                                         std::to_string(bytes) + " bytes");
    }
    add_region(address_of(base), bytes);
  }
}

CachingBfcAllocator::~CachingBfcAllocator() {
  // As TF's destructor: regions go back even if chunks in them are still in use (leaked by their owner).
  for (const Range& region : regions_) upstream_.deallocate(pointer_at(region.address), region.size, kMinAllocationSize);
}

void* CachingBfcAllocator::allocate_slow(std::size_t size, std::size_t alignment) noexcept {
  if (size - 1 >= kMaxRequest || alignment > kMaxAlignment) {
    stats_.on_failure();
    return nullptr;
  }
  // Up to three new nodes: a new region's chunk, an alignment pad and a split tail.
  if (!nodes_.reserve(nodes_.live() + 3)) {
    stats_.on_failure();
    return nullptr;
  }
  const std::uint64_t bytes = rounded_bytes(size);
  const bool over_aligned = alignment > kMinAllocationSize;
  // Chunks are 256-aligned, so a chunk of bytes + alignment - 256 always fits once its front is padded.
  const std::uint64_t need = over_aligned ? bytes + alignment - kMinAllocationSize : bytes;
  const auto find = [&]() noexcept { return over_aligned ? find_aligned(bytes, alignment) : find_chunk(bytes); };
  // TF AllocateRawInternal: search; extend and search; free whole regions, extend and search.
  detail::BfcChunk* chunk = find();
  if (chunk == nullptr && extend(need)) chunk = find();
  if (chunk == nullptr && deallocate_free_regions(need) && extend(need)) chunk = find();
  if (chunk == nullptr) {
    stats_.on_failure();
    return nullptr;
  }
  remove_from_bin(*chunk);
  if (over_aligned) {
    const std::uintptr_t start = align_up(chunk->address, alignment);
    if (start != chunk->address) {
      // The pad stays free in front (its previous neighbour is in use: chunks are coalesced), and
      // the rest is handed out as if it had been found.
      split(*chunk, start - chunk->address);
      detail::BfcChunk* rest = chunk->next;
      remove_from_bin(*rest);
      insert_into_bin(*chunk);
      chunk = rest;
    }
  }
  return hand_out(*chunk, size, bytes);
}

detail::BfcChunk* CachingBfcAllocator::find_aligned(std::uint64_t bytes, std::uint64_t alignment) noexcept {
  unsigned probes = 0;
  for (unsigned b = bin_for_size(bytes); b < kNumBins && probes < kAlignedProbes; ++b) {
    if (((nonempty_bins_ >> b) & 1u) == 0) continue;
    for (auto it = bins_[b].lower_bound(bytes, detail::BfcBySizeThenAddress{});
         it != bins_[b].end() && probes < kAlignedProbes; ++it, ++probes) {
      if (align_up(it->address, alignment) + bytes <= it->end()) return &*it;
    }
  }
  return find_chunk(bytes + alignment - kMinAllocationSize);
}

bool CachingBfcAllocator::extend(std::uint64_t bytes) noexcept {
  const std::uint64_t reserved = stats_.raw().reserved_bytes.current;
  const std::uint64_t available =
      limit_ == 0 ? std::numeric_limits<std::uint64_t>::max() : align_down(limit_ - reserved, kMinAllocationSize);
  if (bytes > available) return false;
  // Double the region size until it covers the request; a region so enlarged is not doubled again
  // after it is taken (TF increased_allocation).
  bool increased = false;
  while (bytes > curr_region_bytes_) {
    curr_region_bytes_ *= 2;
    increased = true;
  }
  try {
    regions_.reserve(regions_.size() + 1);  // so that add_region() cannot throw once upstream said yes
  } catch (const std::bad_alloc&) {
    return false;
  }
  std::uint64_t size = std::min(curr_region_bytes_, available);
  void* base = upstream_.allocate(size, kMinAllocationSize);
  if (base == nullptr && !started_backpedal_) {
    // TF backs off only once in the allocator's life; later refusals fail at once.
    started_backpedal_ = true;
    while (base == nullptr) {
      // x0.9 in integers (TF multiplies by a float), rounded up to 256 B. TF loops forever once the
      // size stops shrinking (at a few KiB); here that ends the back-off.
      const std::uint64_t smaller = rounded_bytes(size / 10 * 9 + size % 10 * 9 / 10);
      if (smaller < bytes || smaller >= size) break;
      size = smaller;
      base = upstream_.allocate(size, kMinAllocationSize);
    }
  }
  if (base == nullptr) return false;
  if (!increased && curr_region_bytes_ <= kMaxRequest) curr_region_bytes_ *= 2;
  add_region(address_of(base), size);
  return true;
}

void CachingBfcAllocator::add_region(std::uintptr_t base, std::uint64_t bytes) noexcept {
  const auto at = std::upper_bound(regions_.begin(), regions_.end(), base,
                                   [](std::uintptr_t a, const Range& r) { return a < r.address; });
  regions_.insert(at, Range{base, bytes});  // capacity reserved by the caller: cannot throw
  stats_.on_reserve(bytes);
  detail::BfcChunk* chunk = nodes_.make(base, bytes);  // capacity reserved by the caller
  by_address_.insert_equal(*chunk);
  insert_into_bin(*chunk);
}

bool CachingBfcAllocator::region_is_free(const Range& region) const noexcept {
  const auto it = by_address_.find(region.address, detail::BfcByAddress{});
  return it != by_address_.end() && !it->in_use && it->size == region.size;
}

bool CachingBfcAllocator::deallocate_free_regions(std::uint64_t bytes) noexcept {
  if (!garbage_collection_) return false;
  std::uint64_t free_region_bytes = 0;
  for (const Range& region : regions_) {
    if (region_is_free(region)) free_region_bytes += region.size;
  }
  if (free_region_bytes == 0) return false;
  // TF's rough check that freeing could make room at all.
  if (limit_ != 0 && bytes > limit_ - stats_.raw().reserved_bytes.current + free_region_bytes) return false;
  trim();
  return true;
}

void CachingBfcAllocator::release_region(std::size_t index) noexcept {
  const Range region = regions_[index];
  detail::BfcChunk& chunk = *by_address_.find(region.address, detail::BfcByAddress{});
  remove_from_bin(chunk);
  by_address_.erase(by_address_.iterator_to(chunk));
  nodes_.recycle(&chunk);
  upstream_.deallocate(pointer_at(region.address), region.size, kMinAllocationSize);
  regions_.erase(regions_.begin() + static_cast<std::ptrdiff_t>(index));
  stats_.on_release(region.size);
}

void CachingBfcAllocator::trim() {
  for (std::size_t i = regions_.size(); i-- > 0;) {
    if (region_is_free(regions_[i])) release_region(i);
  }
}

BfcMemoryStats CachingBfcAllocator::memory_stats() const {
  const AllocatorStats s = stats();
  BfcMemoryStats out;
  out.num_allocs = s.allocs;
  out.bytes_in_use = s.allocated_bytes.current;
  out.peak_bytes_in_use = s.allocated_bytes.peak;
  out.largest_alloc_size = largest_alloc_size_;
  out.bytes_limit = limit_;
  out.bytes_reserved = s.reserved_bytes.current;
  out.peak_bytes_reserved = s.reserved_bytes.peak;
  out.largest_free_block_bytes = s.largest_free_block;
  out.num_regions = regions_.size();
  out.fragmentation = s.external_fragmentation();
  return out;
}

std::vector<CachingBfcAllocator::ChunkInfo> CachingBfcAllocator::chunks() const {
  std::vector<ChunkInfo> out;
  for (const detail::BfcChunk& chunk : by_address_) out.push_back({chunk.address, chunk.size, chunk.in_use});
  return out;
}

std::string CachingBfcAllocator::check_invariants() const {
  const auto broken = [](const std::string& why) { return "caching.bfc: " + why; };
  constexpr std::uint64_t g = kMinAllocationSize;
  const AllocatorStats& s = stats_.raw();

  std::uint64_t region_bytes = 0;
  std::uint64_t chunk_count = 0;
  std::uint64_t free_count = 0;
  std::uint64_t in_use_count = 0;
  std::uint64_t in_use_bytes = 0;
  for (std::size_t i = 0; i < regions_.size(); ++i) {
    const Range& region = regions_[i];
    if (region.size == 0 || region.size % g != 0 || region.address % g != 0) {
      return broken("region base or size is not a multiple of 256");
    }
    if (i > 0 && regions_[i - 1].end() > region.address) return broken("regions out of order or overlapping");
    region_bytes += region.size;
    const auto it = by_address_.find(region.address, detail::BfcByAddress{});
    if (it == by_address_.end()) return broken("no chunk starts at a region's base");
    if (it->prev != nullptr) return broken("a region's first chunk has a previous neighbour");
    std::uintptr_t at = region.address;
    for (const detail::BfcChunk* chunk = &*it; chunk != nullptr; chunk = chunk->next) {
      ++chunk_count;
      if (chunk->address != at) return broken("chunks do not tile their region (gap or overlap)");
      if (chunk->size == 0 || chunk->size % g != 0) return broken("chunk size is not a positive multiple of 256");
      if (chunk->end() > region.end()) return broken("chunk runs past its region");
      if (chunk->next != nullptr && chunk->next->prev != chunk) return broken("chunk links are not symmetric");
      if (chunk->in_use) {
        ++in_use_count;
        in_use_bytes += chunk->size;
      } else {
        ++free_count;
        if (chunk->next != nullptr && !chunk->next->in_use) return broken("two adjacent free chunks (not coalesced)");
        if (chunk->bin != bin_for_size(chunk->size)) return broken("free chunk filed under the wrong bin");
        const detail::BfcBin& bin = bins_[chunk->bin];
        const auto found = bin.find(*chunk);
        if (found == bin.end() || &*found != chunk) return broken("free chunk missing from its bin");
      }
      at = chunk->end();
      if (at > region.end()) return broken("chunk runs past its region");
    }
    if (at != region.end()) return broken("chunks do not cover their region");
  }
  if (limit_ != 0 && region_bytes > limit_) return broken("regions exceed the memory limit");
  if (s.reserved_bytes.current != region_bytes) return broken("reserved bytes differ from the sum of the regions");

  std::uint64_t tree_count = 0;
  for (const detail::BfcChunk& chunk : by_address_) {
    ++tree_count;
    (void)chunk;
  }
  if (tree_count != chunk_count) return broken("the address tree holds chunks outside every region");

  std::uint64_t binned = 0;
  for (unsigned b = 0; b < kNumBins; ++b) {
    if (bins_[b].empty() == (((nonempty_bins_ >> b) & 1u) != 0)) return broken("stale non-empty-bin mask");
    const detail::BfcChunk* previous = nullptr;
    for (const detail::BfcChunk& chunk : bins_[b]) {
      ++binned;
      if (chunk.in_use) return broken("a chunk in use sits in a bin");
      if (bin_for_size(chunk.size) != b) return broken("bin holds a chunk of another bin's size");
      if (previous != nullptr && !detail::BfcBySizeThenAddress{}(*previous, chunk)) {
        return broken("bin out of (size, address) order");
      }
      previous = &chunk;
    }
  }
  if (binned != free_count) return broken("bins hold a different number of chunks than are free");
  if (nonempty_bins_ >> kNumBins != 0) return broken("non-empty-bin mask names a bin that does not exist");

  if (s.allocated_bytes.current != in_use_bytes) return broken("allocated bytes differ from the chunks in use");
  if (in_use_count != live_chunks_ || live_chunks_ != s.allocs - s.frees) {
    return broken("chunks in use differ from allocs - frees");
  }
  if (s.requested_bytes.current > s.allocated_bytes.current) return broken("requested exceeds allocated");
  if (s.allocated_bytes.current > s.reserved_bytes.current) return broken("allocated exceeds reserved");
  if (nodes_.live() != chunk_count) return broken("live nodes differ from chunks");
  if (nodes_.live() + nodes_.count_free() != nodes_.capacity()) return broken("node pool free list lost or gained nodes");
  if (curr_region_bytes_ == 0 || curr_region_bytes_ % g != 0) return broken("next region size is not a multiple of 256");
  return "";
}

}  // namespace tiermark
