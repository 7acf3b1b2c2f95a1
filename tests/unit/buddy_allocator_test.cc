// BuddyAllocator (`buddy`) and its HierarchicalBitmap: hand-computed splits, merges and rounding,
// the per-order cache (hits leave the buddy structures alone, a miss drains it), dedicated arenas,
// exhaustion and recovery, trim, and metadata that stays small for an 80 GiB simulated device.
// Every test that can runs on both the simulated device and host memory; on host memory every block
// gets a pattern that is verified before it is freed (LiveBlocks), which catches overlap.
// Block sizes follow the rule: order k is min_block << k, the smallest holding max(size, alignment).
#include "allocators/buddy_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "allocators/bits.h"
#include "allocators/hierarchical_bitmap.h"
#include "allocators/host_upstream.h"
#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"
#include "common/input_error.h"
#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

// An allocator on its own upstream, with every call checked: invariants after each operation,
// alignment, non-overlap and (on host memory) the block's contents from allocation to free.
template <class Memory>
struct Buddy {
  Memory memory;
  BuddyAllocator a;
  testing::CheckedCalls<BuddyAllocator> calls;

  explicit Buddy(const std::string& spec, const std::string& memory_spec = std::string(Memory::kName))
      : memory(make_options(memory_spec, Memory::kName, Memory::option_specs())),
        a(make_options(spec, "buddy", BuddyAllocator::option_specs()), memory),
        calls(a, memory.touchable()) {}

  void* allocate(std::size_t size, std::size_t alignment = kDefaultAlignment) { return calls.allocate(size, alignment); }
  void deallocate(void* p, std::size_t size, std::size_t alignment = kDefaultAlignment) {
    calls.deallocate(p, size, alignment);
  }
  void trim() { calls.trim(); }
  AllocatorStats stats() const { return a.stats(); }
};

using OnDevice = Buddy<SimulatedUpstream>;
using OnHost = Buddy<HostUpstream>;

std::ptrdiff_t distance(const void* from, const void* to) {
  return static_cast<std::ptrdiff_t>(address_of(to)) - static_cast<std::ptrdiff_t>(address_of(from));
}

// ---------------------------------------------------------------------------------------------
// HierarchicalBitmap

TEST(HierarchicalBitmap, FindsTheFirstSetBitThroughEveryLevel) {
  // 2^21 bits: levels of 32768, 512, 8 and 1 words (the order-0 set of a 1 GiB arena at 512 B).
  for (const std::uint64_t bits : std::vector<std::uint64_t>{1, 64, 65, 4097, std::uint64_t{1} << 21}) {
    detail::HierarchicalBitmap map(bits);
    EXPECT_FALSE(map.any());
    EXPECT_EQ(map.check_invariants(), "");
    map.set(bits - 1);
    EXPECT_TRUE(map.any());
    EXPECT_EQ(map.find_first(), bits - 1) << bits << " bits";
    EXPECT_EQ(map.check_invariants(), "");
    if (bits > 70) {
      map.set(70);
      EXPECT_EQ(map.find_first(), 70u);
      map.set(3);
      EXPECT_EQ(map.find_first(), 3u);
      EXPECT_FALSE(map.clear(3)) << "bits 70 and " << bits - 1 << " are still set";
      EXPECT_EQ(map.find_first(), 70u);
      EXPECT_FALSE(map.clear(70));
      EXPECT_EQ(map.find_first(), bits - 1);
      EXPECT_EQ(map.count(), 1u);
      EXPECT_EQ(map.check_invariants(), "");
    }
    EXPECT_TRUE(map.clear(bits - 1)) << "the last set bit: the bitmap is empty";
    EXPECT_FALSE(map.any());
    EXPECT_EQ(map.count(), 0u);
    EXPECT_EQ(map.check_invariants(), "");
  }
}

// ---------------------------------------------------------------------------------------------
// The arena's own checker catches broken tilings (the addresses are never touched)

TEST(BuddyArena, CheckInvariantsCatchesAWrongOrderFree) {
  const std::uintptr_t base = 0x10000;
  detail::BuddyArena arena(base, 9, 0, 7);  // 64 KiB of 512 B blocks: orders 0..7
  EXPECT_EQ(arena.check_invariants(), "");
  EXPECT_EQ(arena.take(0), base);
  EXPECT_EQ(arena.take(0), base + 512);
  EXPECT_EQ(arena.check_invariants(), "");
  // Freeing the first block as order 1 merges all the way up over the still-allocated second block:
  // the free 64 KiB block now contains the first block's stale 512 B head (and the second block).
  arena.give(base, 1);
  EXPECT_EQ(arena.check_invariants(), "offset 0x0: an order 0 block lies inside a larger block (bytes covered twice)");
}

