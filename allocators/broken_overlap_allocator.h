// BrokenOverlapAllocator (`broken.overlap`): a deliberately wrong allocator, built only to prove that
// `tiermark stress --verify` catches a fault (a check that cannot fail proves nothing). It is `bump`,
// except that every `every`-th request is answered with a block overlapping a live one: the start of
// the most recent live block that is large and aligned enough (if none is, the next request that
// finds one gets it). It is registered apart from the real allocators (TestAllocatorTypes), so no
// benchmark, conformance test or `--allocator all` ever runs it.
//
// Invariants: memory under a planted block stays allocated in the inner bump allocator until the block
// it overlaps and every block planted on it are freed, so a caller that writes into a planted block
// corrupts a live block but never touches memory given back upstream. stats() are bump's, with the
// planted blocks added to allocs and frees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "allocators/allocator.h"
#include "allocators/bump_allocator.h"

namespace tiermark {

class BrokenOverlapAllocator final {
 public:
  static constexpr std::string_view kName = "broken.overlap";
  static constexpr std::string_view kDescription =
      "bump, but every N-th request gets a block overlapping a live one (proves stress --verify catches faults)";
  static std::span<const OptionSpec> option_specs();

  BrokenOverlapAllocator(const Options& options, Upstream& upstream);

  void* allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept;
  void deallocate(void* p, std::size_t size, std::size_t alignment, StreamId stream) noexcept;
  AllocatorStats stats() const;
  std::string check_invariants() const;
  void trim() { inner_.trim(); }

  // Overlapping blocks handed out so far.
  std::uint64_t planted() const { return planted_; }

 private:
  // A block of the inner allocator, with the planted blocks that start at its address.
  struct Host {
    std::size_t size;
    std::size_t alignment;
    bool live;                   // not yet freed by its own caller
    std::uint64_t planted_live;  // planted blocks on it not yet freed
  };

  BumpAllocator inner_;
  std::uint64_t every_;
  std::uint64_t requests_ = 0;
  bool due_ = false;  // the next request that can be answered with an overlap gets one
  std::uint64_t planted_ = 0, planted_freed_ = 0;
  std::unordered_map<void*, Host> hosts_;
  void* latest_ = nullptr;  // the most recent live inner block
};

}  // namespace tiermark
