// BlockPool: the mechanism shared by `pool.fixed` and every size class of `pool.sizeclass`: blocks of
// one size carved from chunks of `blocks_per_chunk` blocks taken from upstream, recycled through an
// O(1) LIFO free list. A new chunk is carved lazily from a cursor, so no block is touched before it
// is handed out.
//
// The free list is intrusive (the next pointer lives in the free block, as in tcmalloc and mimalloc)
// on touchable memory, and a side stack of pointers on a simulated device, whose memory must never
// be written. Invariants: every free block lies on a block boundary inside a chunk, below that
// chunk's carve cursor, at most once; carved - free = live blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "allocators/allocator_stats.h"
#include "allocators/upstream.h"

namespace tiermark::detail {

class BlockPool {
 public:
  BlockPool(std::size_t block_size, std::size_t blocks_per_chunk, std::size_t chunk_alignment, bool intrusive);
  BlockPool(BlockPool&&) noexcept = default;
  BlockPool& operator=(BlockPool&&) noexcept = default;

  // A free block, or nullptr when the pool needs another chunk (see grow()).
  void* pop() noexcept {
    if (intrusive_) {
      if (void* p = head_; p != nullptr) {
        head_ = *static_cast<void**>(p);
        --free_count_;
        return p;
      }
    } else if (!side_stack_.empty()) {
      void* p = side_stack_.back();
      side_stack_.pop_back();
      --free_count_;
      return p;
    }
    if (cursor_ != cursor_end_) {
      void* p = reinterpret_cast<void*>(cursor_);
      cursor_ += block_size_;
      ++carved_;
      return p;
    }
    return nullptr;
  }

  void push(void* p) noexcept {
    if (intrusive_) {
      *static_cast<void**>(p) = head_;
      head_ = p;
    } else {
      side_stack_.push_back(p);  // capacity reserved in grow(): never reallocates here
    }
    ++free_count_;
  }

  // Takes one more chunk from upstream and carves from it next; call only when pop() returned nullptr.
  // Returns the chunk's size in bytes, or 0 when upstream refused.
  std::size_t grow(Upstream& upstream) noexcept;
  // Returns every chunk to upstream (the pool is empty afterwards); returns the bytes released.
  std::size_t release_all(Upstream& upstream) noexcept;

  bool has_free_block() const { return free_count_ != 0 || cursor_ != cursor_end_; }
  std::size_t block_size() const { return block_size_; }
  std::size_t chunk_bytes() const { return block_size_ * blocks_per_chunk_; }
  std::size_t chunk_count() const { return chunks_.size(); }
  std::uint64_t live_blocks() const { return carved_ - free_count_; }

  // "" when the invariants hold, else the first broken one (prefixed with `owner`).
  std::string check_invariants(const std::string& owner) const;

 private:
  std::size_t block_size_;
  std::size_t blocks_per_chunk_;
  std::size_t chunk_alignment_;
  bool intrusive_;
  void* head_ = nullptr;
  std::vector<void*> side_stack_;
  std::uintptr_t cursor_ = 0;
  std::uintptr_t cursor_end_ = 0;
  std::uint64_t free_count_ = 0;
  std::uint64_t carved_ = 0;
  std::vector<std::uintptr_t> chunks_;  // bases, in the order taken
};

// The two slow paths every allocator built on BlockPools shares, with their stats bookkeeping:
// grow by one chunk and pop from it (nullptr, counted as a failure, when upstream refuses), and
// return every chunk of a pool with no live block to upstream (trim).
void* grow_and_pop(BlockPool& pool, Upstream& upstream, StatsRecorder& stats) noexcept;
void release_if_unused(BlockPool& pool, Upstream& upstream, StatsRecorder& stats) noexcept;

}  // namespace tiermark::detail
