// FixedPoolAllocator (`pool.fixed`): one block size, an O(1) free list, chunks of blocks from
// upstream; RAPIDS RMM's fixed_size_memory_resource. A request larger than the block, or aligned more
// strictly than blocks are, is a counted failure. Chunks are kept until the allocator is destroyed
// or trim() finds the pool empty.
// Invariants: those of BlockPool; live blocks = allocs - frees; reserved = chunks x chunk size.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "allocators/allocator.h"
#include "allocators/block_pool.h"

namespace tiermark {

class FixedPoolAllocator final {
 public:
  static constexpr std::string_view kName = "pool.fixed";
  static constexpr std::string_view kDescription =
      "one block size, O(1) intrusive free list, chunks of blocks from upstream (RMM fixed_size_memory_resource)";
  static std::span<const OptionSpec> option_specs();

  FixedPoolAllocator(const Options& options, Upstream& upstream);
  ~FixedPoolAllocator();
  FixedPoolAllocator(const FixedPoolAllocator&) = delete;
  FixedPoolAllocator& operator=(const FixedPoolAllocator&) = delete;

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    if ((size > block_size_) | (alignment > block_alignment_)) {
      stats_.on_failure();
      return nullptr;
    }
    void* p = pool_.pop();
    if (p == nullptr) [[unlikely]] {
      p = detail::grow_and_pop(pool_, upstream_, stats_);
      if (p == nullptr) return nullptr;
    }
    stats_.on_allocate(size, block_size_);
    return p;
  }

  void deallocate(void* p, std::size_t size, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    pool_.push(p);
    stats_.on_deallocate(size, block_size_);
  }

  AllocatorStats stats() const { return stats_.snapshot(pool_.has_free_block() ? block_size_ : 0); }
  std::string check_invariants() const;
  void trim();

 private:
  Upstream& upstream_;
  std::size_t block_size_;
  std::size_t block_alignment_;
  detail::BlockPool pool_;
  StatsRecorder stats_;
};

}  // namespace tiermark
