#include "allocators/fixed_pool_allocator.h"

#include <algorithm>
#include <vector>

#include "allocators/bits.h"

namespace tiermark {
namespace {

// Defaults from RAPIDS RMM fixed_size_memory_resource: default_block_size = 1 MiB,
// default_blocks_to_preallocate = 128 (rmm/mr/device/fixed_size_memory_resource.hpp).
const std::vector<OptionSpec> kFixedOptions = {
    {"block_size", OptionType::kSize, "1MiB", "the one block size (a multiple of 16)"},
    {"blocks_per_chunk", OptionType::kCount, "128", "blocks taken from upstream at a time"},
};

// Blocks are aligned to the largest power of two dividing their size, up to this cap: chunks are
// requested with that alignment, and over-aligning huge chunks would waste address space.
constexpr std::size_t kMaxBlockAlignment = std::size_t{1} << 21;

}  // namespace

std::span<const OptionSpec> FixedPoolAllocator::option_specs() { return kFixedOptions; }

FixedPoolAllocator::FixedPoolAllocator(const Options& options, Upstream& upstream)
    : upstream_(upstream),
      block_size_(options.size("block_size")),
      block_alignment_(std::min<std::size_t>(lowest_set_bit(block_size_ | (std::size_t{1} << 62)), kMaxBlockAlignment)),
      pool_(block_size_, options.count("blocks_per_chunk"), block_alignment_, upstream.touchable()) {
  if (block_size_ == 0 || block_size_ % 16 != 0) options.reject("block_size", "must be a positive multiple of 16");
  const std::uint64_t blocks = options.count("blocks_per_chunk");
  if (blocks == 0 || block_size_ > (std::uint64_t{1} << 50) / blocks) {
    options.reject("blocks_per_chunk", "must be at least 1, with block_size x blocks_per_chunk at most 1PiB");
  }
}

FixedPoolAllocator::~FixedPoolAllocator() { pool_.release_all(upstream_); }

void FixedPoolAllocator::trim() { detail::release_if_unused(pool_, upstream_, stats_); }

std::string FixedPoolAllocator::check_invariants() const {
  if (std::string why = pool_.check_invariants("pool.fixed"); !why.empty()) return why;
  const AllocatorStats& s = stats_.raw();
  if (pool_.live_blocks() != s.allocs - s.frees) return "pool.fixed: live blocks differ from allocs - frees";
  if (s.reserved_bytes.current != pool_.chunk_count() * pool_.chunk_bytes()) return "pool.fixed: reserved differs from chunk bytes";
  if (s.allocated_bytes.current != pool_.live_blocks() * block_size_) return "pool.fixed: allocated differs from live blocks x block size";
  if (s.requested_bytes.current > s.allocated_bytes.current) return "pool.fixed: requested exceeds allocated";
  return "";
}

}  // namespace tiermark
