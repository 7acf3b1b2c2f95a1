// caching.bfc: rounding, bins and the upward search, the split rule both ways, coalescing, region
// growth (doubling, back-off x0.9, the memory limit), the single region without growth, garbage
// collection on a miss, trim(), OOM and recovery, over-aligned requests, TF's counters, and seeded
// random churn against a model. Every expected number is derived by hand in a comment from the rules
// in caching_bfc_allocator.h (TF bfc_allocator.cc); check_invariants() runs after every operation.
#include "allocators/caching_bfc_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "allocators/registry.h"
#include "common/input_error.h"
#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;

static_assert(AllocatorImpl<CachingBfcAllocator>);

Options bfc_options(const std::string& settings) {
  return make_options(settings.empty() ? "caching.bfc" : "caching.bfc:" + settings, CachingBfcAllocator::kName,
                      CachingBfcAllocator::option_specs());
}

// A BFC allocator on its own upstream; allocate()/deallocate() check the invariants after every
// operation and keep an independent model of live blocks (no overlap; contents on host memory).
class Bfc {
 public:
  Bfc(const std::string& memory, const std::string& settings)
      : upstream_(make_upstream(memory)), bfc_(bfc_options(settings), *upstream_), calls_(bfc_, upstream_->touchable()) {}

  void* allocate(std::size_t size, std::size_t alignment = kDefaultAlignment) { return calls_.allocate(size, alignment); }
  void deallocate(void* p, std::size_t size, std::size_t alignment = kDefaultAlignment) {
    calls_.deallocate(p, size, alignment);
  }
  void trim() { calls_.trim(); }

  CachingBfcAllocator& operator*() { return bfc_; }
  CachingBfcAllocator* operator->() { return &bfc_; }
  Upstream& upstream() { return *upstream_; }
  // Offset of p from the first region's base.
  std::uint64_t offset(const void* p) const { return address_of(p) - bfc_.regions().front().address; }
  std::uint64_t region_base() const { return bfc_.regions().front().address; }
  // (offset from the first region's base, size, in use) of every chunk.
  std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>> layout() const {
    std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>> out;
    for (const auto& c : bfc_.chunks()) out.emplace_back(c.address - region_base(), c.size, c.in_use);
    return out;
  }

 private:
  std::unique_ptr<Upstream> upstream_;
  CachingBfcAllocator bfc_;
  testing::CheckedCalls<CachingBfcAllocator> calls_;
};

using Layout = std::vector<std::tuple<std::uint64_t, std::uint64_t, bool>>;

TEST(CachingBfc, RoundsEveryRequestUpTo256Bytes) {
  Bfc bfc("simulated", "");
  // 1 -> 256; 256 -> 256; 257 -> 512; 1000 -> 1024 (4 x 256). Each comes from the 2 MiB first
  // region's tail, which is always at least twice the request, so each is split to its rounded size.
  const std::size_t sizes[] = {1, 256, 257, 1000};
  const std::uint64_t rounded[] = {256, 256, 512, 1024};
  std::uint64_t allocated = 0, requested = 0;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(CachingBfcAllocator::rounded_bytes(sizes[i]), rounded[i]);
    ASSERT_NE(bfc.allocate(sizes[i]), nullptr);
    allocated += rounded[i];
    requested += sizes[i];
    EXPECT_EQ(bfc->stats().allocated_bytes.current, allocated);
    EXPECT_EQ(bfc->stats().requested_bytes.current, requested);
  }
  // 256 + 256 + 512 + 1024 = 2048 in use; the rest of the 2 MiB region is one free chunk.
  EXPECT_EQ(allocated, 2048u);
  EXPECT_EQ(bfc->stats().free_bytes, 2 * MiB - 2048);
  EXPECT_EQ(bfc->stats().largest_free_block, 2 * MiB - 2048);
}

