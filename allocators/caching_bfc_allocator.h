// CachingBfcAllocator (`caching.bfc`): TensorFlow's best-fit-with-coalescing allocator
// (tensorflow/tsl/framework/bfc_allocator.{h,cc}, BFCAllocator; ONNX Runtime's BFCArena is the same
// design) on a tiermark Upstream. Facts modelled, each from that source:
//  * Every request is rounded up to a multiple of 256 B (kMinAllocationSize); regions are 256-aligned,
//    so every chunk is too, which is how TF serves alignment.
//  * 21 bins: bin b holds free chunks of size in [256 << b, 256 << (b + 1)), bin 20 everything from
//    256 MiB (BinNumForSize). Each bin is ordered by (size, address). A request searches its own bin
//    from its size upward, then the next non-empty bins, taking the first chunk that fits
//    (FindChunkPtr): overall the smallest fitting chunk, lowest address on ties.
//  * A chunk is split only if it is at least twice the rounded request or the slack is at least
//    128 MiB (kMaxInternalFragmentation); otherwise the caller gets the whole chunk and its slack is
//    counted as allocated (internal waste). A free chunk merges with its free neighbours in its
//    region (TryToCoalesce); regions never merge (coalesce_regions_ is false for device memory).
//  * Regions (Extend): with allow_growth the first is 2 MiB, each later one twice the previous; a
//    request larger than that doubles it until it fits (and the next region keeps that size instead
//    of doubling again). If upstream refuses, the size backs off by x0.9 (kBackpedalFactor) down to the
//    request, once in the allocator's lifetime (started_backpedal_). Regions never exceed the memory
//    limit in total. Without allow_growth one region covers the whole limit (taken at construction
//    here; TF takes it at the first request).
//  * garbage_collection (DeallocateFreeRegions): on a miss that growth cannot serve, wholly free
//    regions go back upstream if that could make room, and growth is retried once.
//
// Metadata lives outside the managed memory (a simulated device is never touched): one node per
// chunk, free or in use, from a NodePool, linked into its region's address-ordered list
// (prev/next, as TF's chunk handles), into an address tree of every chunk (deallocate's lookup; TF
// uses a per-256-byte handle table, too large for an 80 GiB simulated device) and, when free, into its
// bin's (size, address) tree. Requests aligned above 256 B (TF ignores alignment) take a chunk whose
// aligned front fits and leave the pad in front as a free chunk of its own.
// Streams are ignored: TF keeps one BFC allocator per device.
//
// Invariants (check_invariants): regions are disjoint and sum to reserved bytes (<= memory limit);
// the chunks of each region tile it exactly, in address order, linked both ways; no two adjacent chunks
// are both free; every free chunk is in exactly the bin of its size, every bin in (size, address)
// order, every chunk in the address tree; addresses and sizes are multiples of 256; in-use bytes =
// allocated bytes = TF's bytes_in_use; live allocations = allocs - frees; live nodes = chunks.
// The fast path runs only while the node pool has a spare node for a split, so it never calls the heap;
// the miss path reserves nodes first and fails (counted) if the heap refuses.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/intrusive/rbtree.hpp>

#include "allocators/allocator.h"
#include "allocators/bits.h"
#include "allocators/node_pool.h"

namespace tiermark {
namespace detail {

using BfcHook = boost::intrusive::set_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>,
                                                  boost::intrusive::optimize_size<true>>;

struct BfcChunk {
  BfcChunk(std::uintptr_t a, std::uint64_t s) noexcept : address(a), size(s) {}
  BfcHook in_bin;      // linked while free
  BfcHook by_address;  // always linked
  BfcChunk* prev = nullptr;  // neighbours in the same region; nullptr at the region's ends
  BfcChunk* next = nullptr;
  std::uintptr_t address;
  std::uint64_t size;
  bool in_use = false;
  std::uint8_t bin = 0;  // valid while free
  std::uintptr_t end() const { return address + size; }
};

struct BfcBySizeThenAddress {
  bool operator()(const BfcChunk& a, const BfcChunk& b) const noexcept {
    return a.size < b.size || (a.size == b.size && a.address < b.address);
  }
  // A size alone stands for (size, 0), below every chunk of that size.
  bool operator()(const BfcChunk& a, std::uint64_t size) const noexcept { return a.size < size; }
  bool operator()(std::uint64_t size, const BfcChunk& a) const noexcept { return size <= a.size; }
};

struct BfcByAddress {
  bool operator()(const BfcChunk& a, const BfcChunk& b) const noexcept { return a.address < b.address; }
  bool operator()(const BfcChunk& a, std::uintptr_t address) const noexcept { return a.address < address; }
  bool operator()(std::uintptr_t address, const BfcChunk& a) const noexcept { return address < a.address; }
};

using BfcBin = boost::intrusive::rbtree<BfcChunk, boost::intrusive::member_hook<BfcChunk, BfcHook, &BfcChunk::in_bin>,
                                        boost::intrusive::compare<BfcBySizeThenAddress>,
                                        boost::intrusive::constant_time_size<false>>;
using BfcAddressTree =
    boost::intrusive::rbtree<BfcChunk, boost::intrusive::member_hook<BfcChunk, BfcHook, &BfcChunk::by_address>,
                             boost::intrusive::compare<BfcByAddress>, boost::intrusive::constant_time_size<false>>;

}  // namespace detail

// TensorFlow's own counters (tsl::AllocatorStats names), kept next to tiermark's AllocatorStats.
struct BfcMemoryStats {
  std::uint64_t num_allocs = 0;          // successful allocations so far
  std::uint64_t bytes_in_use = 0;        // chunk bytes handed out (= allocated_bytes)
  std::uint64_t peak_bytes_in_use = 0;
  std::uint64_t largest_alloc_size = 0;  // largest chunk handed out
  std::uint64_t bytes_limit = 0;         // the memory limit; 0: unlimited
  std::uint64_t bytes_reserved = 0;      // region bytes held from upstream (= reserved_bytes)
  std::uint64_t peak_bytes_reserved = 0;
  std::uint64_t largest_free_block_bytes = 0;
  std::uint64_t num_regions = 0;
  // TF GetFragmentation(): (free - largest free chunk) / free, 0 when nothing is free.
  double fragmentation = 0.0;
};

class CachingBfcAllocator final {
 public:
  static constexpr std::string_view kName = "caching.bfc";
  static constexpr std::string_view kDescription =
      "TensorFlow BFC: 256 B rounding, 21 size bins, best fit, split at 2x, coalescing, doubling regions";
  static std::span<const OptionSpec> option_specs();

