// caching.pytorch: every rule of PyTorch's CUDA caching allocator as modelled in
// caching_pytorch_allocator.h (rounding, pools and segment sizes, best fit per stream, oversize blocks,
// split thresholds, merging, the miss path with its retry and OOM, empty_cache, the memory fraction and
// garbage collection) on the simulated device, with every expected number worked out by hand from
// those rules in the comments; then seeded random churn against an independent model of live blocks,
// with check_invariants() after every operation, on the simulated device and on host memory.
#include "allocators/caching_pytorch_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "allocators/host_upstream.h"
#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"
#include "common/input_error.h"
#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;

static_assert(AllocatorImpl<CachingPytorchAllocator>);

Options pytorch_options(const std::string& settings) {
  return make_options(settings.empty() ? "caching.pytorch" : "caching.pytorch:" + settings, CachingPytorchAllocator::kName,
                      CachingPytorchAllocator::option_specs());
}

// An allocator on its own simulated device; every call checked (testing::AllocatorHarness: the
// invariants after every operation and an independent model of live blocks, no overlap).
class Harness : public testing::AllocatorHarness<CachingPytorchAllocator> {
 public:
  explicit Harness(const std::string& settings = "", const std::string& memory = "simulated:capacity=80GiB")
      : AllocatorHarness(settings.empty() ? "caching.pytorch" : "caching.pytorch:" + settings, memory) {}

  PytorchMemoryStats ms() const { return a().memory_stats(); }
  std::uint64_t reserved() const { return a().memory_stats().reserved_bytes.current; }
  std::uint64_t allocated() const { return a().memory_stats().allocated_bytes.current; }
  std::uint64_t device_allocs() const { return device().allocs; }
  std::uint64_t device_frees() const { return device().frees; }
  std::uint64_t device_refusals() const { return device().failed; }
  std::size_t segments() const { return a().snapshot().size(); }
};

// ---- Rounding ----------------------------------------------------------------------------------------

TEST(CachingPytorch, RoundsTo512ByteMultiples) {
  Harness h;
  // round_size: below 512 -> 512; else up to a multiple of 512.
  EXPECT_EQ(h.a().round_size(1), 512u);
  EXPECT_EQ(h.a().round_size(512), 512u);
  EXPECT_EQ(h.a().round_size(513), 1024u);
  EXPECT_EQ(h.a().round_size(1000), 1024u);
  EXPECT_EQ(h.a().round_size(3 * MiB + 1), 3 * MiB + 512);
  void* p = h.alloc(1000);
  EXPECT_EQ(h.allocated(), 1024u);
  EXPECT_EQ(h.ms().requested_bytes.current, 1000u);
  h.release(p);
}

TEST(CachingPytorch, RoundupPower2Divisions) {
  // The helper splits [1024, 2048) into 4 steps 1024, 1280, 1536, 1792: 1200 -> 1280 (its comment's example).
  EXPECT_EQ(CachingPytorchAllocator::roundup_power2_next_division(1200, 4), 1280u);
  EXPECT_EQ(CachingPytorchAllocator::roundup_power2_next_division(2048, 4), 2048u);  // powers of two stay
  Harness h("roundup_power2_divisions=4");
  // round_size applies it only above 512 x divisions = 2048 B, so 1200 B is rounded plainly to 1536 B.
  EXPECT_EQ(h.a().round_size(1200), 1536u);
  // 9000 in [8192, 16384): steps of 2048 -> 10240 (plain rounding would give 9216).
  EXPECT_EQ(h.a().round_size(9000), 10240u);
  // 1 MiB + 1 in [1 MiB, 2 MiB): steps of 256 KiB -> 1.25 MiB, a large-pool request.
  EXPECT_EQ(h.a().round_size(MiB + 1), MiB + 256 * KiB);
  void* p = h.alloc(9000);
  EXPECT_EQ(h.allocated(), 10240u);
  h.release(p);
}

TEST(CachingPytorch, ParsesPerIntervalDivisionsAsAllocatorConfig) {
  std::string why;
  // Interval i holds sizes in [2^i MiB, 2^(i+1) MiB). 256 -> index 8, 512 -> 9, 1024 -> 10; the first
  // entry also fills every interval below it, `>` fills every interval after the last one named.
  const auto d = CachingPytorchAllocator::parse_divisions("[256:1,512:2,1024:4,>:8]", why);
  ASSERT_TRUE(d.has_value()) << why;
  const CachingPytorchAllocator::Divisions expected = {1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4, 8, 8, 8, 8, 8};
  EXPECT_EQ(*d, expected);
  const auto single = CachingPytorchAllocator::parse_divisions("4", why);
  ASSERT_TRUE(single.has_value());
  EXPECT_EQ((*single)[0], 4u);
  EXPECT_EQ((*single)[15], 4u);
  EXPECT_FALSE(CachingPytorchAllocator::parse_divisions("3", why).has_value());
  EXPECT_FALSE(CachingPytorchAllocator::parse_divisions("[256:3]", why).has_value());
  EXPECT_FALSE(CachingPytorchAllocator::parse_divisions("[300:2]", why).has_value());
  EXPECT_FALSE(CachingPytorchAllocator::parse_divisions("[256:2", why).has_value());
  EXPECT_FALSE(CachingPytorchAllocator::parse_divisions("[256]", why).has_value());
}

// ---- Pools and segment sizes -------------------------------------------------------------------------

TEST(CachingPytorch, SmallLargeAndOwnSegmentsReserve34MiB) {
  Harness h;
  // 1000 B -> 1024 B, small pool: a 2 MiB segment.
  h.alloc(1000);
  EXPECT_EQ(h.reserved(), 2 * MiB);
  // 3 MiB, large pool (1..10 MiB): a 20 MiB segment, split: the 17 MiB rest stays cached.
  h.alloc(3 * MiB);
  EXPECT_EQ(h.reserved(), 22 * MiB);
  // 12 MiB: the lower bound of 12 MiB is the cached 17 MiB block; split again (rest 5 MiB > 1 MiB).
  h.alloc(12 * MiB);
  EXPECT_EQ(h.reserved(), 22 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  // 12 MiB again: only 5 MiB is cached, so a segment of its own, 12 MiB rounded to 2 MiB = 12 MiB.
  h.alloc(12 * MiB);
  EXPECT_EQ(h.reserved(), 34 * MiB);  // 2 + 20 + 12
  EXPECT_EQ(h.device_allocs(), 3u);
  EXPECT_EQ(h.ms().segment.current, 3u);
  EXPECT_EQ(h.ms().num_device_alloc, 3u);
  // Allocated: 1024 + 3 MiB + 12 MiB + 12 MiB; free inside segments: 2 MiB - 1024 + 5 MiB.
  EXPECT_EQ(h.allocated(), 1024 + 27 * MiB);
  EXPECT_EQ(h.a().stats().free_bytes, 7 * MiB - 1024);
  EXPECT_EQ(h.a().stats().largest_free_block, 5 * MiB);
}

TEST(CachingPytorch, SmallSegmentPacksFourHalfMiBBlocks) {
  Harness h;
  // 4 x 512 KiB = 2 MiB: the first takes a new 2 MiB segment (rest 1.5 MiB), the next two split it
  // further, the fourth takes the last 512 KiB exactly. The fifth needs a second segment.
  for (int i = 0; i < 4; ++i) h.alloc(512 * KiB);
  EXPECT_EQ(h.device_allocs(), 1u);
  EXPECT_EQ(h.a().snapshot().front().blocks.size(), 4u);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 0u);
  h.alloc(512 * KiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.reserved(), 4 * MiB);
}