TEST(CachingBfc, BinOfASizeIsFloorLog2OfSizeOver256CappedAt20) {
  using A = CachingBfcAllocator;
  EXPECT_EQ(A::bin_for_size(256), 0u);              // 256 >> 8 = 1, log2 0
  EXPECT_EQ(A::bin_for_size(511), 0u);              // 1.99 -> 1
  EXPECT_EQ(A::bin_for_size(512), 1u);              // 2
  EXPECT_EQ(A::bin_for_size(3 * KiB), 3u);          // 12 -> floor(log2 12) = 3
  EXPECT_EQ(A::bin_for_size(MiB), 12u);             // 4096 = 2^12
  EXPECT_EQ(A::bin_for_size(256 * MiB - 256), 19u); // 2^20 - 1 -> 19
  EXPECT_EQ(A::bin_for_size(256 * MiB), 20u);       // 2^20
  EXPECT_EQ(A::bin_for_size(64 * 1024 * MiB), 20u); // 64 GiB: everything from 256 MiB is bin 20
}

TEST(CachingBfc, SearchStartsAtTheRequestsBinAndWalksUpward) {
  Bfc bfc("simulated", "");
  // One 2 MiB region, carved front to back: A 1 KiB, B 256, C 4 KiB, D 256, E 16 KiB, F 256, rest.
  //   A [0, 1024)  B [1024, 1280)  C [1280, 5376)  D [5376, 5632)  E [5632, 22016)  F [22016, 22272)
  void* a = bfc.allocate(KiB);
  void* b = bfc.allocate(256);
  void* c = bfc.allocate(4 * KiB);
  void* d = bfc.allocate(256);
  void* e = bfc.allocate(16 * KiB);
  void* f = bfc.allocate(256);
  EXPECT_EQ(bfc.offset(c), 1280u);
  EXPECT_EQ(bfc.offset(e), 5632u);
  // Freeing A, C, E leaves free chunks of 1 KiB (bin 2), 4 KiB (bin 4) and 16 KiB (bin 6), each
  // between chunks in use, so nothing merges.
  bfc.deallocate(a, KiB);
  bfc.deallocate(c, 4 * KiB);
  bfc.deallocate(e, 16 * KiB);
  // 2 KiB is bin 3, empty; bin 4 holds C: taken, and 4 KiB >= 2 x 2 KiB splits it: C's front 2 KiB.
  void* x = bfc.allocate(2 * KiB);
  EXPECT_EQ(bfc.offset(x), 1280u);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 3 * 256 + 2 * KiB);
  // 3 KiB is bin 3 (12 -> 3): it holds C's 2 KiB tail, too small; bins 4, 5 are empty; bin 6 has E.
  // 16 KiB >= 6 KiB: split, the caller gets E's front.
  void* y = bfc.allocate(3 * KiB);
  EXPECT_EQ(bfc.offset(y), 5632u);
  // 1 KiB is bin 2, which holds A exactly: no split (1 KiB < 2 KiB, slack 0).
  void* z = bfc.allocate(KiB);
  EXPECT_EQ(bfc.offset(z), 0u);
  for (auto [p, n] : {std::pair{b, 256ul}, {d, 256ul}, {f, 256ul}, {x, 2 * KiB}, {y, 3 * KiB}, {z, KiB}}) {
    bfc.deallocate(p, n);
  }
  EXPECT_EQ(bfc.layout(), (Layout{{0, 2 * MiB, false}}));
}

TEST(CachingBfc, EqualSizesGoToTheLowestAddress) {
  Bfc bfc("simulated", "");
  // A 8 KiB, B 256, C 8 KiB, D 256: A at 0, C at 8448. Free C, then A: two free 8 KiB chunks.
  void* a = bfc.allocate(8 * KiB);
  void* b = bfc.allocate(256);
  void* c = bfc.allocate(8 * KiB);
  void* d = bfc.allocate(256);
  bfc.deallocate(c, 8 * KiB);
  bfc.deallocate(a, 8 * KiB);
  // (size, address) order: A's 8 KiB at 0 sorts first.
  void* x = bfc.allocate(8 * KiB);
  EXPECT_EQ(bfc.offset(x), 0u);
  bfc.deallocate(x, 8 * KiB);
  bfc.deallocate(b, 256);
  bfc.deallocate(d, 256);
}