TEST(BuddyArena, CheckInvariantsCatchesABlockInsideAFreeBlock) {
  const std::uintptr_t base = 0x10000;
  detail::BuddyArena arena(base, 9, 0, 7);
  arena.give(base + 32 * KiB, 6);  // "frees" the upper half of the one free 64 KiB block
  EXPECT_EQ(arena.check_invariants(), "offset 0x8000: an order 6 block lies inside a larger block (bytes covered twice)");
}

// ---------------------------------------------------------------------------------------------
// Splitting, rounding, merging

template <class Memory>
void hand_computed_splits() {
  Buddy<Memory> b("buddy:min_block=512,arena=64KiB,cache=0");
  void* p = b.allocate(1);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(address_of(p) % (64 * KiB), 0u) << "the first block starts the arena, aligned to the arena size";
  AllocatorStats s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 64 * KiB);  // one whole arena
  EXPECT_EQ(s.upstream_allocs, 1u);
  EXPECT_EQ(s.allocated_bytes.current, 512u);     // 1 byte rounds to one min_block
  EXPECT_EQ(s.requested_bytes.current, 1u);
  EXPECT_EQ(s.largest_free_block, 32 * KiB);      // splitting 64K down to 512 leaves 512, 1K, ..., 32K free
  EXPECT_EQ(s.free_bytes, 64 * KiB - 512);

  void* q = b.allocate(512);   // order 0: the free 512 B buddy of p
  void* r = b.allocate(513);   // order 1 (1 KiB): the free 1K at offset 1K
  void* t = b.allocate(3000);  // order 3 (4 KiB): the free 4K at offset 4K
  void* u = b.allocate(2048);  // order 2 (2 KiB): the free 2K at offset 2K
  EXPECT_EQ(distance(p, q), 512);
  EXPECT_EQ(distance(p, r), 1024);
  EXPECT_EQ(distance(p, t), 4096);
  EXPECT_EQ(distance(p, u), 2048);
  s = b.stats();
  EXPECT_EQ(s.allocated_bytes.current, 512u + 512 + 1024 + 4096 + 2048);
  EXPECT_EQ(s.largest_free_block, 32 * KiB);  // 8K, 16K, 32K still free; offsets 0..8K all allocated
  EXPECT_EQ(s.reserved_bytes.current, 64 * KiB);

  b.deallocate(q, 512);
  b.deallocate(p, 1);  // merges with q into the 1K block at offset 0; its buddy r is allocated
  void* merged = b.allocate(1024);
  EXPECT_EQ(merged, p) << "p and q merged into the only free 1 KiB block";
  b.deallocate(merged, 1024);
  b.deallocate(r, 513);   // 1K + 1K -> 2K at 0; buddy u allocated
  b.deallocate(u, 2048);  // 2K + 2K -> 4K at 0; buddy t allocated
  EXPECT_EQ(b.stats().largest_free_block, 32 * KiB);
  b.deallocate(t, 3000);  // 4K + 4K -> 8K, + 8K -> 16K, + 16K -> 32K, + 32K -> the whole arena
  s = b.stats();
  EXPECT_EQ(s.largest_free_block, 64 * KiB);
  EXPECT_EQ(s.allocated_bytes.current, 0u);
  EXPECT_EQ(s.free_bytes, 64 * KiB);
  EXPECT_EQ(s.reserved_bytes.current, 64 * KiB) << "arenas are kept until trim()";
}

TEST(Buddy, HandComputedSplitsAndMergesOnDevice) { hand_computed_splits<SimulatedUpstream>(); }
TEST(Buddy, HandComputedSplitsAndMergesOnHost) { hand_computed_splits<HostUpstream>(); }

