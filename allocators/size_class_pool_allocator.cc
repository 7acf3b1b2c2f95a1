#include "allocators/size_class_pool_allocator.h"

#include <algorithm>

namespace tiermark {
namespace {

const std::vector<OptionSpec> kSizeClassOptions = {
    {"max_size", OptionType::kSize, "1MiB", "largest class; larger requests go straight to upstream"},
    {"chunk", OptionType::kSize, "2MiB", "bytes per chunk a class takes from upstream (at least two blocks)"},
};

constexpr std::size_t kMaxChunkAlignment = std::size_t{1} << 21;

}  // namespace

std::span<const OptionSpec> SizeClassPoolAllocator::option_specs() { return kSizeClassOptions; }

SizeClassPoolAllocator::SizeClassPoolAllocator(const Options& options, Upstream& upstream)
    : upstream_(upstream), max_size_(options.size("max_size")) {
  if (max_size_ < 16 || max_size_ > (std::uint64_t{1} << 40)) options.reject("max_size", "must be between 16B and 1TiB");
  const std::uint64_t chunk = options.size("chunk");
  if (chunk == 0) options.reject("chunk", "must be positive");
  const unsigned classes = class_index(max_size_) + 1;
  max_size_ = class_size(classes - 1);  // the largest class may round max_size up
  pools_.reserve(classes);
  for (unsigned index = 0; index < classes; ++index) {
    const std::uint64_t size = class_size(index);
    const std::uint64_t blocks = std::max<std::uint64_t>(2, chunk / size);
    pools_.emplace_back(size, blocks, std::min<std::size_t>(lowest_set_bit(size), kMaxChunkAlignment), upstream.touchable());
  }
}

SizeClassPoolAllocator::~SizeClassPoolAllocator() {
  for (detail::BlockPool& pool : pools_) pool.release_all(upstream_);
}

void* SizeClassPoolAllocator::allocate_large(std::size_t size, std::size_t alignment) noexcept {
  const std::uint64_t bytes = align_up(size, kLargePage);
  void* p = bytes < size ? nullptr : upstream_.allocate(bytes, std::max(alignment, kLargePage));
  if (p == nullptr) {
    stats_.on_failure();
    return nullptr;
  }
  ++large_live_;
  large_bytes_ += bytes;
  stats_.on_reserve(bytes);
  stats_.on_allocate(size, bytes);
  return p;
}

void SizeClassPoolAllocator::deallocate_large(void* p, std::size_t size, std::size_t alignment) noexcept {
  const std::uint64_t bytes = align_up(size, kLargePage);
  upstream_.deallocate(p, bytes, std::max(alignment, kLargePage));
  --large_live_;
  large_bytes_ -= bytes;
  stats_.on_deallocate(size, bytes);
  stats_.on_release(bytes);
}

AllocatorStats SizeClassPoolAllocator::stats() const {
  std::uint64_t largest = 0;
  for (const detail::BlockPool& pool : pools_) {
    if (pool.has_free_block()) largest = pool.block_size();  // classes ascend: the last one wins
  }
  return stats_.snapshot(largest);
}

void SizeClassPoolAllocator::trim() {
  for (detail::BlockPool& pool : pools_) detail::release_if_unused(pool, upstream_, stats_);
}

std::string SizeClassPoolAllocator::check_invariants() const {
  std::uint64_t live = large_live_;
  std::uint64_t reserved = 0;
  std::uint64_t allocated = 0;
  for (const detail::BlockPool& pool : pools_) {
    if (std::string why = pool.check_invariants("pool.sizeclass[" + std::to_string(pool.block_size()) + "]"); !why.empty()) {
      return why;
    }
    live += pool.live_blocks();
    reserved += pool.chunk_count() * pool.chunk_bytes();
    allocated += pool.live_blocks() * pool.block_size();
  }
  const AllocatorStats& s = stats_.raw();
  if (live != s.allocs - s.frees) return "pool.sizeclass: live blocks differ from allocs - frees";
  if (s.reserved_bytes.current != reserved + large_bytes_ || s.allocated_bytes.current != allocated + large_bytes_) {
    return "pool.sizeclass: class blocks and large blocks do not add up to allocated and reserved bytes";
  }
  if (s.requested_bytes.current > s.allocated_bytes.current) return "pool.sizeclass: requested exceeds allocated";
  return "";
}

}  // namespace tiermark