TEST(CachingBfc, OneMiBInA1Point5MiBChunkIsNotSplitButInA2MiBChunkIs) {
  {
    // One region of 1.5 MiB. 1.5 MiB < 2 x 1 MiB and the slack 0.5 MiB < 128 MiB: the whole chunk.
    Bfc bfc("simulated", "allow_growth=false,memory_limit=1536KiB");
    ASSERT_NE(bfc.allocate(MiB), nullptr);
    EXPECT_EQ(bfc->stats().allocated_bytes.current, 1536 * KiB);  // 512 KiB of internal waste
    EXPECT_EQ(bfc->stats().requested_bytes.current, MiB);
    EXPECT_EQ(bfc->stats().free_bytes, 0u);
    EXPECT_EQ(bfc.layout(), (Layout{{0, 1536 * KiB, true}}));
  }
  {
    // 2 MiB >= 2 x 1 MiB: split into 1 MiB in use and 1 MiB free.
    Bfc bfc("simulated", "allow_growth=false,memory_limit=2MiB");
    ASSERT_NE(bfc.allocate(MiB), nullptr);
    EXPECT_EQ(bfc->stats().allocated_bytes.current, MiB);
    EXPECT_EQ(bfc.layout(), (Layout{{0, MiB, true}, {MiB, MiB, false}}));
  }
}

TEST(CachingBfc, SlackOf128MiBSplitsEvenBelowTwiceTheRequest) {
  {
    // 384 MiB < 2 x 200 MiB, but the slack 184 MiB >= 128 MiB: split.
    Bfc bfc("simulated", "allow_growth=false,memory_limit=384MiB");
    ASSERT_NE(bfc.allocate(200 * MiB), nullptr);
    EXPECT_EQ(bfc->stats().allocated_bytes.current, 200 * MiB);
    EXPECT_EQ(bfc.layout(), (Layout{{0, 200 * MiB, true}, {200 * MiB, 184 * MiB, false}}));
  }
  {
    // 320 MiB < 400 MiB and the slack 120 MiB < 128 MiB: not split, 120 MiB wasted inside.
    Bfc bfc("simulated", "allow_growth=false,memory_limit=320MiB");
    ASSERT_NE(bfc.allocate(200 * MiB), nullptr);
    EXPECT_EQ(bfc->stats().allocated_bytes.current, 320 * MiB);
  }
  {
    // fragmentation_fraction=0.25 of a 1.5 MiB limit: slack threshold 384 KiB. 1 MiB in 1.5 MiB
    // leaves 512 KiB >= 384 KiB: split (without the option it is not, as above).
    Bfc bfc("simulated", "allow_growth=false,memory_limit=1536KiB,fragmentation_fraction=0.25");
    ASSERT_NE(bfc.allocate(MiB), nullptr);
    EXPECT_EQ(bfc->stats().allocated_bytes.current, MiB);
  }
}

TEST(CachingBfc, FreeMergesWithBothNeighbours) {
  Bfc bfc("simulated", "");
  // 2 MiB region: A [0, 256K) B [256K, 512K) C [512K, 768K), rest [768K, 2M) free (1.25 MiB).
  void* a = bfc.allocate(256 * KiB);
  void* b = bfc.allocate(256 * KiB);
  void* c = bfc.allocate(256 * KiB);
  bfc.deallocate(a, 256 * KiB);  // previous: none (region start); next: B in use. No merge.
  EXPECT_EQ(bfc.layout(), (Layout{{0, 256 * KiB, false},
                                  {256 * KiB, 256 * KiB, true},
                                  {512 * KiB, 256 * KiB, true},
                                  {768 * KiB, 1280 * KiB, false}}));
  // Free = 256 KiB + 1280 KiB = 1536 KiB, largest 1280 KiB: (1536 - 1280) / 1536 = 1/6.
  EXPECT_DOUBLE_EQ(bfc->memory_stats().fragmentation, 1.0 / 6.0);
  bfc.deallocate(c, 256 * KiB);  // merges with the free tail: [512K, 2M) = 1.5 MiB
  EXPECT_EQ(bfc.layout(), (Layout{{0, 256 * KiB, false}, {256 * KiB, 256 * KiB, true}, {512 * KiB, 1536 * KiB, false}}));
  bfc.deallocate(b, 256 * KiB);  // merges with both: one 2 MiB chunk
  EXPECT_EQ(bfc.layout(), (Layout{{0, 2 * MiB, false}}));
  EXPECT_EQ(bfc->stats().largest_free_block, 2 * MiB);
  EXPECT_DOUBLE_EQ(bfc->memory_stats().fragmentation, 0.0);
}