template <class Memory>
void five_mib_rounds_to_eight() {
  Buddy<Memory> b("buddy:arena=16MiB");
  void* p = b.allocate(5 * MiB);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(address_of(p) % (8 * MiB), 0u) << "an order-14 block is aligned to its 8 MiB size";
  const AllocatorStats s = b.stats();
  EXPECT_EQ(s.allocated_bytes.current, 8 * MiB);  // 512 << 14 is the smallest block >= 5 MiB
  EXPECT_EQ(s.requested_bytes.current, 5 * MiB);
  EXPECT_EQ(s.reserved_bytes.current, 16 * MiB);
  EXPECT_EQ(s.largest_free_block, 8 * MiB);       // the other half of the arena
  b.deallocate(p, 5 * MiB);
  EXPECT_EQ(b.stats().allocated_bytes.current, 0u);
}

TEST(Buddy, FiveMiBRoundsToAnEightMiBBlockOnDevice) { five_mib_rounds_to_eight<SimulatedUpstream>(); }
TEST(Buddy, FiveMiBRoundsToAnEightMiBBlockOnHost) { five_mib_rounds_to_eight<HostUpstream>(); }

template <class Memory>
void every_alignment_up_to_4kib() {
  // min_block 16 so that the alignment, not the minimum block, decides the order.
  Buddy<Memory> b("buddy:min_block=16,arena=64KiB,cache=0");
  struct Hand {
    std::size_t size, alignment;
    std::uint64_t block;
  };
  // Worked out by hand: the block is the smallest power of two >= max(size, alignment, 16).
  const Hand hand[] = {{1, 1, 16}, {24, 1, 32}, {24, 4096, 4096}, {197, 64, 256}, {12293, 4096, 16384}, {2053, 512, 4096}};
  for (const Hand& h : hand) {
    const std::uint64_t before = b.stats().allocated_bytes.current;
    void* p = b.allocate(h.size, h.alignment);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(b.stats().allocated_bytes.current - before, h.block) << "size " << h.size << " alignment " << h.alignment;
    b.deallocate(p, h.size, h.alignment);
  }
  struct Live {
    void* p;
    std::size_t size, alignment;
  };
  std::vector<Live> blocks;
  std::uint64_t expected = 0;
  for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2) {
    for (const std::size_t size : {std::size_t{1}, std::size_t{24}, alignment, 3 * alignment + 5}) {
      void* p = b.allocate(size, alignment);
      ASSERT_NE(p, nullptr);
      expected += std::bit_ceil(std::max<std::size_t>({size, alignment, 16}));
      blocks.push_back({p, size, alignment});
    }
  }
  EXPECT_EQ(b.stats().allocated_bytes.current, expected);
  for (const Live& block : blocks) b.deallocate(block.p, block.size, block.alignment);
  const AllocatorStats s = b.stats();
  EXPECT_EQ(s.allocated_bytes.current, 0u);
  EXPECT_EQ(s.largest_free_block, 64 * KiB) << "every arena merged back whole";
  EXPECT_EQ(s.free_bytes, s.reserved_bytes.current);
  EXPECT_EQ(s.failed_requests, 0u);
}

TEST(Buddy, EveryAlignmentUpTo4KiBOnDevice) { every_alignment_up_to_4kib<SimulatedUpstream>(); }
TEST(Buddy, EveryAlignmentUpTo4KiBOnHost) { every_alignment_up_to_4kib<HostUpstream>(); }

template <class Memory>
void freeing_everything_merges_back(const std::string& spec, bool cached) {
  Buddy<Memory> b(spec);
  std::mt19937_64 rng(7);
  struct Live {
    void* p;
    std::size_t size;
  };
  std::vector<Live> blocks;
  for (int i = 0; i < 300; ++i) {
    const std::size_t size = 1 + rng() % (8 * KiB);
    void* p = b.allocate(size);
    ASSERT_NE(p, nullptr);
    blocks.push_back({p, size});
  }
  std::shuffle(blocks.begin(), blocks.end(), rng);
  for (const Live& block : blocks) b.deallocate(block.p, block.size);
  AllocatorStats s = b.stats();
  EXPECT_EQ(s.allocated_bytes.current, 0u);
  EXPECT_EQ(s.free_bytes, s.reserved_bytes.current) << "cached blocks count as free";
  EXPECT_EQ(s.reserved_bytes.current, s.upstream_allocs * 64 * KiB);
  if (!cached) {
    EXPECT_EQ(s.largest_free_block, 64 * KiB) << "with cache=0 every arena is one free top-order block";
  }
  // Only wholly free arenas go back: all of them do, so everything merged (through the drain).
  b.trim();
  s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 0u);
  EXPECT_EQ(s.upstream_frees, s.upstream_allocs);
  EXPECT_EQ(b.memory.stats().bytes.current, 0u);
}