TEST(CachingPytorch, OwnSegmentRoundsUpTo2MiBAndSplitsTheTail) {
  Harness h;
  // 10 MiB + 1 B -> 10 MiB + 512 B (>= 10 MiB): its own segment of 12 MiB; the tail 2 MiB - 512 B is more
  // than 1 MiB, so it is split off and cached.
  h.alloc(10 * MiB + 1);
  EXPECT_EQ(h.reserved(), 12 * MiB);
  EXPECT_EQ(h.allocated(), 10 * MiB + 512);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 2 * MiB - 512);
}

// ---- Split thresholds ----------------------------------------------------------------------------------

TEST(CachingPytorch, SmallPoolSplitsDownTo512Bytes) {
  Harness h;
  // 1 MiB (small: <= 1 MiB) from a 2 MiB segment leaves 1 MiB; 1 MiB - 512 B takes it and leaves exactly
  // 512 B (>= 512: split); a 512 B request takes that. Three blocks tile the segment, nothing free.
  h.alloc(MiB);
  h.alloc(MiB - 512);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 512u);
  h.alloc(512);
  EXPECT_EQ(h.device_allocs(), 1u);
  EXPECT_EQ(h.a().snapshot().front().blocks.size(), 3u);
  EXPECT_EQ(h.allocated(), 2 * MiB);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 0u);
}

TEST(CachingPytorch, LargePoolKeepsUpTo1MiBOfSlackUnsplit) {
  Harness h;
  // 9 MiB -> a 20 MiB segment, rest 11 MiB split off. 10 MiB takes the 11 MiB block: rest exactly 1 MiB,
  // not more than 1 MiB, so no split: the caller's block is 11 MiB.
  h.alloc(9 * MiB);
  h.alloc(10 * MiB);
  EXPECT_EQ(h.device_allocs(), 1u);
  EXPECT_EQ(h.allocated(), 20 * MiB);  // 9 + 11
  EXPECT_EQ(h.ms().requested_bytes.current, 19 * MiB);
  EXPECT_EQ(h.a().stats().free_bytes, 0u);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 0u);
}

// ---- Best fit and streams ------------------------------------------------------------------------------

TEST(CachingPytorch, BestFitTakesTheSmallestBlockThatFits) {
  Harness h;
  // One 20 MiB segment: a 4 | b 2 | c 3 | d 2 | 9 MiB free. Free a and c: free blocks 4, 3 and 9 MiB.
  void* a = h.alloc(4 * MiB);
  h.alloc(2 * MiB);
  void* c = h.alloc(3 * MiB);
  h.alloc(2 * MiB);
  h.release(a);
  h.release(c);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 16 * MiB);
  // 3 MiB: exactly c's block. 3.5 MiB: a's 4 MiB block (rest 0.5 MiB, unsplit), not the 9 MiB tail.
  EXPECT_EQ(h.alloc(3 * MiB), c);
  EXPECT_EQ(h.alloc(3 * MiB + 512 * KiB), a);
  EXPECT_EQ(h.allocated(), 11 * MiB);  // 4 + 2 + 3 + 2
  EXPECT_EQ(h.device_allocs(), 1u);
}

TEST(CachingPytorch, EqualSizesGoToTheLowestAddress) {
  Harness h;
  // Segment 1: x 1 MiB | y 1 MiB (exact fit, no split). Segment 2: z 1 MiB | 1 MiB free. Free x: two free
  // 1 MiB blocks in the small pool of stream 0; a 1 MiB request takes the one at the lower address.
  void* x = h.alloc(MiB);
  h.alloc(MiB);
  void* z = h.alloc(MiB);
  h.release(x);
  const std::uintptr_t other = address_of(z) + MiB;
  void* p = h.alloc(MiB);
  EXPECT_EQ(address_of(p), std::min(address_of(x), other));
  EXPECT_EQ(h.device_allocs(), 2u);
}

TEST(CachingPytorch, StreamsNeverShareBlocks) {
  Harness h;
  // Stream 0 caches a 2 MiB small segment; stream 1 cannot use it and gets its own; stream 0 reuses its own.
  void* p = h.alloc(KiB, 0);
  h.release(p);
  void* q = h.alloc(KiB, 1);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.reserved(), 4 * MiB);
  EXPECT_EQ(h.alloc(KiB, 0), p);
  EXPECT_EQ(h.device_allocs(), 2u);
  h.release(q);
  // Large pool too: a cached 20 MiB segment of stream 1 does not serve stream 2.
  void* r = h.alloc(3 * MiB, 1);
  h.release(r);
  h.alloc(3 * MiB, 2);
  EXPECT_EQ(h.device_allocs(), 4u);
  EXPECT_EQ(h.reserved(), 44 * MiB);  // 2 + 2 + 20 + 20
}

// ---- Oversize blocks (max_split_size) -----------------------------------------------------------------

TEST(CachingPytorch, OversizeBlocksServeOnlyOversizeRequestsWithinTheRounding) {
  Harness h("max_split_size=40MiB");
  // 50 MiB: own segment of 50 MiB, cached after the free.
  h.release(h.alloc(50 * MiB));
  // 30 MiB < 40 MiB may not take the 50 MiB block (>= 40 MiB): a new 30 MiB segment.
  void* b = h.alloc(30 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.reserved(), 80 * MiB);
  h.release(b);
  // 45 MiB >= 40 MiB takes the 50 MiB block (50 < 45 + 20) and never splits it: allocated 50 MiB.
  void* c = h.alloc(45 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.allocated(), 50 * MiB);
  h.release(c);
  // 41 MiB: lower bound is the 50 MiB block (the 30 MiB one is smaller), 50 < 41 + 20: taken whole.
  void* d = h.alloc(41 * MiB);
  EXPECT_EQ(h.allocated(), 50 * MiB);
  h.release(d);
  h.trim();
  EXPECT_EQ(h.reserved(), 0u);
  // A cached 64 MiB block is too big for 42 MiB (64 >= 42 + 20): a new 42 MiB segment.
  h.release(h.alloc(64 * MiB));
  h.alloc(42 * MiB);
  EXPECT_EQ(h.reserved(), 106 * MiB);  // 64 + 42
}