TEST(CachingBfc, RegionsGrow2Then4Then8MiBAndALargeRequestDoublesUntilItFits) {
  Bfc bfc("simulated", "");
  std::vector<void*> blocks;
  // 1 MiB requests: region 1 (2 MiB) holds 2, region 2 (4 MiB) holds 4, region 3 (8 MiB) the 7th.
  const std::uint64_t regions_after[] = {1, 1, 2, 2, 2, 2, 3};
  const std::uint64_t reserved_after[] = {2, 2, 6, 6, 6, 6, 14};
  for (int i = 0; i < 7; ++i) {
    blocks.push_back(bfc.allocate(MiB));
    ASSERT_NE(blocks.back(), nullptr);
    EXPECT_EQ(bfc->regions().size(), regions_after[i]) << "after request " << i + 1;
    EXPECT_EQ(bfc->stats().reserved_bytes.current, reserved_after[i] * MiB) << "after request " << i + 1;
  }
  EXPECT_EQ(bfc->next_region_bytes(), 16 * MiB);
  // 40 MiB: no free chunk fits (7 MiB free in region 3); 16 -> 32 -> 64 MiB covers it. That region
  // was enlarged for the request, so the next one stays 64 MiB. 64 MiB < 2 x 40 and the slack 24 MiB
  // < 128 MiB: the whole region is handed out.
  void* big = bfc.allocate(40 * MiB);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(bfc->regions().size(), 4u);
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 78 * MiB);  // 2 + 4 + 8 + 64
  EXPECT_EQ(bfc->next_region_bytes(), 64 * MiB);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 7 * MiB + 64 * MiB);
  EXPECT_EQ(bfc->stats().upstream_allocs, 4u);
  const BfcMemoryStats tf = bfc->memory_stats();
  EXPECT_EQ(tf.num_allocs, 8u);
  EXPECT_EQ(tf.bytes_in_use, 71 * MiB);
  EXPECT_EQ(tf.peak_bytes_in_use, 71 * MiB);
  EXPECT_EQ(tf.largest_alloc_size, 64 * MiB);
  EXPECT_EQ(tf.bytes_reserved, 78 * MiB);
  EXPECT_EQ(tf.peak_bytes_reserved, 78 * MiB);
  EXPECT_EQ(tf.bytes_limit, 80 * 1024 * MiB);  // the simulated device's default capacity
  EXPECT_EQ(tf.num_regions, 4u);
  bfc.deallocate(big, 40 * MiB);
  for (void* p : blocks) bfc.deallocate(p, MiB);
  EXPECT_EQ(bfc->memory_stats().bytes_in_use, 0u);
  EXPECT_EQ(bfc->memory_stats().peak_bytes_in_use, 71 * MiB);
}

TEST(CachingBfc, UpstreamRefusalBacksOffByNineTenthsOnce) {
  // 10 MiB device, a 1 GiB limit so that the limit does not clamp the regions: upstream refuses.
  Bfc bfc("simulated:capacity=10MiB", "memory_limit=1GiB");
  std::vector<void*> blocks;
  for (int i = 0; i < 6; ++i) blocks.push_back(bfc.allocate(MiB));  // regions 2 MiB and 4 MiB, full
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 6 * MiB);
  EXPECT_EQ(bfc.upstream().stats().failed, 0u);
  // The 7th wants an 8 MiB region; 4 MiB (4,194,304 B) are left. Each step: floor(x 0.9), up to 256:
  //   8,388,608 -> 7,549,747 -> 7,549,952 (refused)   7,549,952 -> 6,795,008 (refused)
  //   6,795,008 -> 6,115,584 (refused)                6,115,584 -> 5,504,256 (refused)
  //   5,504,256 -> 4,953,856 (refused)                4,953,856 -> 4,458,496 (refused)
  //   4,458,496 -> 4,012,646 -> 4,012,800 <= 4,194,304: granted.
  // 7 refusals (8 MiB and six backed-off sizes).
  blocks.push_back(bfc.allocate(MiB));
  ASSERT_NE(blocks.back(), nullptr);
  EXPECT_EQ(bfc.upstream().stats().failed, 7u);
  ASSERT_EQ(bfc->regions().size(), 3u);
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 6 * MiB + 4'012'800);
  EXPECT_EQ(bfc->next_region_bytes(), 16 * MiB);  // 8 MiB was not enlarged for the request: doubled
  // Region 3 keeps 4,012,800 - 1,048,576 = 2,964,224 free, less than 3 MiB. The 16 MiB region is
  // refused and TF does not back off a second time; no region is wholly free for garbage collection:
  // a counted failure (one more upstream refusal).
  EXPECT_EQ(bfc.allocate(3 * MiB), nullptr);
  EXPECT_EQ(bfc->stats().failed_requests, 1u);
  EXPECT_EQ(bfc.upstream().stats().failed, 8u);
  // Still usable: 1 MiB fits in region 3's free 2,964,224 bytes.
  blocks.push_back(bfc.allocate(MiB));
  ASSERT_NE(blocks.back(), nullptr);
  for (void* p : blocks) bfc.deallocate(p, MiB);
}