  // TF bfc_allocator.h: kMinAllocationBits = 8, kNumBins = 21; bfc_allocator.cc: 128 MiB default
  // max_internal_fragmentation_bytes, 2 MiB first region, kBackpedalFactor = 0.9.
  static constexpr std::uint64_t kMinAllocationSize = 256;
  static constexpr unsigned kNumBins = 21;
  static constexpr std::uint64_t kMaxInternalFragmentation = std::uint64_t{128} << 20;
  static constexpr std::uint64_t kInitialRegion = std::uint64_t{2} << 20;

  struct Range {
    std::uintptr_t address;
    std::uint64_t size;
    std::uintptr_t end() const { return address + size; }
  };
  struct ChunkInfo {
    std::uintptr_t address;
    std::uint64_t size;
    bool in_use;
  };

  CachingBfcAllocator(const Options& options, Upstream& upstream);
  ~CachingBfcAllocator();
  CachingBfcAllocator(const CachingBfcAllocator&) = delete;
  CachingBfcAllocator& operator=(const CachingBfcAllocator&) = delete;

  static constexpr std::uint64_t rounded_bytes(std::uint64_t bytes) { return align_up(bytes, kMinAllocationSize); }
  // TF BinNumForSize: floor(log2(size / 256)), at most 20.
  static constexpr unsigned bin_for_size(std::uint64_t bytes) {
    const std::uint64_t v = (bytes < kMinAllocationSize ? kMinAllocationSize : bytes) >> 8;
    const unsigned b = log2_floor(v);
    return b < kNumBins - 1 ? b : kNumBins - 1;
  }

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    // Fast path: plain alignment, a spare node for a split, and a hit. `size - 1` sends 0 and
    // overflowing sizes to the slow path.
    if (size - 1 < kMaxRequest && alignment <= kMinAllocationSize &&
        nodes_.capacity() > nodes_.live()) [[likely]] {
      const std::uint64_t bytes = rounded_bytes(size);
      if (detail::BfcChunk* chunk = find_chunk(bytes); chunk != nullptr) [[likely]] {
        remove_from_bin(*chunk);
        return hand_out(*chunk, size, bytes);
      }
    }
    return allocate_slow(size, alignment);
  }

  void deallocate(void* p, std::size_t size, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    const auto it = by_address_.find(address_of(p), detail::BfcByAddress{});
    detail::BfcChunk& chunk = *it;
    chunk.in_use = false;
    --live_chunks_;
    stats_.on_deallocate(size, chunk.size);
    // TF TryToCoalesce: the next neighbour merges into this chunk, then this chunk into the previous.
    detail::BfcChunk* merged = &chunk;
    if (chunk.next != nullptr && !chunk.next->in_use) {
      remove_from_bin(*chunk.next);
      absorb_next(chunk);
    }
    if (chunk.prev != nullptr && !chunk.prev->in_use) {
      merged = chunk.prev;
      remove_from_bin(*merged);
      absorb_next(*merged);  // recycles `chunk`
    }
    insert_into_bin(*merged);
  }

  AllocatorStats stats() const { return stats_.snapshot(largest_free_chunk()); }
  std::string check_invariants() const;
  // Returns every wholly free region to upstream (TF DeallocateRegions over all free regions).
  void trim();

  BfcMemoryStats memory_stats() const;
  // Introspection for tests and debugging (not for hot paths).
  std::span<const Range> regions() const { return regions_; }
  std::vector<ChunkInfo> chunks() const;  // every chunk, in address order
  std::uint64_t memory_limit() const { return limit_; }  // 0: unlimited
  std::uint64_t next_region_bytes() const { return curr_region_bytes_; }