TEST(Buddy, FreeingEverythingMergesBackWithoutCache) {
  freeing_everything_merges_back<SimulatedUpstream>("buddy:arena=64KiB,cache=0", false);
  freeing_everything_merges_back<HostUpstream>("buddy:arena=64KiB,cache=0", false);
}
TEST(Buddy, FreeingEverythingMergesBackAfterTrimWithDefaultCache) {
  freeing_everything_merges_back<SimulatedUpstream>("buddy:arena=64KiB", true);
  freeing_everything_merges_back<HostUpstream>("buddy:arena=64KiB", true);
}

// ---------------------------------------------------------------------------------------------
// The per-order cache

template <class Memory>
void cache_hits_leave_the_buddy_alone() {
  // Orders 0..2 (4K, 8K, 16K), one cached block per order.
  Buddy<Memory> b("buddy:min_block=4KiB,arena=16KiB,cache=1");
  void* a = b.allocate(4 * KiB);
  void* c = b.allocate(4 * KiB);
  EXPECT_EQ(distance(a, c), 4096) << "the buddy of the first block";
  EXPECT_EQ(b.stats().largest_free_block, 8 * KiB);  // 8K at offset 8K
  b.deallocate(a, 4 * KiB);  // cached: still an allocated head for the buddy structures
  EXPECT_EQ(b.stats().largest_free_block, 8 * KiB);
  EXPECT_EQ(b.stats().free_bytes, 12 * KiB);  // 16K - c's 4K: the cached block counts as free
  b.deallocate(c, 4 * KiB);  // cache full: eager, but its buddy a is cached, so no merge
  EXPECT_EQ(b.stats().largest_free_block, 8 * KiB) << "an eager buddy would have merged back to 16 KiB here";
  EXPECT_EQ(b.stats().free_bytes, 16 * KiB);
  void* hit = b.allocate(100);  // order 0: the cached block
  EXPECT_EQ(hit, a);
  EXPECT_EQ(b.stats().largest_free_block, 8 * KiB) << "free 4K at 4K and 8K at 8K, untouched by the hit";
  void* miss = b.allocate(4 * KiB);  // cache empty: the free 4K at offset 4K
  EXPECT_EQ(miss, c);
  b.deallocate(hit, 100);
  b.deallocate(miss, 4 * KiB);
  b.trim();
  EXPECT_EQ(b.stats().reserved_bytes.current, 0u);

  Buddy<Memory> eager("buddy:min_block=4KiB,arena=16KiB,cache=0");
  a = eager.allocate(4 * KiB);
  c = eager.allocate(4 * KiB);
  eager.deallocate(a, 4 * KiB);
  eager.deallocate(c, 4 * KiB);
  EXPECT_EQ(eager.stats().largest_free_block, 16 * KiB);  // 4K + 4K -> 8K, + 8K -> 16K
}

TEST(Buddy, CacheHitsDoNotTouchTheBuddyStructuresOnDevice) { cache_hits_leave_the_buddy_alone<SimulatedUpstream>(); }
TEST(Buddy, CacheHitsDoNotTouchTheBuddyStructuresOnHost) { cache_hits_leave_the_buddy_alone<HostUpstream>(); }

template <class Memory>
void cached_blocks_after_freeing_everything() {
  Buddy<Memory> b("buddy:arena=64KiB");  // min_block 512, cache 8
  std::vector<void*> blocks;
  for (int i = 0; i < 100; ++i) blocks.push_back(b.allocate(512));  // blocks 0..99 of one 128-block arena
  EXPECT_EQ(b.stats().upstream_allocs, 1u);
  for (void* p : blocks) b.deallocate(p, 512);
  // Blocks 0..7 are cached (allocated heads); 8..15 merge to 4K at 4K, 16..31 to 8K at 8K, 32..63 to
  // 16K at 16K, 64..99 with the never-used 100..127 to 32K at 32K; none can merge past offset 0..4K.
  AllocatorStats s = b.stats();
  EXPECT_EQ(s.largest_free_block, 32 * KiB);
  EXPECT_EQ(s.free_bytes, 64 * KiB);
  EXPECT_EQ(s.allocated_bytes.current, 0u);
  void* again = b.allocate(512);
  EXPECT_EQ(again, blocks[7]) << "the cache is LIFO: the eighth block freed comes back first";
  b.deallocate(again, 512);
  b.trim();  // drain: 0..7 merge with the rest into the whole arena, which goes back upstream
  s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 0u);
  EXPECT_EQ(s.upstream_frees, 1u);
  EXPECT_EQ(s.largest_free_block, 0u);
}