TEST(CachingPytorch, MaxNonSplitRoundingWidensTheWindow) {
  Harness h("max_split_size=40MiB,max_non_split_rounding=30MiB");
  // With 30 MiB of rounding a cached 64 MiB block serves 42 MiB (64 < 42 + 30).
  h.release(h.alloc(64 * MiB));
  h.alloc(42 * MiB);
  EXPECT_EQ(h.reserved(), 64 * MiB);
  EXPECT_EQ(h.allocated(), 64 * MiB);
}

TEST(CachingPytorch, MissFreesCachedOversizeBlocksFirst) {
  // Device of 80 MiB, max_split_size 40 MiB. 60 MiB cached; 30 MiB cannot take it and a new 30 MiB
  // segment does not fit (60 + 30 > 80): release_available_cached_blocks frees the oversize 60 MiB block
  // (lower bound of max(30, 40) = 40 MiB) and the second attempt succeeds. Not a retry, not an OOM.
  Harness h("max_split_size=40MiB", "simulated:capacity=80MiB");
  h.release(h.alloc(60 * MiB));
  ASSERT_NE(h.alloc(30 * MiB), nullptr);
  EXPECT_EQ(h.reserved(), 30 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.device_frees(), 1u);
  EXPECT_EQ(h.device_refusals(), 1u);
  EXPECT_EQ(h.ms().num_alloc_retries, 0u);
  EXPECT_EQ(h.ms().num_ooms, 0u);
}

// ---- Merging and empty_cache ---------------------------------------------------------------------------

TEST(CachingPytorch, FreeMergesWithBothNeighbours) {
  Harness h;
  // a 1 KiB | b 2 KiB | c 4 KiB | rest in one 2 MiB segment.
  void* a = h.alloc(KiB);
  void* b = h.alloc(2 * KiB);
  void* c = h.alloc(4 * KiB);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 2 * MiB - 7 * KiB);
  // Free a: no free neighbour, a free 1 KiB block of a split segment.
  h.release(a);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 2 * MiB - 6 * KiB);
  // Free c: merges with the free rest: 2 MiB - 3 KiB. Free b: merges with both: the whole segment, unsplit.
  h.release(c);
  EXPECT_EQ(h.a().snapshot().front().blocks.size(), 3u);
  h.release(b);
  const auto segments = h.a().snapshot();
  ASSERT_EQ(segments.size(), 1u);
  ASSERT_EQ(segments.front().blocks.size(), 1u);
  EXPECT_EQ(segments.front().blocks.front().size, 2 * MiB);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 0u);
  EXPECT_EQ(h.ms().inactive_split_bytes.peak, 2 * MiB - 1 * KiB);
  // Merging never returns memory: the segment stays cached until empty_cache.
  EXPECT_EQ(h.reserved(), 2 * MiB);
  EXPECT_EQ(h.device_frees(), 0u);
}

TEST(CachingPytorch, EmptyCacheReleasesOnlyWholeSegments) {
  Harness h;
  // Three segments: small 2 MiB (one live 1 KiB block); 2 MiB from a 20 MiB segment (rest 18 MiB); 19 MiB
  // (18 < 19: a miss) from its own segment, 19 MiB rounded to 2 MiB = 20 MiB, rest 1 MiB unsplit.
  h.alloc(KiB);
  void* p = h.alloc(2 * MiB);
  void* q = h.alloc(19 * MiB);
  h.release(p);
  h.release(q);
  EXPECT_EQ(h.reserved(), 42 * MiB);
  // trim(): the two wholly free segments go back; the split small segment stays (2 MiB - 1 KiB of it is
  // unreturnable inactive split memory).
  h.trim();
  EXPECT_EQ(h.reserved(), 2 * MiB);
  EXPECT_EQ(h.device_frees(), 2u);
  EXPECT_EQ(h.ms().num_device_free, 2u);
  EXPECT_EQ(h.ms().segment.current, 1u);
  EXPECT_EQ(h.ms().segment.peak, 3u);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 2 * MiB - KiB);
  EXPECT_EQ(h.ms().reserved_bytes.peak, 42 * MiB);
}

// ---- The miss path: retry and OOM ----------------------------------------------------------------------

TEST(CachingPytorch, RetryAfterFreeingCachedSegmentsIsCounted) {
  // Device of 24 MiB. 15 MiB -> 16 MiB segment, freed and cached. 20 MiB: 16 < 20, no fit; a 20 MiB
  // segment does not fit beside it (16 + 20 > 24); no max_split_size, so straight to release_cached_blocks,
  // which frees the cached 16 MiB segment, and the retry (num_alloc_retries 1) succeeds.
  Harness h("", "simulated:capacity=24MiB");
  h.release(h.alloc(15 * MiB));
  ASSERT_NE(h.alloc(20 * MiB), nullptr);
  EXPECT_EQ(h.ms().num_alloc_retries, 1u);
  EXPECT_EQ(h.ms().num_ooms, 0u);
  EXPECT_EQ(h.reserved(), 20 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.device_frees(), 1u);
  EXPECT_EQ(h.a().stats().failed_requests, 0u);
}

TEST(CachingPytorch, OomIsCountedAndTheAllocatorStaysUsable) {
  // Device of 24 MiB: a cached small 2 MiB segment and a live 15 MiB block (16 MiB segment): 18 MiB.
  // 7 MiB needs a 20 MiB segment: 18 + 20 > 24 refused; release_cached_blocks frees the small segment
  // (16 MiB left), the retry is refused again (16 + 20 > 24): num_alloc_retries 1, num_ooms 1, nullptr.
  Harness h("", "simulated:capacity=24MiB");
  h.release(h.alloc(KiB));
  void* big = h.alloc(15 * MiB);
  EXPECT_EQ(h.reserved(), 18 * MiB);
  EXPECT_EQ(h.alloc(7 * MiB), nullptr);
  EXPECT_EQ(h.ms().num_alloc_retries, 1u);
  EXPECT_EQ(h.ms().num_ooms, 1u);
  EXPECT_EQ(h.a().stats().failed_requests, 1u);
  EXPECT_EQ(h.device_refusals(), 2u);
  EXPECT_EQ(h.device_frees(), 1u);
  EXPECT_EQ(h.reserved(), 16 * MiB);
  // Freeing the 15 MiB block caches its 16 MiB segment; 7 MiB is then carved from it (rest 9 MiB > 1 MiB:
  // split) without any device call.
  h.release(big);
  ASSERT_NE(h.alloc(7 * MiB), nullptr);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.allocated(), 7 * MiB);
  EXPECT_EQ(h.a().stats().failed_requests, 1u);
}

