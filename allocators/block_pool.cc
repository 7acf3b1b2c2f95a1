#include "allocators/block_pool.h"

#include <algorithm>
#include <unordered_set>

#include "allocators/bits.h"

namespace tiermark::detail {

BlockPool::BlockPool(std::size_t block_size, std::size_t blocks_per_chunk, std::size_t chunk_alignment, bool intrusive)
    : block_size_(block_size), blocks_per_chunk_(blocks_per_chunk), chunk_alignment_(chunk_alignment), intrusive_(intrusive) {}

std::size_t BlockPool::grow(Upstream& upstream) noexcept {
  const std::size_t bytes = chunk_bytes();
  void* base = upstream.allocate(bytes, chunk_alignment_);
  if (base == nullptr) return 0;
  try {
    chunks_.push_back(address_of(base));
    if (!intrusive_) side_stack_.reserve(chunks_.size() * blocks_per_chunk_);
  } catch (...) {
    if (chunks_.size() > 0 && chunks_.back() == address_of(base)) chunks_.pop_back();
    upstream.deallocate(base, bytes, chunk_alignment_);
    return 0;
  }
  cursor_ = address_of(base);
  cursor_end_ = cursor_ + bytes;
  return bytes;
}

std::size_t BlockPool::release_all(Upstream& upstream) noexcept {
  const std::size_t bytes = chunk_bytes();
  for (std::uintptr_t base : chunks_) upstream.deallocate(pointer_at(base), bytes, chunk_alignment_);
  const std::size_t released = chunks_.size() * bytes;
  chunks_.clear();
  head_ = nullptr;
  side_stack_.clear();
  cursor_ = cursor_end_ = 0;
  free_count_ = carved_ = 0;
  return released;
}

void* grow_and_pop(BlockPool& pool, Upstream& upstream, StatsRecorder& stats) noexcept {
  const std::size_t bytes = pool.grow(upstream);
  if (bytes == 0) {
    stats.on_failure();
    return nullptr;
  }
  stats.on_reserve(bytes);
  return pool.pop();
}

void release_if_unused(BlockPool& pool, Upstream& upstream, StatsRecorder& stats) noexcept {
  if (pool.live_blocks() != 0) return;  // a chunk cannot go back while any block in it is live
  const std::size_t chunks = pool.chunk_count();
  const std::size_t chunk_bytes = pool.chunk_bytes();
  pool.release_all(upstream);
  for (std::size_t i = 0; i < chunks; ++i) stats.on_release(chunk_bytes);
}

std::string BlockPool::check_invariants(const std::string& owner) const {
  const std::size_t bytes = chunk_bytes();
  std::vector<std::uintptr_t> sorted = chunks_;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] % chunk_alignment_ != 0) return owner + ": chunk not aligned to " + std::to_string(chunk_alignment_);
    if (i > 0 && sorted[i - 1] + bytes > sorted[i]) return owner + ": chunks overlap";
  }
  if (cursor_ != cursor_end_ && (chunks_.empty() || cursor_ < chunks_.back() || cursor_end_ != chunks_.back() + bytes)) {
    return owner + ": carve cursor outside the newest chunk";
  }
  const std::uint64_t capacity = chunks_.size() * blocks_per_chunk_;
  const std::uint64_t uncarved = (cursor_end_ - cursor_) / block_size_;
  if (carved_ + uncarved != capacity) return owner + ": carved + uncarved blocks != chunk capacity";
  if (free_count_ > carved_) return owner + ": more free blocks than carved blocks";

  std::unordered_set<std::uintptr_t> seen;
  auto check_block = [&](std::uintptr_t p) -> std::string {
    auto it = std::upper_bound(sorted.begin(), sorted.end(), p);
    if (it == sorted.begin() || p >= *(it - 1) + bytes) return owner + ": free block outside every chunk";
    if ((p - *(it - 1)) % block_size_ != 0) return owner + ": free block off a block boundary";
    if (p >= cursor_ && p < cursor_end_) return owner + ": free block in the uncarved part of a chunk";
    if (!seen.insert(p).second) return owner + ": block on the free list twice";
    return "";
  };
  std::uint64_t listed = 0;
  if (intrusive_) {
    for (void* p = head_; p != nullptr && listed <= free_count_; p = *static_cast<void* const*>(p), ++listed) {
      if (std::string why = check_block(address_of(p)); !why.empty()) return why;
    }
  } else {
    for (void* p : side_stack_) {
      if (std::string why = check_block(address_of(p)); !why.empty()) return why;
      ++listed;
    }
  }
  if (listed != free_count_) return owner + ": free list length differs from its count";
  return "";
}

}  // namespace tiermark::detail
