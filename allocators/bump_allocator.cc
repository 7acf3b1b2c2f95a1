#include "allocators/bump_allocator.h"

#include <vector>

namespace tiermark {
namespace {

const std::vector<OptionSpec> kBumpOptions = {
    {"chunk", OptionType::kSize, "64MiB", "bytes taken from upstream at a time (a power of two, at least 64KiB)"},
};

}  // namespace

std::span<const OptionSpec> BumpAllocator::option_specs() { return kBumpOptions; }

BumpAllocator::BumpAllocator(const Options& options, Upstream& upstream)
    : upstream_(upstream), chunk_bytes_(options.size("chunk")), chunk_shift_(0) {
  if (!is_power_of_two(chunk_bytes_) || chunk_bytes_ < (std::size_t{64} << 10)) {
    options.reject("chunk", "must be a power of two of at least 64KiB");
  }
  chunk_shift_ = log2_floor(chunk_bytes_);
}

BumpAllocator::~BumpAllocator() {
  if (current_bytes_ != 0) upstream_.deallocate(pointer_at(current_base_), current_bytes_, chunk_bytes_);
  for (const auto& [key, chunk] : retired_) upstream_.deallocate(pointer_at(chunk.base), chunk.bytes, chunk_bytes_);
}

void BumpAllocator::release_chunk(const Chunk& chunk) noexcept {
  upstream_.deallocate(pointer_at(chunk.base), chunk.bytes, chunk_bytes_);
  stats_.on_release(chunk.bytes);
}

void BumpAllocator::retire_current_chunk() noexcept {
  if (current_bytes_ == 0) return;
  const Chunk chunk{current_base_, current_bytes_, current_live_};
  if (chunk.live == 0) {
    release_chunk(chunk);
  } else {
    retired_.emplace(current_key_, chunk);
  }
  current_bytes_ = 0;
  current_key_ = ~std::uintptr_t{0};
  cursor_ = chunk_end_ = 0;
  current_live_ = 0;
}

void* BumpAllocator::allocate_slow(std::size_t size, std::size_t alignment) noexcept {
  const std::uint64_t block = align_up(size, kGranule);
  if (alignment > chunk_bytes_ || block < size || block > (std::uint64_t{1} << 62)) {
    stats_.on_failure();
    return nullptr;
  }
  // A dedicated chunk for a request that would not fit even an empty chunk; the cursor stays put.
  if (block > chunk_bytes_) {
    const std::size_t bytes = align_up(block, chunk_bytes_);
    void* p = upstream_.allocate(bytes, chunk_bytes_);
    if (p == nullptr) {
      stats_.on_failure();
      return nullptr;
    }
    stats_.on_reserve(bytes);
    retired_.emplace(address_of(p) >> chunk_shift_, Chunk{address_of(p), bytes, 1});
    stats_.on_allocate(size, block);
    return p;
  }
  void* fresh = upstream_.allocate(chunk_bytes_, chunk_bytes_);
  if (fresh == nullptr) {
    stats_.on_failure();
    return nullptr;
  }
  retire_current_chunk();
  stats_.on_reserve(chunk_bytes_);
  current_base_ = address_of(fresh);
  current_bytes_ = chunk_bytes_;
  current_key_ = current_base_ >> chunk_shift_;
  cursor_ = current_base_;
  chunk_end_ = current_base_ + chunk_bytes_;
  return allocate(size, alignment, 0);
}

void BumpAllocator::release_block_in_old_chunk(void* p) noexcept {
  auto it = retired_.find(address_of(p) >> chunk_shift_);
  if (it == retired_.end()) return;  // not ours: a caller bug that check_invariants() will expose in the counts
  if (--it->second.live == 0) {
    release_chunk(it->second);
    retired_.erase(it);
  }
}

std::string BumpAllocator::check_invariants() const {
  const AllocatorStats s = stats_.raw();
  std::uint64_t live = current_live_;
  std::uint64_t reserved = current_bytes_;
  if (current_bytes_ != 0 && (cursor_ < current_base_ || cursor_ > chunk_end_ || chunk_end_ != current_base_ + current_bytes_)) {
    return "bump: cursor outside the current chunk";
  }
  for (const auto& [key, chunk] : retired_) {
    if (chunk.live == 0) return "bump: a retired chunk with no live block was not released";
    if ((chunk.base >> chunk_shift_) != key) return "bump: retired chunk filed under the wrong key";
    live += chunk.live;
    reserved += chunk.bytes;
  }
  if (live != s.allocs - s.frees) return "bump: live blocks per chunk do not add up to allocs - frees";
  if (reserved != s.reserved_bytes.current) return "bump: chunk bytes do not add up to reserved bytes";
  if (s.allocated_bytes.current > s.reserved_bytes.current) return "bump: allocated exceeds reserved";
  if (s.requested_bytes.current > s.allocated_bytes.current) return "bump: requested exceeds allocated";
  return "";
}

}  // namespace tiermark