TEST(CachingBfc, WithoutGrowthOneRegionCoversTheLimit) {
  // memory_limit defaults to the capacity: one 64 MiB region, taken at construction.
  Bfc bfc("simulated:capacity=64MiB", "allow_growth=false");
  EXPECT_EQ(bfc->regions().size(), 1u);
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 64 * MiB);
  EXPECT_EQ(bfc->memory_limit(), 64 * MiB);
  EXPECT_EQ(bfc.upstream().stats().allocs, 1u);
  // 40 MiB from 64 MiB: 64 < 80, slack 24 MiB < 128 MiB: not split, nothing left.
  void* a = bfc.allocate(40 * MiB);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 64 * MiB);
  // Even 256 B fails now: no free chunk, and the limit leaves 0 B to grow by.
  EXPECT_EQ(bfc.allocate(1), nullptr);
  EXPECT_EQ(bfc->stats().failed_requests, 1u);
  EXPECT_EQ(bfc.upstream().stats().allocs, 1u);
  bfc.deallocate(a, 40 * MiB);
  void* b = bfc.allocate(MiB);  // 64 MiB >= 2 MiB: split
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, MiB);
  bfc.deallocate(b, MiB);
}

TEST(CachingBfc, WithoutGrowthALimitIsRequiredAndMustBeGranted) {
  auto unlimited = make_upstream("host");  // no capacity
  EXPECT_THROW(CachingBfcAllocator(bfc_options("allow_growth=false"), *unlimited), InputError);
  auto small = make_upstream("simulated:capacity=64MiB");
  EXPECT_THROW(CachingBfcAllocator(bfc_options("allow_growth=false,memory_limit=100MiB"), *small), InputError);
  EXPECT_EQ(small->stats().bytes.current, 0u);
  EXPECT_THROW(CachingBfcAllocator(bfc_options("fragmentation_fraction=0.5"), *unlimited), InputError);
}

TEST(CachingBfc, GarbageCollectionReturnsWhollyFreeRegionsOnAMiss) {
  for (const bool gc : {true, false}) {
    SCOPED_TRACE(gc ? "garbage_collection=true" : "garbage_collection=false");
    // 8 MiB device; the limit is its capacity.
    Bfc bfc("simulated:capacity=8MiB", gc ? "" : "garbage_collection=false");
    void* a = bfc.allocate(MiB);      // region 1: 2 MiB, split
    void* b = bfc.allocate(3 * MiB);  // region 2: 4 MiB (4 < 6, slack 1 MiB: whole); next region 8 MiB
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(bfc->stats().reserved_bytes.current, 6 * MiB);
    bfc.deallocate(a, MiB);  // region 1 is wholly free again
    // 3 MiB: no free chunk fits (2 MiB); growth has only 8 - 6 = 2 MiB. Garbage collection frees
    // region 1 (3 MiB <= 8 - 6 + 2 = 4 MiB, so it can help), then grows by min(8 MiB, 4 MiB) = 4 MiB,
    // handed out whole (4 < 6, slack 1 MiB).
    void* c = bfc.allocate(3 * MiB);
    if (gc) {
      ASSERT_NE(c, nullptr);
      EXPECT_EQ(bfc->regions().size(), 2u);
      EXPECT_EQ(bfc->stats().reserved_bytes.current, 8 * MiB);
      EXPECT_EQ(bfc->stats().allocated_bytes.current, 8 * MiB);
      EXPECT_EQ(bfc->stats().upstream_allocs, 3u);
      EXPECT_EQ(bfc->stats().upstream_frees, 1u);
      bfc.deallocate(c, 3 * MiB);
    } else {
      EXPECT_EQ(c, nullptr);
      EXPECT_EQ(bfc->stats().failed_requests, 1u);
      EXPECT_EQ(bfc->regions().size(), 2u);
      EXPECT_EQ(bfc->stats().upstream_frees, 0u);
    }
    bfc.deallocate(b, 3 * MiB);
  }
}