TEST(CachingPytorch, SplitSegmentsCannotBeReturnedEvenUnderPressure) {
  // PR 44742's failure mode in miniature, on a 40 MiB device. Segment 1: a 2 MiB | x 18 MiB (x takes the
  // 18 MiB rest whole). Segment 2: b 2 MiB | y 18 MiB. Free a and y: 20 MiB cached, all in split segments.
  // 22 MiB (own 22 MiB segment) does not fit (40 + 22 > 40), and release_cached_blocks finds no unsplit
  // segment to free: the retry fails too, an OOM with 20 MiB cached.
  Harness h("", "simulated:capacity=40MiB");
  void* a = h.alloc(2 * MiB);
  h.alloc(18 * MiB);
  h.alloc(2 * MiB);
  void* y = h.alloc(18 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  h.release(a);
  h.release(y);
  EXPECT_EQ(h.reserved(), 40 * MiB);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 20 * MiB);
  EXPECT_EQ(h.alloc(22 * MiB), nullptr);
  EXPECT_EQ(h.ms().num_ooms, 1u);
  EXPECT_EQ(h.ms().num_alloc_retries, 1u);
  EXPECT_EQ(h.device_frees(), 0u);
  h.trim();  // empty_cache cannot help either
  EXPECT_EQ(h.reserved(), 40 * MiB);
}

// ---- Memory fraction and garbage collection ------------------------------------------------------------

TEST(CachingPytorch, MemoryFractionRefusesWithoutADeviceCall) {
  // Capacity 100 MiB x 0.5 = 50 MiB allowed. 30 MiB live; 22 MiB would make 52 > 50: refused by the limit
  // before the device is asked (no device refusal), retried after release_cached_blocks (nothing cached),
  // refused again: one retry, one OOM.
  Harness h("per_process_memory_fraction=0.5", "simulated:capacity=100MiB");
  EXPECT_EQ(h.a().memory_limit(), 50 * MiB);
  h.alloc(30 * MiB);
  EXPECT_EQ(h.alloc(22 * MiB), nullptr);
  EXPECT_EQ(h.device_refusals(), 0u);
  EXPECT_EQ(h.ms().num_alloc_retries, 1u);
  EXPECT_EQ(h.ms().num_ooms, 1u);
  // 20 MiB fits exactly: 30 + 20 = 50.
  EXPECT_NE(h.alloc(20 * MiB), nullptr);
  EXPECT_EQ(h.reserved(), 50 * MiB);
}

// The garbage collection scenario: limit 50 MiB (100 MiB x 0.5); the GC threshold is 0.7 x 50 = 35 MiB.
// Large-pool searches are the clock: s1..s5 below.
void run_gc_scenario(Harness& h) {
  h.alloc(3 * MiB, 1);         // s1: stream 1, 20 MiB segment split 3 | 17 (reserved 20)
  void* a = h.alloc(12 * MiB);  // s2: miss, reserved 20 <= 35: no GC; own 12 MiB segment (32)
  void* b = h.alloc(14 * MiB, 2);  // s3: miss, 32 <= 35: no GC; own 14 MiB segment (46)
  h.release(a);                 // A cached at clock 3
  h.alloc(1536 * KiB, 1);       // s4: hit in stream 1's 17 MiB block
  h.release(b);                 // B cached at clock 4
  h.alloc(1536 * KiB, 1);       // s5: hit
  // A small-pool miss on stream 3 (the small pool has its own clock). With GC: reserved 46 > 35, target
  // 11 MiB; candidates (unsplit large blocks): A age 5-3 = 2, B age 5-4 = 1, mean 1.5: A (12 MiB) is freed,
  // 12 >= 11 ends it; B stays. Then a 2 MiB segment.
  h.alloc(512 * KiB, 3);
}

TEST(CachingPytorch, GarbageCollectionFreesOldCachedBlocksFirst) {
  Harness h("per_process_memory_fraction=0.5,garbage_collection_threshold=0.7", "simulated:capacity=100MiB");
  run_gc_scenario(h);
  EXPECT_EQ(h.device_frees(), 1u);
  EXPECT_EQ(h.reserved(), 36 * MiB);  // 46 - 12 + 2
  bool b_cached = false;
  for (const auto& segment : h.a().snapshot()) b_cached = b_cached || (segment.size == 14 * MiB && segment.stream == 2);
  EXPECT_TRUE(b_cached);
  EXPECT_EQ(h.ms().num_alloc_retries, 0u);
}

TEST(CachingPytorch, WithoutTheThresholdNothingIsCollected) {
  Harness h("per_process_memory_fraction=0.5", "simulated:capacity=100MiB");
  run_gc_scenario(h);
  EXPECT_EQ(h.device_frees(), 0u);
  EXPECT_EQ(h.reserved(), 48 * MiB);  // 46 + 2, both cached segments kept
}

// ---- Alignment, options, stats -------------------------------------------------------------------------

TEST(CachingPytorch, OverAlignedRequestsGetAnAlignedPointerInsideTheirBlock) {
  Harness h;
  // alignment 4096: the block is round_size(100 + 4096 - 512) = 4096 B, the pointer its first 4096-aligned
  // address; freeing that pointer frees the whole block.
  void* p = h.alloc(100, 0, 4096);
  EXPECT_EQ(h.allocated(), 4096u);
  void* q = h.alloc(100, 0, 4096);
  EXPECT_EQ(h.allocated(), 8192u);
  h.release(p);
  h.release(q);
  EXPECT_EQ(h.allocated(), 0u);
  EXPECT_EQ(h.a().snapshot().front().blocks.size(), 1u);
}

