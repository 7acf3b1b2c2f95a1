// The cold half of CoalescingPoolAllocator: construction, misses (over-aligned requests and growth),
// chunk release, trim() and the invariant checker. The hot paths are inline in the header.
#include "allocators/coalescing_pool_allocator.h"

#include <new>
#include <vector>

namespace tiermark {
namespace {

const std::vector<OptionSpec> kCoalescingOptions = {
    // 256 MiB: this suite's default first chunk. RMM has no fixed default (its older releases took half
    // of the free device memory).
    {"initial", OptionType::kSize, "256MiB",
     "first chunk, taken from upstream when the pool is built (a multiple of alignment; 0: none, the first growth "
     "becomes the floor)"},
    {"maximum", OptionType::kSize, "", "most bytes the pool may reserve in total; unset means unlimited"},
    // 64 B: the seed project's MemoryPool alignment (REFERENCE section 3); RMM uses 256 B
    // (rmm::CUDA_ALLOCATION_ALIGNMENT), which alignment=256 reproduces.
    {"alignment", OptionType::kSize, "64",
     "block granularity and minimum alignment: a power of two from 16B to 1GiB; every block size is a multiple of it"},
    {"release", OptionType::kBool, "true",
     "return a chunk other than the floor (the first) to upstream as soon as it is one whole free block"},
};

// Chunks are requested from upstream aligned to the granularity; beyond 1 GiB that alignment would
// cost more address space than any block gains from it.
constexpr std::uint64_t kMaxGranularity = std::uint64_t{1} << 30;

// Over-aligned requests probe at most this many blocks smaller than the size that always fits (this
// project's choice: enough for the exact holes that matter, bounded so a miss stays cheap).
constexpr unsigned kAlignedProbes = 8;

}  // namespace

std::span<const OptionSpec> CoalescingPoolAllocator::option_specs() { return kCoalescingOptions; }

CoalescingPoolAllocator::CoalescingPoolAllocator(const Options& options, Upstream& upstream)
    : upstream_(upstream),
      granularity_(options.size("alignment")),
      maximum_(options.has("maximum") ? options.size("maximum") : 0),
      release_(options.flag("release")) {
  if (!is_power_of_two(granularity_) || granularity_ < 16 || granularity_ > kMaxGranularity) {
    options.reject("alignment", "must be a power of two from 16B to 1GiB");
  }
  const std::uint64_t initial = options.size("initial");
  if (initial % granularity_ != 0 || initial > kMaxRequest) {
    options.reject("initial", "must be a multiple of alignment (" + std::to_string(granularity_) + " bytes), at most 4EiB");
  }
  if (options.has("maximum") && (maximum_ < granularity_ || maximum_ < initial)) {
    options.reject("maximum", "must be at least alignment and at least initial");
  }
  if (!nodes_.reserve(decltype(nodes_)::kMinSlab)) throw std::bad_alloc();
  chunks_.reserve(8);
  if (initial != 0) {
    void* base = upstream_.allocate(initial, granularity_);
    if (base == nullptr) {
      options.reject("initial", "upstream '" + upstream_.config() + "' refused the first chunk of " +
                                    std::to_string(initial) + " bytes");
    }
    add_chunk(address_of(base), initial);
  }
  refresh_node_limit();
}

CoalescingPoolAllocator::~CoalescingPoolAllocator() {
  // Like RMM's release(): chunks go back even if blocks in them are still live (their owner leaked them).
  for (const Range& chunk : chunks_) upstream_.deallocate(pointer_at(chunk.address), chunk.size, granularity_);
}

void CoalescingPoolAllocator::refresh_node_limit() noexcept {
  node_limit_ = nodes_.capacity() > chunks_.size() ? nodes_.capacity() - chunks_.size() : 0;
}

void* CoalescingPoolAllocator::allocate_slow(std::size_t size, std::size_t alignment) noexcept {
  if (size - 1 >= kMaxRequest || alignment > kMaxRequest) {
    stats_.on_failure();
    return nullptr;
  }
  // Free blocks never outnumber live blocks + chunks (two free neighbours in a chunk always have a live
  // block between them). Room for one more live block and, should the pool grow, one more chunk keeps
  // every later free() off the heap.
  const bool nodes_ok = nodes_.reserve(live_blocks_ + chunks_.size() + 2);
  refresh_node_limit();
  if (!nodes_ok) {
    stats_.on_failure();
    return nullptr;
  }
  const std::uint64_t bytes = align_up(size, granularity_);
  // Any block of bytes + alignment - granularity fits once its front is padded to the alignment
  // (addresses are multiples of the granularity, so the pad is at most alignment - granularity).
  const bool over_aligned = alignment > granularity_;
  const std::uint64_t need = over_aligned ? bytes + alignment - granularity_ : bytes;
  auto it = by_size_.lower_bound(bytes, detail::BySizeThenAddress{});
  detail::FreeBlock* block = nullptr;
  if (over_aligned) {
    // A smaller block may fit too if its address happens to be aligned: an exact hole left by a block
    // of the same size and alignment always does. Probe the first few in best-fit order, then fall
    // back to the smallest block that fits whatever its address, so the search stays O(log n).
    unsigned probes = 0;
    for (; it != by_size_.end() && it->size < need; ++it) {
      if (align_up(it->address, alignment) + bytes <= it->end()) {
        block = &*it;
        break;
      }
      if (++probes == kAlignedProbes) {
        it = by_size_.lower_bound(need, detail::BySizeThenAddress{});
        break;
      }
    }
  }
  if (block == nullptr) block = it != by_size_.end() ? &*it : grow(need);
  if (block == nullptr) {
    stats_.on_failure();
    return nullptr;
  }
  const std::uintptr_t address = over_aligned ? carve_aligned(*block, bytes, alignment) : take_front(*block, bytes);
  ++live_blocks_;
  stats_.on_allocate(size, bytes);
  return pointer_at(address);
}

std::uintptr_t CoalescingPoolAllocator::carve_aligned(detail::FreeBlock& block, std::uint64_t bytes,
                                                      std::uint64_t alignment) noexcept {
  const std::uintptr_t start = align_up(block.address, alignment);
  if (start == block.address) return take_front(block, bytes);
  // The pad keeps the block's node; the tail, if any, gets a node of its own right after it.
  const std::uint64_t pad = start - block.address;
  const std::uint64_t tail = block.size - pad - bytes;
  rekey(block, block.address, pad);
  if (tail != 0) {
    detail::FreeBlock* rest = nodes_.make(start + bytes, tail);  // capacity reserved by allocate_slow()
    by_address_.insert_before(std::next(by_address_.iterator_to(block)), *rest);
    by_size_.insert_equal(*rest);
  }
  return start;
}

detail::FreeBlock* CoalescingPoolAllocator::grow(std::uint64_t need) noexcept {
  // RMM pool_memory_resource::size_to_grow: without a maximum double the pool (or take the request
  // if larger); with one, take half the remaining room, or fail when the request does not fit in it.
  // Unlike RMM the room is rounded down, never up, so the pool never exceeds its maximum.
  const std::uint64_t reserved = stats_.raw().reserved_bytes.current;
  std::uint64_t attempt = 0;
  if (maximum_ != 0) {
    const std::uint64_t room = maximum_ > reserved ? align_down(maximum_ - reserved, granularity_) : 0;
    if (need > room) return nullptr;
    attempt = std::max(need, align_down(room / 2, granularity_));
  } else {
    attempt = std::max(need, reserved);
  }
  try {
    chunks_.reserve(chunks_.size() + 1);  // so that add_chunk() cannot throw once upstream said yes
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  // RMM try_to_expand: halve the attempt while upstream refuses, down to the request itself.
  for (;;) {
    if (void* base = upstream_.allocate(attempt, granularity_); base != nullptr) {
      return add_chunk(address_of(base), attempt);
    }
    if (attempt == need) return nullptr;
    attempt = std::max(need, align_down(attempt / 2, granularity_));
  }
}

detail::FreeBlock* CoalescingPoolAllocator::add_chunk(std::uintptr_t base, std::uint64_t bytes) noexcept {
  // The chunk taken while the pool holds none is its floor: the constructor's, or the first one after
  // trim() emptied the pool, so a trimmed pool does not thrash upstream on every later miss.
  if (chunks_.empty()) floor_ = base;
  const auto at = std::upper_bound(chunks_.begin(), chunks_.end(), base,
                                   [](std::uintptr_t a, const Range& c) { return a < c.address; });
  chunks_.insert(at, Range{base, bytes});  // capacity reserved by the caller: cannot throw
  stats_.on_reserve(bytes);
  detail::FreeBlock* block = nodes_.make(base, bytes);  // capacity reserved by the caller
  by_address_.insert_equal(*block);
  by_size_.insert_equal(*block);
  refresh_node_limit();
  return block;
}

void CoalescingPoolAllocator::release_chunk(detail::FreeBlock& block, Range chunk) noexcept {
  by_size_.erase(by_size_.iterator_to(block));
  by_address_.erase(by_address_.iterator_to(block));
  nodes_.recycle(&block);
  upstream_.deallocate(pointer_at(chunk.address), chunk.size, granularity_);
  const auto at = std::lower_bound(chunks_.begin(), chunks_.end(), chunk.address,
                                   [](const Range& c, std::uintptr_t a) { return c.address < a; });
  chunks_.erase(at);
  if (chunk.address == floor_) floor_ = 0;
  stats_.on_release(chunk.size);
  refresh_node_limit();
}

void CoalescingPoolAllocator::trim() {
  for (std::size_t i = chunks_.size(); i-- > 0;) {
    const Range chunk = chunks_[i];
    const auto it = by_address_.find(chunk.address, detail::ByAddress{});
    if (it != by_address_.end() && it->size == chunk.size) release_chunk(*it, chunk);
  }
}

std::vector<CoalescingPoolAllocator::Range> CoalescingPoolAllocator::free_blocks() const {
  std::vector<Range> out;
  for (const detail::FreeBlock& block : by_address_) out.push_back({block.address, block.size});
  return out;
}

std::string CoalescingPoolAllocator::check_invariants() const {
  const auto broken = [](const std::string& why) { return "pool.coalescing: " + why; };
  const std::uint64_t g = granularity_;

  std::uint64_t chunk_bytes = 0;
  bool floor_found = floor_ == 0;
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    const Range& chunk = chunks_[i];
    if (chunk.size == 0 || chunk.size % g != 0 || chunk.address % g != 0) {
      return broken("chunk base or size is not a multiple of the granularity");
    }
    if (i > 0 && chunks_[i - 1].end() > chunk.address) return broken("chunks out of order or overlapping");
    chunk_bytes += chunk.size;
    floor_found = floor_found || chunk.address == floor_;
  }
  if (!floor_found) return broken("the floor is not one of the chunks");

  const AllocatorStats& s = stats_.raw();
  if (s.reserved_bytes.current != chunk_bytes) return broken("reserved bytes differ from the sum of the chunks");
  if (maximum_ != 0 && chunk_bytes > maximum_) return broken("reserved bytes exceed the maximum");
  if (s.requested_bytes.current > s.allocated_bytes.current) return broken("requested exceeds allocated");
  if (s.allocated_bytes.current > s.reserved_bytes.current) return broken("allocated exceeds reserved");
  if (live_blocks_ != s.allocs - s.frees) return broken("live blocks differ from allocs - frees");

  std::uint64_t free_bytes = 0;
  std::uint64_t blocks = 0;
  const detail::FreeBlock* previous = nullptr;
  for (const detail::FreeBlock& block : by_address_) {
    ++blocks;
    if (block.size == 0 || block.size % g != 0 || block.address % g != 0) {
      return broken("free block address or size is not a multiple of the granularity");
    }
    if (previous != nullptr && previous->end() > block.address) return broken("free blocks out of order or overlapping");
    const auto at = std::upper_bound(chunks_.begin(), chunks_.end(), block.address,
                                     [](std::uintptr_t a, const Range& c) { return a < c.address; });
    if (at == chunks_.begin() || block.end() > (at - 1)->end() || block.end() < block.address) {
      return broken("free block not inside one chunk");
    }
    const Range& chunk = *(at - 1);
    if (previous != nullptr && previous->end() == block.address && block.address != chunk.address) {
      return broken("two adjacent free blocks in one chunk (not coalesced)");
    }
    if (release_ && block.address == chunk.address && block.size == chunk.size && chunk.address != floor_) {
      return broken("a wholly free chunk other than the floor was kept with release=true");
    }
    free_bytes += block.size;
    previous = &block;
  }
  if (free_bytes != s.reserved_bytes.current - s.allocated_bytes.current) {
    return broken("free bytes differ from reserved - allocated");
  }

  std::uint64_t sized = 0;
  previous = nullptr;
  for (const detail::FreeBlock& block : by_size_) {
    ++sized;
    if (previous != nullptr && !detail::size_address_less(previous->size, previous->address, block.size, block.address)) {
      return broken("size tree out of (size, address) order");
    }
    const auto it = by_address_.find(block.address, detail::ByAddress{});
    if (it == by_address_.end() || &*it != &block) return broken("size tree holds a block the address tree does not");
    previous = &block;
  }
  if (sized != blocks) return broken("the two trees hold different numbers of blocks");

  if (nodes_.live() != blocks) return broken("live nodes differ from free blocks");
  if (nodes_.live() + nodes_.count_free() != nodes_.capacity()) return broken("node pool free list lost or gained nodes");
  if (nodes_.capacity() < live_blocks_ + chunks_.size()) return broken("node capacity below live blocks + chunks");
  if (node_limit_ != nodes_.capacity() - chunks_.size()) return broken("stale node limit");
  return "";
}

}  // namespace tiermark