TEST(Buddy, CachedBlocksAreFreeInStatsButUnmergedOnDevice) { cached_blocks_after_freeing_everything<SimulatedUpstream>(); }
TEST(Buddy, CachedBlocksAreFreeInStatsButUnmergedOnHost) { cached_blocks_after_freeing_everything<HostUpstream>(); }

template <class Memory>
void miss_drains_the_caches(const std::string& memory_spec) {
  // One arena fills the capacity, so a new arena is impossible: only the drain can serve the miss.
  Buddy<Memory> b("buddy:arena=64KiB,cache=8", memory_spec);
  std::vector<void*> blocks;
  for (int i = 0; i < 128; ++i) blocks.push_back(b.allocate(512));  // 128 x 512 = the whole arena
  ASSERT_NE(blocks.back(), nullptr);
  EXPECT_EQ(b.stats().largest_free_block, 0u);
  for (int i = 0; i < 8; ++i) b.deallocate(blocks[i], 512);  // all eight cached at order 0
  EXPECT_EQ(b.stats().largest_free_block, 512u);
  void* p = b.allocate(1000);  // order 1: nothing free; the drain merges blocks 0..7 into 4K at 0
  EXPECT_EQ(p, blocks[0]);
  const AllocatorStats s = b.stats();
  EXPECT_EQ(s.largest_free_block, 2 * KiB);  // 1K at 1K and 2K at 2K remain
  EXPECT_EQ(s.upstream_allocs, 1u);
  EXPECT_EQ(s.failed_requests, 0u);
  EXPECT_EQ(b.memory.stats().failed, 0u) << "no new arena was asked for";
  b.deallocate(p, 1000);
  for (int i = 8; i < 128; ++i) b.deallocate(blocks[i], 512);
}

TEST(Buddy, AMissDrainsTheCachesBeforeGrowingOnDevice) { miss_drains_the_caches<SimulatedUpstream>("simulated:capacity=64KiB"); }
TEST(Buddy, AMissDrainsTheCachesBeforeGrowingOnHost) { miss_drains_the_caches<HostUpstream>("host:capacity=64KiB"); }

// ---------------------------------------------------------------------------------------------
// Dedicated arenas, exhaustion, trim

template <class Memory>
void dedicated_arenas() {
  Buddy<Memory> b("buddy:arena=1MiB");  // min_block 512: top order 11
  void* p = b.allocate(3 * MiB);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(address_of(p) % (4 * MiB), 0u);
  AllocatorStats s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 4 * MiB);  // the next power of two >= 3 MiB, an arena of its own
  EXPECT_EQ(s.allocated_bytes.current, 4 * MiB);
  EXPECT_EQ(s.upstream_allocs, 1u);
  EXPECT_EQ(s.largest_free_block, 0u);

  void* q = b.allocate(1 * KiB);  // a dedicated arena is never split: a new 1 MiB arena
  s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 5 * MiB);
  EXPECT_EQ(s.upstream_allocs, 2u);
  EXPECT_EQ(s.largest_free_block, 512 * KiB);  // 1K, 2K, ..., 512K free in the new arena

  b.deallocate(p, 3 * MiB);  // order 13 > top: never cached; the dedicated arena is wholly free
  EXPECT_EQ(b.stats().largest_free_block, 4 * MiB);
  void* r = b.allocate(2 * MiB + 1);  // order 13 again: the free dedicated arena serves it
  EXPECT_EQ(r, p);
  EXPECT_EQ(b.stats().upstream_allocs, 2u);
  void* t = b.allocate(2 * MiB);  // order 12: another dedicated arena
  EXPECT_EQ(address_of(t) % (2 * MiB), 0u);
  s = b.stats();
  EXPECT_EQ(s.upstream_allocs, 3u);
  EXPECT_EQ(s.reserved_bytes.current, 7 * MiB);
  EXPECT_EQ(s.allocated_bytes.current, 4 * MiB + 1 * KiB + 2 * MiB);

  void* whole = b.allocate(16, 1 * MiB);  // alignment = arena: a whole standard arena (order 11)
  ASSERT_NE(whole, nullptr);
  EXPECT_EQ(b.stats().allocated_bytes.current - s.allocated_bytes.current, 1 * MiB);
  EXPECT_EQ(b.allocate(16, 2 * MiB), nullptr) << "alignment above the arena size";
  EXPECT_EQ(b.stats().failed_requests, 1u);

  b.deallocate(whole, 16, 1 * MiB);
  b.deallocate(r, 2 * MiB + 1);
  b.deallocate(t, 2 * MiB);
  b.deallocate(q, 1 * KiB);  // cached
  b.trim();
  s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 0u);
  EXPECT_EQ(s.upstream_frees, s.upstream_allocs);
  EXPECT_EQ(s.upstream_allocs, 4u);  // 4 MiB, 1 MiB, 2 MiB, 1 MiB
}