TEST(CachingPytorch, RejectsBadOptionsInOneLine) {
  SimulatedUpstream device(make_options("simulated:capacity=1GiB", "simulated", SimulatedUpstream::option_specs()));
  HostUpstream host(make_options("host", "host", HostUpstream::option_specs()));
  const auto rejects = [&](const std::string& settings, Upstream& upstream, const std::string& fragment) {
    try {
      CachingPytorchAllocator a(pytorch_options(settings), upstream);
      ADD_FAILURE() << settings << " was accepted";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(fragment), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  };
  rejects("max_split_size=20MiB", device, "more than 20MiB");
  rejects("max_non_split_rounding=10MiB", device, "at least 20MiB");
  rejects("roundup_power2_divisions=3", device, "power of two");
  rejects("garbage_collection_threshold=1.5", device, "(0, 1)");
  rejects("per_process_memory_fraction=0", device, "(0, 1]");
  rejects("per_process_memory_fraction=0.5", host, "capacity");
  rejects("expandable_segments=true", host, "simulated upstream");
  rejects("roundup_power2_divisions=[256:3]", device, "roundup_power2_divisions");
  CachingPytorchAllocator fine(pytorch_options("max_split_size=21MiB,roundup_power2_divisions=8"), device);
  EXPECT_EQ(fine.divisions()[3], 8u);
  // The per-interval form, through the spec syntax (commas inside brackets stay in the value).
  CachingPytorchAllocator intervals(pytorch_options("roundup_power2_divisions=[256:1,512:2,1024:4,>:8]"), device);
  EXPECT_EQ(intervals.divisions()[8], 1u);
  EXPECT_EQ(intervals.divisions()[10], 4u);
  EXPECT_EQ(intervals.divisions()[15], 8u);
}

// PYTORCH_CUDA_ALLOC_CONF strings, as PyTorch parses them (c10/core/AllocatorConfig.cpp): the same
// allocator as the same settings given as options, and one-line errors for what PyTorch would refuse
// or tiermark does not model.
TEST(CachingPytorch, AcceptsAPytorchCudaAllocConfString) {
  SimulatedUpstream device(make_options("simulated:capacity=8GiB", "simulated", SimulatedUpstream::option_specs()));
  CachingPytorchAllocator conf(
      pytorch_options("alloc_conf=[expandable_segments:True,max_split_size_mb:128,"
                      "roundup_power2_divisions:[256:1,512:2,>:4],garbage_collection_threshold:0.6,"
                      "pinned_use_cuda_host_register:True,backend:native],per_process_memory_fraction=0.5"),
      device);
  EXPECT_TRUE(conf.expandable_segments());
  EXPECT_EQ(conf.divisions()[8], 1u);   // [256 MiB, 512 MiB): 1
  EXPECT_EQ(conf.divisions()[9], 2u);   // [512 MiB, 1 GiB): 2
  EXPECT_EQ(conf.divisions()[15], 4u);  // beyond: 4
  // Behaviour equals the explicit options: a sequence of requests reserves the same bytes.
  Harness a("alloc_conf=[max_split_size_mb:64,roundup_power2_divisions:4]");
  Harness b("max_split_size=64MiB,roundup_power2_divisions=4");
  std::vector<void*> pa, pb;
  for (std::uint64_t size : {100 * MiB, 3 * MiB, 70 * MiB + 1, 12 * MiB, 1000 * KiB, 300 * MiB}) {
    pa.push_back(a.alloc(size));
    pb.push_back(b.alloc(size));
  }
  a.release(pa[0]);
  b.release(pb[0]);
  a.alloc(90 * MiB);
  b.alloc(90 * MiB);
  EXPECT_EQ(a.reserved(), b.reserved());
  EXPECT_EQ(a.allocated(), b.allocated());
  EXPECT_EQ(a.segments(), b.segments());

  const auto rejects = [&](const std::string& settings, const std::string& fragment) {
    try {
      CachingPytorchAllocator x(pytorch_options(settings), device);
      ADD_FAILURE() << settings << " was accepted";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(fragment), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  };
  rejects("alloc_conf=[max_split_size_mb:20]", "more than 20MiB");  // PyTorch: > kLargeBuffer
  rejects("alloc_conf=[no_such_key:1]", "unknown key 'no_such_key'");
  rejects("alloc_conf=[backend:cudaMallocAsync]", "another allocator");
  rejects("alloc_conf=[expandable_segments]", "not key:value");
  rejects("alloc_conf=[max_split_size_mb:64],max_split_size=128MiB", "also given as option max_split_size");
  rejects("alloc_conf=[expandable_segments:Maybe]", "expandable_segments");
}

TEST(CachingPytorch, StatsMirrorTorchMemoryStats) {
  Harness h;
  void* p = h.alloc(3 * MiB);  // 20 MiB segment: 3 MiB block + 17 MiB inactive split
  void* q = h.alloc(700);      // 2 MiB segment: 1024 B block
  PytorchMemoryStats s = h.ms();
  EXPECT_EQ(s.allocated_bytes.current, 3 * MiB + 1024);
  EXPECT_EQ(s.active_bytes.current, s.allocated_bytes.current);
  EXPECT_EQ(s.requested_bytes.current, 3 * MiB + 700);
  EXPECT_EQ(s.reserved_bytes.current, 22 * MiB);
  EXPECT_EQ(s.inactive_split_bytes.current, 17 * MiB + 2 * MiB - 1024);
  EXPECT_EQ(s.segment.current, 2u);
  h.release(p);
  h.release(q);
  s = h.ms();
  EXPECT_EQ(s.allocated_bytes.current, 0u);
  EXPECT_EQ(s.allocated_bytes.peak, 3 * MiB + 1024);
  EXPECT_EQ(s.inactive_split_bytes.current, 0u);
  const AllocatorStats t = h.a().stats();
  EXPECT_EQ(t.reserved_bytes.current, 22 * MiB);
  EXPECT_EQ(t.upstream_allocs, 2u);
  EXPECT_EQ(t.free_bytes, 22 * MiB);
  EXPECT_EQ(t.largest_free_block, 20 * MiB);
}

TEST(CachingPytorch, ExhaustionThroughTheAdapterAsTheConformanceSuiteDoes) {
  // 64 KiB blocks on a 16 MiB device: 8 small segments of 2 MiB x 32 blocks = 256 blocks, then the device
  // refuses: release_cached_blocks frees nothing (all segments split), the retry fails: one failed request.
  auto device = make_upstream("simulated:capacity=16MiB");
  AllocatorAdapter<CachingPytorchAllocator> a(pytorch_options(""), *device);
  std::vector<void*> blocks;
  for (void* p; (p = a.allocate(64 * KiB, kDefaultAlignment, 0)) != nullptr;) blocks.push_back(p);
  EXPECT_EQ(blocks.size(), 256u);
  EXPECT_EQ(a.stats().failed_requests, 1u);
  EXPECT_EQ(a.allocate(64 * KiB, kDefaultAlignment, 0), nullptr);
  EXPECT_EQ(a.stats().failed_requests, 2u);
  EXPECT_EQ(a.concrete().memory_stats().num_ooms, 2u);
  // Free the older half (the first 4 segments, whole and cached): the next request is a hit.
  for (std::size_t i = 0; i < 128; ++i) a.deallocate(blocks[i], 64 * KiB, kDefaultAlignment, 0);
  EXPECT_EQ(a.check_invariants(), "");
  void* again = a.allocate(64 * KiB, kDefaultAlignment, 0);
  EXPECT_NE(again, nullptr);
  EXPECT_EQ(device->stats().allocs, 8u);
  a.deallocate(again, 64 * KiB, kDefaultAlignment, 0);
  for (std::size_t i = 128; i < blocks.size(); ++i) a.deallocate(blocks[i], 64 * KiB, kDefaultAlignment, 0);
  EXPECT_EQ(a.check_invariants(), "");
  EXPECT_EQ(a.stats().allocated_bytes.current, 0u);
}

// ---- Expandable segments --------------------------------------------------------------------------------
// On an 80 GiB device each (stream, pool) range is 1.125 x 80 GiB = 90 GiB (a whole number of 2 MiB and of
// 20 MiB pages); a page mapped is one device allocate, a page unmapped one device free.

constexpr const char* kExpandable = "expandable_segments=true";

std::vector<CachingPytorchAllocator::BlockInfo> blocks_of(Harness& h, std::size_t segment = 0) {
  return h.a().snapshot().at(segment).blocks;
}

TEST(CachingPytorch, ExpandableMapsJustEnoughPagesPerRequest) {
  Harness h(kExpandable);
  EXPECT_EQ(h.a().expandable_range(false), 90 * 1024 * MiB);
  EXPECT_EQ(h.a().expandable_range(true), 90 * 1024 * MiB);
  // 3 MiB (large pool): one 20 MiB page; the block is split at 3 MiB (any remainder >= 512 B may split).
  void* a = h.alloc(3 * MiB);
  EXPECT_EQ(h.reserved(), 20 * MiB);
  EXPECT_EQ(h.ms().num_device_alloc, 1u);
  EXPECT_EQ(h.device_allocs(), 1u);
  ASSERT_EQ(h.segments(), 1u);
  const auto range = h.a().snapshot()[0];
  EXPECT_TRUE(range.expandable);
  EXPECT_EQ(range.size, 90 * 1024 * MiB);
  ASSERT_EQ(range.blocks.size(), 3u);  // [3 MiB live][17 MiB free][unmapped rest]
  EXPECT_EQ(range.blocks[1].size, 17 * MiB);
  EXPECT_FALSE(range.blocks[1].allocated);
  EXPECT_TRUE(range.blocks[1].mapped);
  EXPECT_FALSE(range.blocks[2].mapped);
  EXPECT_EQ(range.blocks[2].size, 90 * 1024 * MiB - 20 * MiB);
  // 25 MiB: the free 17 MiB at the mapped end grows by 8 MiB -> one more page; the request starts at 3 MiB.
  void* b = h.alloc(25 * MiB);
  EXPECT_EQ(address_of(b), address_of(a) + 3 * MiB);
  EXPECT_EQ(h.reserved(), 40 * MiB);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(blocks_of(h)[2].size, 12 * MiB);  // 40 - 28 MiB left free at the end
  // 1000 B (small pool): its own range, one 2 MiB page.
  h.alloc(1000);
  EXPECT_EQ(h.reserved(), 42 * MiB);
  EXPECT_EQ(h.device_allocs(), 3u);
  EXPECT_EQ(h.segments(), 2u);
  // 45 MiB: the free 12 MiB grows by 33 MiB -> two pages (40 MiB); the block starts at 28 MiB.
  void* c = h.alloc(45 * MiB);
  EXPECT_EQ(address_of(c), address_of(a) + 28 * MiB);
  EXPECT_EQ(h.reserved(), 82 * MiB);
  EXPECT_EQ(h.ms().num_device_alloc, 5u);
  EXPECT_EQ(h.ms().num_device_free, 0u);
  EXPECT_EQ(h.ms().segment.current, 2u);
}

TEST(CachingPytorch, ExpandableServesTheSliverByGrowing) {
  // Three 6 MiB blocks leave a 2 MiB sliver at the end of a 20 MiB segment; then 22 MiB.
  // Without expandable segments: 22 MiB >= 10 MiB gets its own 22 MiB segment; the sliver stays free and
  // split (inactive): 42 MiB reserved, 2 MiB of it unusable by the request.
  Harness plain;
  for (int i = 0; i < 3; ++i) plain.alloc(6 * MiB);
  plain.alloc(22 * MiB);
  EXPECT_EQ(plain.reserved(), 42 * MiB);
  EXPECT_EQ(plain.ms().inactive_split_bytes.current, 2 * MiB);
  EXPECT_EQ(plain.device_allocs(), 2u);
  // With them: the sliver grows by one 20 MiB page into exactly 22 MiB: 40 MiB reserved, all of it in use.
  Harness h(kExpandable);
  void* first = h.alloc(6 * MiB);
  for (int i = 0; i < 2; ++i) h.alloc(6 * MiB);
  EXPECT_EQ(h.reserved(), 20 * MiB);
  void* big = h.alloc(22 * MiB);
  EXPECT_EQ(address_of(big), address_of(first) + 18 * MiB);
  EXPECT_EQ(h.reserved(), 40 * MiB);
  EXPECT_EQ(h.allocated(), 40 * MiB);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 0u);
  EXPECT_EQ(h.device_allocs(), 2u);
}

TEST(CachingPytorch, ExpandableSplitsAnyRemainderOf512BytesInTheLargePool) {
  // 19.5 MiB: without expandable segments a 20 MiB segment whose 0.5 MiB remainder (<= 1 MiB) stays
  // unsplit, so 20 MiB allocated; with them the 0.5 MiB is split off and stays free.
  Harness plain;
  plain.alloc(19 * MiB + 512 * KiB);
  EXPECT_EQ(plain.allocated(), 20 * MiB);
  Harness h(kExpandable);
  h.alloc(19 * MiB + 512 * KiB);
  EXPECT_EQ(h.allocated(), 19 * MiB + 512 * KiB);
  EXPECT_EQ(h.reserved(), 20 * MiB);
  EXPECT_EQ(blocks_of(h)[1].size, 512 * KiB);
  EXPECT_EQ(h.ms().inactive_split_bytes.current, 512 * KiB);
}

TEST(CachingPytorch, ExpandableEmptyCacheUnmapsWholeFreePagesOnly) {
  Harness h(kExpandable);
  void* a = h.alloc(30 * MiB);  // two pages: [30 live][10 free][unmapped]
  void* b = h.alloc(5 * MiB);   // a hit: [30 live][5 live][5 free][unmapped]
  EXPECT_EQ(address_of(b), address_of(a) + 30 * MiB);
  EXPECT_EQ(h.reserved(), 40 * MiB);
  h.release(a);  // [30 free][5 live][5 free][unmapped]
  h.trim();
  // Page 0 (0-20 MiB) lies wholly in the free block and goes; page 1 (20-40 MiB) holds b and stays, with
  // the free 10 MiB before b and the 5 MiB after it.
  EXPECT_EQ(h.reserved(), 20 * MiB);
  EXPECT_EQ(h.device_frees(), 1u);
  EXPECT_EQ(h.ms().num_device_free, 1u);
  const auto blocks = blocks_of(h);
  ASSERT_EQ(blocks.size(), 5u);
  EXPECT_FALSE(blocks[0].mapped);
  EXPECT_EQ(blocks[0].size, 20 * MiB);
  EXPECT_EQ(blocks[1].size, 10 * MiB);
  EXPECT_TRUE(blocks[2].allocated);
  EXPECT_EQ(blocks[3].size, 5 * MiB);
  EXPECT_FALSE(blocks[4].mapped);
  // b freed: one free 20 MiB page between two unmapped blocks; empty_cache unmaps it and the empty range goes.
  h.release(b);
  EXPECT_EQ(h.segments(), 1u);
  h.trim();
  EXPECT_EQ(h.reserved(), 0u);
  EXPECT_EQ(h.device_frees(), 2u);
  EXPECT_EQ(h.segments(), 0u);
  EXPECT_EQ(h.ms().segment.current, 0u);
  // The next request reserves a fresh range and maps again.
  h.alloc(1 * MiB + 512);
  EXPECT_EQ(h.reserved(), 20 * MiB);
  EXPECT_EQ(h.device_allocs(), 3u);
}

TEST(CachingPytorch, ExpandableRangesArePerStreamAndPool) {
  Harness h(kExpandable);
  void* s0_small = h.alloc(1 * KiB, 0);
  void* s1_small = h.alloc(1 * KiB, 1);
  void* s0_large = h.alloc(4 * MiB, 0);
  void* s1_large = h.alloc(4 * MiB, 1);
  EXPECT_EQ(h.reserved(), 2 * MiB + 2 * MiB + 20 * MiB + 20 * MiB);
  EXPECT_EQ(h.device_allocs(), 4u);
  const auto segments = h.a().snapshot();
  ASSERT_EQ(segments.size(), 4u);
  for (std::size_t i = 0; i < segments.size(); ++i) {
    EXPECT_TRUE(segments[i].expandable);
    if (i > 0) {
      EXPECT_LE(segments[i - 1].address + segments[i - 1].size, segments[i].address);  // disjoint
    }
  }
  // Each block sits at the start of its own range.
  std::vector<std::uintptr_t> bases;
  for (const auto& s : segments) bases.push_back(s.address);
  for (void* p : {s0_small, s1_small, s0_large, s1_large}) {
    EXPECT_EQ(std::count(bases.begin(), bases.end(), address_of(p)), 1);
  }
  // Stream 1 never takes stream 0's free mapped space: a second 4 MiB on stream 1 uses stream 1's page.
  void* again = h.alloc(4 * MiB, 1);
  EXPECT_EQ(address_of(again), address_of(s1_large) + 4 * MiB);
  EXPECT_EQ(h.device_allocs(), 4u);
}

TEST(CachingPytorch, ExpandableMissReleasesOtherStreamsPagesAndRetries) {
  // 100 MiB device: ranges of 112.5 MiB rounded up to whole pages: 114 MiB (small), 120 MiB (large).
  Harness h(kExpandable, "simulated:capacity=100MiB");
  EXPECT_EQ(h.a().expandable_range(true), 114 * MiB);
  EXPECT_EQ(h.a().expandable_range(false), 120 * MiB);
  h.release(h.alloc(50 * MiB, 0));  // three pages mapped on stream 0, now free and cached
  EXPECT_EQ(h.reserved(), 60 * MiB);
  // 50 MiB on stream 1 needs three pages; two fit (40 MiB left), the third is refused, so the map is undone
  // (2 allocates, 2 frees, 1 refusal). release_cached_blocks unmaps stream 0's three pages and gives back
  // both ranges that are now empty; the retry reserves a new range for stream 1 and maps three pages.
  void* p = h.alloc(50 * MiB, 1);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(h.device_allocs(), 3u + 2u + 3u);
  EXPECT_EQ(h.device_frees(), 2u + 3u);
  EXPECT_EQ(h.device_refusals(), 1u);
  EXPECT_EQ(h.ms().num_alloc_retries, 1u);
  EXPECT_EQ(h.ms().num_ooms, 0u);
  EXPECT_EQ(h.reserved(), 60 * MiB);
  ASSERT_EQ(h.segments(), 1u);
  EXPECT_EQ(h.a().snapshot()[0].stream, 1u);
}

TEST(CachingPytorch, ExpandableMemoryFractionRefusesAPageWithoutADeviceCall) {
  // Limit 0.5 x 100 MiB = 50 MiB: two 20 MiB pages fit, a third would pass the limit and is not asked for.
  Harness h("expandable_segments=true,per_process_memory_fraction=0.5", "simulated:capacity=100MiB");
  void* a = h.alloc(40 * MiB);
  EXPECT_EQ(h.reserved(), 40 * MiB);
  EXPECT_EQ(h.alloc(1 * MiB + 512), nullptr);
  EXPECT_EQ(h.device_allocs(), 2u);
  EXPECT_EQ(h.device_refusals(), 0u);
  EXPECT_EQ(h.ms().num_ooms, 1u);
  h.release(a);
  EXPECT_NE(h.alloc(1 * MiB + 512), nullptr);  // a hit in the mapped pages
  EXPECT_EQ(h.device_allocs(), 2u);
}

TEST(CachingPytorch, ExpandableBestFitPrefersABlockThatCannotGrow) {
  // As PyTorch's get_free_block: a free 6 MiB block at the mapped end (it could grow into the unmapped
  // space) is passed over for a free 8 MiB block in the middle, which can grow less.
  Harness h(kExpandable);
  void* a = h.alloc(8 * MiB);
  h.alloc(6 * MiB);  // [8 a][6 live][6 free][unmapped]
  h.release(a);      // [8 free][6 live][6 free][unmapped]
  void* p = h.alloc(5 * MiB);
  EXPECT_EQ(address_of(p), address_of(a));
}

TEST(CachingPytorch, ExpandableExhaustionThroughTheAdapterAsTheConformanceSuiteDoes) {
  // 64 KiB blocks on a 16 MiB device: eight 2 MiB pages of 32 blocks each, then the ninth page is refused;
  // release_cached_blocks finds nothing free; the retry fails: one failed request.
  auto device = make_upstream("simulated:capacity=16MiB");
  AllocatorAdapter<CachingPytorchAllocator> a(pytorch_options(kExpandable), *device);
  std::vector<void*> blocks;
  for (void* p; (p = a.allocate(64 * KiB, kDefaultAlignment, 0)) != nullptr;) {
    blocks.push_back(p);
    ASSERT_EQ(a.check_invariants(), "");
  }
  EXPECT_EQ(blocks.size(), 256u);
  EXPECT_EQ(device->stats().allocs, 8u);
  EXPECT_EQ(a.stats().failed_requests, 1u);
  EXPECT_EQ(a.allocate(64 * KiB, kDefaultAlignment, 0), nullptr);
  EXPECT_EQ(a.stats().failed_requests, 2u);
  for (std::size_t i = 0; i < 128; ++i) a.deallocate(blocks[i], 64 * KiB, kDefaultAlignment, 0);
  EXPECT_EQ(a.check_invariants(), "");
  void* again = a.allocate(64 * KiB, kDefaultAlignment, 0);
  EXPECT_EQ(address_of(again), address_of(blocks[0]));
  a.deallocate(again, 64 * KiB, kDefaultAlignment, 0);
  for (std::size_t i = 128; i < blocks.size(); ++i) a.deallocate(blocks[i], 64 * KiB, kDefaultAlignment, 0);
  a.trim();
  EXPECT_EQ(a.check_invariants(), "");
  EXPECT_EQ(device->stats().bytes.current, 0u);
  EXPECT_EQ(a.stats().reserved_bytes.current, 0u);
}

TEST(CachingPytorch, ExpandableConformanceChurnThroughTheRegistry) {
  // The conformance suite's churn (allocator_conformance_test.cc) on caching.pytorch with expandable
  // segments: 100,000 operations around ~1,000 live blocks, one stream, mixed alignments, stats exact.
  auto [upstream, allocator] = testing::build("caching.pytorch:expandable_segments=true", "simulated");
  testing::LiveBlocks live(upstream->touchable());
  struct Live {
    void* p;
    std::size_t size;
    std::size_t alignment;
    std::uint64_t allocated;
  };
  std::vector<Live> blocks;
  std::mt19937_64 rng(20261123);
  std::uniform_real_distribution<double> log_size(0.0, std::log(double(256 << 10)));
  const std::size_t alignments[] = {16, 16, 16, 16, 8, 64, 256, 4096};
  std::uint64_t requested = 0;
  for (int op = 0; op < 100'000; ++op) {
    const bool allocate = blocks.empty() || (blocks.size() < 2000 && rng() % 100 < (blocks.size() < 1000 ? 60u : 40u));
    const std::uint64_t allocated_before = allocator->stats().allocated_bytes.current;
    if (allocate) {
      const std::size_t size = std::max<std::size_t>(1, static_cast<std::size_t>(std::exp(log_size(rng))));
      const std::size_t alignment = alignments[rng() % std::size(alignments)];
      void* p = allocator->allocate(size, alignment, 0);
      ASSERT_NE(p, nullptr) << "op " << op;
      ASSERT_EQ(address_of(p) % alignment, 0u);
      ASSERT_EQ(live.add(p, size, static_cast<std::uint64_t>(op)), "") << "op " << op;
      blocks.push_back({p, size, alignment, allocator->stats().allocated_bytes.current - allocated_before});
      requested += size;
    } else {
      const std::size_t victim = rng() % blocks.size();
      const Live block = blocks[victim];
      blocks[victim] = blocks.back();
      blocks.pop_back();
      ASSERT_EQ(live.remove(block.p, block.size), "") << "op " << op;
      allocator->deallocate(block.p, block.size, block.alignment, 0);
      ASSERT_EQ(allocated_before - allocator->stats().allocated_bytes.current, block.allocated) << "op " << op;
      requested -= block.size;
    }
    ASSERT_EQ(allocator->check_invariants(), "") << "after op " << op;
    const AllocatorStats s = allocator->stats();
    ASSERT_EQ(s.requested_bytes.current, requested);
    ASSERT_EQ(s.failed_requests, 0u);
    ASSERT_EQ(testing::reserved_stats_mismatch(s, upstream->stats()), "") << "op " << op;
  }
  for (const Live& block : blocks) {
    ASSERT_EQ(live.remove(block.p, block.size), "");
    allocator->deallocate(block.p, block.size, block.alignment, 0);
  }
  allocator->trim();
  ASSERT_EQ(allocator->check_invariants(), "");
  EXPECT_EQ(allocator->stats().reserved_bytes.current, 0u);
  EXPECT_EQ(upstream->stats().bytes.current, 0u);
}

// ---- Randomized churn against a model ------------------------------------------------------------------

void churn(const std::string& settings, const std::string& memory, std::uint64_t max_size, int ops, bool may_fail) {
  auto upstream = make_upstream(memory);
  CachingPytorchAllocator a(pytorch_options(settings), *upstream);
  testing::ChurnSettings churn;
  churn.ops = ops;
  churn.max_size = max_size;
  churn.may_fail = may_fail;
  churn.touchable = upstream->touchable();
  testing::random_churn(a, churn, [&](int op, const auto&, std::uint64_t requested, const testing::ChurnResult& r) {
    const AllocatorStats s = a.stats();
    ASSERT_EQ(s.requested_bytes.current, requested) << "op " << op;
    ASSERT_EQ(s.failed_requests, r.failures) << "op " << op;
    ASSERT_EQ(s.reserved_bytes.current, upstream->stats().bytes.current) << "op " << op;
    ASSERT_LE(s.largest_free_block, s.free_bytes) << "op " << op;
  });
  a.trim();
  ASSERT_EQ(a.check_invariants(), "");
  // Every block freed and the cache emptied: every segment is one whole free block and goes back.
  EXPECT_EQ(a.stats().reserved_bytes.current, 0u);
  EXPECT_EQ(upstream->stats().bytes.current, 0u);
  EXPECT_EQ(a.memory_stats().inactive_split_bytes.current, 0u);
}

TEST(CachingPytorch, RandomChurnOnTheSimulatedDevice) { churn("", "simulated:capacity=80GiB", 64 * MiB, 40'000, false); }

TEST(CachingPytorch, RandomChurnWithEveryOptionUnderPressure) {
  churn("max_split_size=24MiB,roundup_power2_divisions=4,per_process_memory_fraction=0.9,garbage_collection_threshold=0.5",
        "simulated:capacity=2GiB", 48 * MiB, 40'000, true);
}

TEST(CachingPytorch, RandomChurnWithExpandableSegments) {
  churn("expandable_segments=true", "simulated:capacity=80GiB", 64 * MiB, 40'000, false);
}

TEST(CachingPytorch, RandomChurnWithExpandableSegmentsUnderPressure) {
  churn("expandable_segments=true,max_split_size=24MiB,roundup_power2_divisions=4,per_process_memory_fraction=0.9,"
        "garbage_collection_threshold=0.5",
        "simulated:capacity=2GiB", 48 * MiB, 40'000, true);
}

TEST(CachingPytorch, RandomChurnOnHostMemory) { churn("", "host:capacity=1GiB", 4 * MiB, 20'000, false); }

}  // namespace
}  // namespace tiermark
