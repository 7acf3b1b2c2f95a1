// BumpAllocator (`bump`): hands out memory by advancing a cursor through chunks from upstream and never
// reuses a freed block. It is the floor for harness overhead: its allocate is a few instructions.
// A chunk whose blocks have all been freed goes back upstream once the cursor has left it, so the
// allocator keeps working after exhaustion when enough is freed.
//
// Chunks are `chunk` bytes (a power of two) aligned to their size, so a block's chunk is found from
// its address by a shift; a request larger than a chunk gets a dedicated chunk of its own.
// Invariants: cursor_ <= current chunk end; per-chunk live counts sum to allocs - frees;
// reserved = sum of live chunk sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "allocators/allocator.h"
#include "allocators/bits.h"

namespace tiermark {

class BumpAllocator final {
 public:
  static constexpr std::string_view kName = "bump";
  static constexpr std::string_view kDescription =
      "never reuses memory: a cursor through upstream chunks; the floor for harness overhead";
  static std::span<const OptionSpec> option_specs();
  // Block sizes are multiples of this (the malloc alignment), so allocated bytes do not depend on
  // where the cursor happens to be.
  static constexpr std::size_t kGranule = 16;

  BumpAllocator(const Options& options, Upstream& upstream);
  ~BumpAllocator();
  BumpAllocator(const BumpAllocator&) = delete;
  BumpAllocator& operator=(const BumpAllocator&) = delete;

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    const std::uintptr_t start = align_up(cursor_, alignment);
    const std::uint64_t block = align_up(size, kGranule);
    if (start + block > chunk_end_ || start < cursor_ || block < size) return allocate_slow(size, alignment);
    cursor_ = start + block;
    ++current_live_;
    stats_.on_allocate(size, block);
    return pointer_at(start);
  }

  void deallocate(void* p, std::size_t size, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    stats_.on_deallocate(size, align_up(size, kGranule));
    if ((address_of(p) >> chunk_shift_) == current_key_) {
      --current_live_;
    } else {
      release_block_in_old_chunk(p);
    }
  }

  AllocatorStats stats() const { return stats_.snapshot(chunk_end_ - cursor_); }
  std::string check_invariants() const;
  void trim() {}

 private:
  struct Chunk {
    std::uintptr_t base;
    std::size_t bytes;
    std::uint64_t live;
  };

  void* allocate_slow(std::size_t size, std::size_t alignment) noexcept;
  void release_block_in_old_chunk(void* p) noexcept;
  void retire_current_chunk() noexcept;
  void release_chunk(const Chunk& chunk) noexcept;

  Upstream& upstream_;
  std::size_t chunk_bytes_;
  unsigned chunk_shift_;
  StatsRecorder stats_;
  // The chunk being carved. current_key_ is its base >> chunk_shift_ (~0 when there is none).
  std::uintptr_t cursor_ = 0;
  std::uintptr_t chunk_end_ = 0;
  std::uintptr_t current_key_ = ~std::uintptr_t{0};
  std::uintptr_t current_base_ = 0;
  std::size_t current_bytes_ = 0;
  std::uint64_t current_live_ = 0;
  // Chunks the cursor has left that still hold live blocks, by base >> chunk_shift_.
  std::unordered_map<std::uintptr_t, Chunk> retired_;
};

}  // namespace tiermark