TEST(Buddy, OversizeRequestsGetADedicatedArenaOnDevice) { dedicated_arenas<SimulatedUpstream>(); }
TEST(Buddy, OversizeRequestsGetADedicatedArenaOnHost) { dedicated_arenas<HostUpstream>(); }

template <class Memory>
void exhaustion(const std::string& memory_spec) {
  // 256 KiB of capacity = four 64 KiB arenas of four 16 KiB (order 5) blocks each.
  Buddy<Memory> b("buddy:arena=64KiB,cache=8", memory_spec);
  std::vector<void*> blocks;
  for (int i = 0; i < 16; ++i) {
    blocks.push_back(b.allocate(16 * KiB));
    ASSERT_NE(blocks.back(), nullptr) << "block " << i;
  }
  EXPECT_EQ(b.allocate(16 * KiB), nullptr) << "the 17th block needs a fifth arena";
  AllocatorStats s = b.stats();
  EXPECT_EQ(s.failed_requests, 1u);
  EXPECT_EQ(s.allocs, 16u);
  EXPECT_EQ(s.reserved_bytes.current, 256 * KiB);
  EXPECT_EQ(b.memory.stats().failed, 1u);  // one refusal; nothing wholly free, so no second try

  b.deallocate(blocks[5], 16 * KiB);  // cached
  void* again = b.allocate(16 * KiB);
  EXPECT_EQ(again, blocks[5]) << "a cache hit after the failure";
  blocks[5] = again;
  EXPECT_EQ(b.stats().failed_requests, 1u);

  // Free everything: blocks 0..7 (arenas 1 and 2) stay cached, arenas 3 and 4 merge back whole.
  for (void* p : blocks) b.deallocate(p, 16 * KiB);
  // 128 KiB (order 8 > top 7) needs a dedicated arena; upstream refuses (256 KiB held), so the
  // caches are drained, all four arenas are then wholly free and go back, and the retry succeeds.
  void* big = b.allocate(128 * KiB);
  ASSERT_NE(big, nullptr);
  s = b.stats();
  EXPECT_EQ(s.failed_requests, 1u);
  EXPECT_EQ(s.upstream_frees, 4u);
  EXPECT_EQ(s.reserved_bytes.current, 128 * KiB);
  EXPECT_EQ(b.memory.stats().failed, 2u);
  b.deallocate(big, 128 * KiB);
}

TEST(Buddy, ExhaustionIsACountedFailureAndFreesRecoverOnDevice) { exhaustion<SimulatedUpstream>("simulated:capacity=256KiB"); }
TEST(Buddy, ExhaustionIsACountedFailureAndFreesRecoverOnHost) { exhaustion<HostUpstream>("host:capacity=256KiB"); }

template <class Memory>
void trim_releases_wholly_free_arenas() {
  Buddy<Memory> b("buddy:arena=64KiB");
  void* a = b.allocate(32 * KiB);
  void* c = b.allocate(32 * KiB);  // arena 1 full
  void* d = b.allocate(64 * KiB);  // arena 2, whole
  void* e = b.allocate(512);       // arena 3
  EXPECT_EQ(b.stats().reserved_bytes.current, 3 * 64 * KiB);
  b.deallocate(a, 32 * KiB);
  b.deallocate(c, 32 * KiB);
  b.deallocate(d, 64 * KiB);  // all three cached
  EXPECT_EQ(b.stats().largest_free_block, 64 * KiB);  // d, cached
  b.trim();  // arenas 1 and 2 are wholly free once drained; arena 3 holds e
  AllocatorStats s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 64 * KiB);
  EXPECT_EQ(s.upstream_frees, 2u);
  EXPECT_EQ(b.memory.stats().bytes.current, 64 * KiB);
  EXPECT_EQ(s.largest_free_block, 32 * KiB);  // arena 3 split down to 512
  b.deallocate(e, 512);
  b.trim();
  s = b.stats();
  EXPECT_EQ(s.reserved_bytes.current, 0u);
  EXPECT_EQ(s.upstream_frees, 3u);
  EXPECT_EQ(s.free_bytes, 0u);
  EXPECT_EQ(s.largest_free_block, 0u);
  EXPECT_EQ(b.memory.stats().bytes.current, 0u);
}