 private:
  static constexpr std::uint64_t kMaxRequest = std::uint64_t{1} << 62;
  // Alignments above this fail: this project's bound, so that size + alignment cannot overflow.
  static constexpr std::uint64_t kMaxAlignment = std::uint64_t{1} << 30;

  void* allocate_slow(std::size_t size, std::size_t alignment) noexcept;
  detail::BfcChunk* find_aligned(std::uint64_t bytes, std::uint64_t alignment) noexcept;
  bool extend(std::uint64_t bytes) noexcept;
  void add_region(std::uintptr_t base, std::uint64_t bytes) noexcept;
  bool deallocate_free_regions(std::uint64_t bytes) noexcept;
  void release_region(std::size_t index) noexcept;
  bool region_is_free(const Range& region) const noexcept;

  // The first free chunk of at least `bytes` in TF's search order, or nullptr.
  detail::BfcChunk* find_chunk(std::uint64_t bytes) noexcept {
    const unsigned b = bin_for_size(bytes);
    if ((nonempty_bins_ >> b) & 1u) {
      const auto it = bins_[b].lower_bound(bytes, detail::BfcBySizeThenAddress{});
      if (it != bins_[b].end()) return &*it;
    }
    // Every chunk in a higher bin is at least 256 << (b + 1) > bytes: the first one fits.
    const std::uint32_t higher = nonempty_bins_ & ~((std::uint32_t{2} << b) - 1);
    if (higher == 0) return nullptr;
    return &*bins_[static_cast<unsigned>(std::countr_zero(higher))].begin();
  }

  void insert_into_bin(detail::BfcChunk& chunk) noexcept {
    const unsigned b = bin_for_size(chunk.size);
    chunk.bin = static_cast<std::uint8_t>(b);
    bins_[b].insert_equal(chunk);
    nonempty_bins_ |= std::uint32_t{1} << b;
  }
  void remove_from_bin(detail::BfcChunk& chunk) noexcept {
    detail::BfcBin& bin = bins_[chunk.bin];
    bin.erase(bin.iterator_to(chunk));
    if (bin.empty()) nonempty_bins_ &= ~(std::uint32_t{1} << chunk.bin);
  }

  // Merges chunk.next into `chunk`; neither is in a bin.
  void absorb_next(detail::BfcChunk& chunk) noexcept {
    detail::BfcChunk* next = chunk.next;
    chunk.size += next->size;
    chunk.next = next->next;
    if (chunk.next != nullptr) chunk.next->prev = &chunk;
    by_address_.erase(by_address_.iterator_to(*next));
    nodes_.recycle(next);
  }

  // Cuts `chunk` (out of any bin) after `bytes`; the tail becomes a free chunk in its bin. The caller
  // guarantees a spare node.
  void split(detail::BfcChunk& chunk, std::uint64_t bytes) noexcept {
    detail::BfcChunk* tail = nodes_.make(chunk.address + bytes, chunk.size - bytes);
    chunk.size = bytes;
    tail->prev = &chunk;
    tail->next = chunk.next;
    if (tail->next != nullptr) tail->next->prev = tail;
    chunk.next = tail;
    by_address_.insert_before(std::next(by_address_.iterator_to(chunk)), *tail);
    insert_into_bin(*tail);
  }

  // TF FindChunkPtr after the search: split by the rule above, mark in use, count.
  void* hand_out(detail::BfcChunk& chunk, std::uint64_t requested, std::uint64_t bytes) noexcept {
    if (chunk.size >= 2 * bytes || chunk.size - bytes >= max_internal_fragmentation_) split(chunk, bytes);
    chunk.in_use = true;
    ++live_chunks_;
    stats_.on_allocate(requested, chunk.size);
    if (chunk.size > largest_alloc_size_) largest_alloc_size_ = chunk.size;
    return pointer_at(chunk.address);
  }

  std::uint64_t largest_free_chunk() const noexcept {
    if (nonempty_bins_ == 0) return 0;
    return bins_[31u - static_cast<unsigned>(std::countl_zero(nonempty_bins_))].rbegin()->size;
  }

  Upstream& upstream_;
  bool allow_growth_;
  bool garbage_collection_;
  std::uint64_t limit_;  // 0: unlimited
  std::uint64_t max_internal_fragmentation_ = kMaxInternalFragmentation;
  std::uint64_t curr_region_bytes_;  // TF curr_region_allocation_bytes_
  bool started_backpedal_ = false;
  std::uint64_t live_chunks_ = 0;
  std::uint64_t largest_alloc_size_ = 0;
  std::uint32_t nonempty_bins_ = 0;  // bit b set iff bins_[b] is not empty
  std::vector<Range> regions_;       // sorted by address
  detail::NodePool<detail::BfcChunk> nodes_;  // declared before the trees, so it outlives them
  std::array<detail::BfcBin, kNumBins> bins_;
  detail::BfcAddressTree by_address_;
  StatsRecorder stats_;
};

}  // namespace tiermark