TEST(CachingBfc, TrimReturnsWhollyFreeRegionsAndGrowthResumesAtTheNextSize) {
  Bfc bfc("simulated", "");
  std::vector<void*> blocks;
  for (int i = 0; i < 7; ++i) blocks.push_back(bfc.allocate(MiB));  // regions 2, 4, 8 MiB (as above)
  // Free everything but block 3 (region 2): regions 1 and 3 become wholly free.
  for (int i = 0; i < 7; ++i) {
    if (i != 3) bfc.deallocate(blocks[i], MiB);
  }
  EXPECT_EQ(bfc->regions().size(), 3u);  // free never returns regions by itself
  bfc.trim();
  EXPECT_EQ(bfc->regions().size(), 1u);
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 4 * MiB);
  EXPECT_EQ(bfc->stats().upstream_frees, 2u);
  bfc.trim();  // nothing more to give back
  EXPECT_EQ(bfc->stats().upstream_frees, 2u);
  bfc.deallocate(blocks[3], MiB);
  bfc.trim();
  EXPECT_EQ(bfc->regions().size(), 0u);
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 0u);
  EXPECT_EQ(bfc.upstream().stats().bytes.current, 0u);
  // The region size is not reset: the next region is 16 MiB.
  void* p = bfc.allocate(MiB);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 16 * MiB);
  bfc.deallocate(p, MiB);
}

TEST(CachingBfc, OutOfMemoryIsCountedAndTheAllocatorRecovers) {
  Bfc bfc("simulated:capacity=16MiB", "");
  // Regions 2 + 4 + 8 MiB, then min(16 MiB, 16 - 14 = 2 MiB) = 2 MiB: 16 MiB of 64 KiB blocks = 256.
  std::vector<void*> blocks;
  for (;;) {
    void* p = bfc.allocate(64 * KiB);
    if (p == nullptr) break;
    blocks.push_back(p);
  }
  EXPECT_EQ(blocks.size(), 256u);
  EXPECT_EQ(bfc->regions().size(), 4u);
  EXPECT_EQ(bfc->stats().failed_requests, 1u);
  EXPECT_EQ(bfc.allocate(1), nullptr);
  EXPECT_EQ(bfc->stats().failed_requests, 2u);
  EXPECT_EQ(bfc->allocate(std::size_t{1} << 62, 16, 0), nullptr);  // impossible size
  EXPECT_EQ(bfc->stats().failed_requests, 3u);
  EXPECT_EQ(bfc->stats().allocs, 256u);
  // One free 64 KiB chunk serves 1000 B (1024 B; 64 KiB >= 2 KiB: split).
  bfc.deallocate(blocks.back(), 64 * KiB);
  blocks.pop_back();
  void* p = bfc.allocate(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 255 * 64 * KiB + 1024);
  bfc.deallocate(p, 1000);
  for (void* q : blocks) bfc.deallocate(q, 64 * KiB);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 0u);
}