TEST(Buddy, TrimReleasesOnlyWhollyFreeArenasOnDevice) { trim_releases_wholly_free_arenas<SimulatedUpstream>(); }
TEST(Buddy, TrimReleasesOnlyWhollyFreeArenasOnHost) { trim_releases_wholly_free_arenas<HostUpstream>(); }

// ---------------------------------------------------------------------------------------------
// Churn across many arenas (deallocate's binary search) with stats checked against the rule

template <class Memory>
void random_churn() {
  Buddy<Memory> b("buddy:arena=64KiB,cache=4");
  std::mt19937_64 rng(20260401);
  std::uniform_real_distribution<double> log_size(0.0, std::log(200.0 * KiB));  // some above 64 KiB: dedicated
  const std::size_t alignments[] = {16, 16, 16, 1, 64, 256, 4096};
  struct Live {
    void* p;
    std::size_t size, alignment;
  };
  std::vector<Live> blocks;
  std::uint64_t allocated = 0;
  for (int op = 0; op < 6000; ++op) {
    if (blocks.empty() || (blocks.size() < 300 && rng() % 100 < 55)) {
      const std::size_t size = std::max<std::size_t>(1, static_cast<std::size_t>(std::exp(log_size(rng))));
      const std::size_t alignment = alignments[rng() % std::size(alignments)];
      void* p = b.allocate(size, alignment);
      ASSERT_NE(p, nullptr) << "op " << op;
      blocks.push_back({p, size, alignment});
      allocated += std::bit_ceil(std::max<std::size_t>({size, alignment, 512}));
    } else {
      const std::size_t victim = rng() % blocks.size();
      const Live block = blocks[victim];
      blocks[victim] = blocks.back();
      blocks.pop_back();
      b.deallocate(block.p, block.size, block.alignment);
      allocated -= std::bit_ceil(std::max<std::size_t>({block.size, block.alignment, 512}));
    }
    ASSERT_EQ(b.stats().allocated_bytes.current, allocated) << "op " << op;
    ASSERT_EQ(b.stats().reserved_bytes.current, b.memory.stats().bytes.current);
  }
  EXPECT_GT(b.stats().upstream_allocs, 10u) << "the churn should spread over many arenas";
  for (const Live& block : blocks) b.deallocate(block.p, block.size, block.alignment);
  b.trim();
  EXPECT_EQ(b.stats().reserved_bytes.current, 0u);
  EXPECT_EQ(b.stats().failed_requests, 0u);
}

TEST(Buddy, RandomChurnOverManyArenasOnDevice) { random_churn<SimulatedUpstream>(); }
TEST(Buddy, RandomChurnOverManyArenasOnHost) { random_churn<HostUpstream>(); }

// ---------------------------------------------------------------------------------------------
// Scale: an 80 GiB simulated device

TEST(Buddy, EightyGiBDeviceKeepsMetadataSmall) {
  const std::uint64_t rss_before = testing::resident_bytes();
  SimulatedUpstream device(make_options("simulated:capacity=80GiB", "simulated", SimulatedUpstream::option_specs()));
  BuddyAllocator a(make_options("buddy:arena=1GiB", "buddy", BuddyAllocator::option_specs()), device);
  std::vector<void*> blocks;
  for (int i = 0; i < 10'000; ++i) {
    void* p = a.allocate(8 * MiB, kDefaultAlignment, 0);
    ASSERT_NE(p, nullptr) << "allocation " << i + 1;
    blocks.push_back(p);
    if (i % 1000 == 999) {
      ASSERT_EQ(a.check_invariants(), "") << "after " << i + 1;
    }
  }
  // 128 blocks of 8 MiB per 1 GiB arena: 10,000 blocks need ceil(10000 / 128) = 79 arenas.
  EXPECT_EQ(a.stats().reserved_bytes.current, 79 * GiB);
  EXPECT_EQ(a.stats().upstream_allocs, 79u);
  // 80 GiB holds 80 arenas = 10,240 blocks: the 10,001st through 10,240th succeed, the 10,241st fails.
  for (int i = 10'000; i < 10'240; ++i) {
    void* p = a.allocate(8 * MiB, kDefaultAlignment, 0);
    ASSERT_NE(p, nullptr) << "allocation " << i + 1;
    blocks.push_back(p);
  }
  EXPECT_EQ(a.allocate(8 * MiB, kDefaultAlignment, 0), nullptr) << "allocation 10,241";
  AllocatorStats s = a.stats();
  EXPECT_EQ(s.failed_requests, 1u);
  EXPECT_EQ(s.reserved_bytes.current, 80 * GiB);
  EXPECT_EQ(s.allocated_bytes.current, 80 * GiB);
  EXPECT_EQ(s.largest_free_block, 0u);
  ASSERT_EQ(a.check_invariants(), "");
  // About 4 bits per 512 B block: 80 x 2^21 x 4 bits = 80 MiB, plus 1/63 for the summaries.
  const std::uint64_t rss_after = testing::resident_bytes();
  const std::uint64_t growth = rss_after > rss_before ? rss_after - rss_before : 0;
  std::printf("  host memory growth for 80 GiB of arenas: %.1f MiB\n", static_cast<double>(growth) / MiB);
  if (testing::kResidentBoundsHold) {
    EXPECT_LT(growth, 256 * MiB);
  }
  for (void* p : blocks) a.deallocate(p, 8 * MiB, kDefaultAlignment, 0);
  a.trim();
  EXPECT_EQ(a.check_invariants(), "");
  EXPECT_EQ(a.stats().reserved_bytes.current, 0u);
  EXPECT_EQ(device.stats().bytes.current, 0u);
}

// ---------------------------------------------------------------------------------------------
// Options and the debug check

TEST(Buddy, OptionsAreValidated) {
  SimulatedUpstream device(make_options("simulated", "simulated", SimulatedUpstream::option_specs()));
  auto build = [&](const std::string& spec) {
    BuddyAllocator a(make_options(spec, "buddy", BuddyAllocator::option_specs()), device);
  };
  EXPECT_THROW(build("buddy:min_block=24"), InputError);       // not a power of two
  EXPECT_THROW(build("buddy:min_block=8"), InputError);        // below 16
  EXPECT_THROW(build("buddy:arena=3MiB"), InputError);         // not a power of two
  EXPECT_THROW(build("buddy:min_block=1KiB,arena=512"), InputError);  // arena below min_block
  EXPECT_THROW(build("buddy:min_block=16,arena=128GiB"), InputError);  // 2^33 blocks per arena
  EXPECT_THROW(build("buddy:cache=100000"), InputError);
  EXPECT_NO_THROW(build("buddy:min_block=16,arena=16"));       // one order only
  EXPECT_EQ(make_allocator("buddy", device)->config(), "buddy:min_block=512,arena=1GiB,cache=8");
}

TEST(Buddy, ArenaOfOneMinBlockStillWorks) {
  OnDevice b("buddy:min_block=4KiB,arena=4KiB,cache=2");  // top order 0: every arena is one block
  void* p = b.allocate(100);
  void* q = b.allocate(4 * KiB);
  void* r = b.allocate(5 * KiB);  // order 1: a dedicated 8 KiB arena
  EXPECT_EQ(b.stats().reserved_bytes.current, 16 * KiB);
  b.deallocate(p, 100);
  b.deallocate(q, 4 * KiB);
  b.deallocate(r, 5 * KiB);
  b.trim();
  EXPECT_EQ(b.stats().reserved_bytes.current, 0u);
}

TEST(BuddyDeathTest, FreeingAnAddressThatIsNotABlockAbortsInDebugBuilds) {
#ifdef NDEBUG
  GTEST_SKIP() << "the check is an assert";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        SimulatedUpstream device(make_options("simulated", "simulated", SimulatedUpstream::option_specs()));
        BuddyAllocator a(make_options("buddy:arena=64KiB", "buddy", BuddyAllocator::option_specs()), device);
        void* p = a.allocate(1024, 16, 0);
        a.deallocate(static_cast<char*>(p) + 512, 512, 16, 0);  // inside a block, not a head
      },
      "not live");
#endif
}

}  // namespace
}  // namespace tiermark