TEST(CachingBfc, OverAlignedRequestsLeaveTheirPadFree) {
  Bfc bfc("simulated", "");
  void* a = bfc.allocate(256);  // [0, 256)
  // 256 B aligned to 4 KiB: the free tail at 256 is not aligned; the pad [256, 4096) stays free,
  // the block is [4096, 4352), and the rest (2 MiB - 4352) is split off again.
  void* b = bfc.allocate(256, 4096);
  EXPECT_EQ(bfc.offset(b), 4096u);
  EXPECT_EQ(bfc.layout(), (Layout{{0, 256, true}, {256, 3840, false}, {4096, 256, true}, {4352, 2 * MiB - 4352, false}}));
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 512u);
  bfc.deallocate(b, 256, 4096);  // merges with the pad and the tail
  EXPECT_EQ(bfc.layout(), (Layout{{0, 256, true}, {256, 2 * MiB - 256, false}}));
  bfc.deallocate(a, 256);
}

// Seeded churn with log-uniform sizes up to 8 MiB and mixed alignments, occasional trim(), on a small
// device so that growth, back-off, garbage collection and failures all happen. After every operation:
// the invariants, no overlap (and intact contents on host memory), and stats equal to sums kept here.
void random_churn(const std::string& memory, const std::string& settings, int operations) {
  Bfc bfc(memory, settings);
  struct Block {
    void* p;
    std::size_t size;
    std::size_t alignment;
    std::uint64_t allocated;
  };
  std::vector<Block> blocks;
  std::mt19937_64 rng(20261123);
  std::uniform_real_distribution<double> log_size(0.0, std::log(8.0 * MiB));
  const std::size_t alignments[] = {16, 16, 16, 256, 512, 4096};
  std::uint64_t requested = 0, allocated = 0, failures = 0;
  for (int op = 0; op < operations; ++op) {
    const std::uint64_t r = rng() % 100;
    if (r == 0) {
      bfc.trim();
    } else if (blocks.empty() || (blocks.size() < 400 && r < 55)) {
      const auto size = std::max<std::size_t>(1, static_cast<std::size_t>(std::exp(log_size(rng))));
      const std::size_t alignment = alignments[rng() % std::size(alignments)];
      const std::uint64_t before = bfc->stats().allocated_bytes.current;
      void* p = bfc.allocate(size, alignment);
      if (p == nullptr) {
        ++failures;
      } else {
        const std::uint64_t added = bfc->stats().allocated_bytes.current - before;
        ASSERT_GE(added, CachingBfcAllocator::rounded_bytes(size)) << "op " << op;
        ASSERT_EQ(added % 256, 0u);
        blocks.push_back({p, size, alignment, added});
        requested += size;
        allocated += added;
      }
    } else {
      const std::size_t victim = rng() % blocks.size();
      const Block block = blocks[victim];
      blocks[victim] = blocks.back();
      blocks.pop_back();
      bfc.deallocate(block.p, block.size, block.alignment);
      requested -= block.size;
      allocated -= block.allocated;
    }
    ASSERT_FALSE(::testing::Test::HasFailure()) << "op " << op;
    const AllocatorStats s = bfc->stats();
    ASSERT_EQ(s.requested_bytes.current, requested) << "op " << op;
    ASSERT_EQ(s.allocated_bytes.current, allocated) << "op " << op;
    ASSERT_EQ(s.failed_requests, failures) << "op " << op;
    ASSERT_EQ(s.reserved_bytes.current, bfc.upstream().stats().bytes.current) << "op " << op;
    ASSERT_EQ(s.free_bytes, s.reserved_bytes.current - s.allocated_bytes.current);
    ASSERT_LE(s.largest_free_block, s.free_bytes);
  }
  EXPECT_GT(failures, 0u) << "the device was meant to run out now and then";
  for (const Block& block : blocks) bfc.deallocate(block.p, block.size, block.alignment);
  bfc.trim();
  EXPECT_EQ(bfc->stats().reserved_bytes.current, 0u);
  EXPECT_EQ(bfc->stats().allocated_bytes.current, 0u);
}

TEST(CachingBfc, RandomChurnOnASimulatedDeviceMatchesTheModel) {
  random_churn("simulated:capacity=256MiB", "", 20'000);
}

TEST(CachingBfc, RandomChurnOnHostMemoryMatchesTheModel) {
  random_churn("host:capacity=256MiB", "garbage_collection=false", 5'000);
}

}  // namespace
}  // namespace tiermark
