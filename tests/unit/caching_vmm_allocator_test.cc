// caching.vmm: the rules of caching_vmm_allocator.h (512 B rounding, pools and ranges per stream, best
// fit with split and merge, pages counted per live block, mapped from the unmapped pool, by stealing idle
// pages or by a device call, trim) on the simulated device, every expected number worked out by hand in
// the comments; then seeded random churn against an independent model of live blocks, with
// check_invariants() after every operation, with and without a capacity that makes requests fail.
// Unless a test says otherwise: 2 MiB pages on an 80 GiB device, so each range is 90 GiB.
#include "allocators/caching_vmm_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"
#include "common/input_error.h"
#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

static_assert(AllocatorImpl<CachingVmmAllocator>);

Options vmm_options(const std::string& settings) {
  return make_options(settings.empty() ? "caching.vmm" : "caching.vmm:" + settings, CachingVmmAllocator::kName,
                      CachingVmmAllocator::option_specs());
}

// An allocator on its own simulated device; every call checked (testing::AllocatorHarness).
class Harness : public testing::AllocatorHarness<CachingVmmAllocator> {
 public:
  explicit Harness(const std::string& settings = "", const std::string& memory = "simulated:capacity=80GiB")
      : AllocatorHarness(settings.empty() ? "caching.vmm" : "caching.vmm:" + settings, memory) {}

  VmmMemoryStats vs() const { return a().vmm_stats(); }
  AllocatorStats s() const { return a().stats(); }
  std::uint64_t reserved() const { return a().stats().reserved_bytes.current; }
  // Offset of p from the base of the range holding it.
  std::uint64_t offset(void* p) const {
    for (const auto& range : a().snapshot()) {
      if (address_of(p) >= range.address && address_of(p) < range.address + range.size) return address_of(p) - range.address;
    }
    ADD_FAILURE() << "pointer outside every range";
    return 0;
  }
};

TEST(CachingVmm, RangesAreOneAndAnEighthOfTheDeviceInWholePages) {
  EXPECT_EQ(Harness().a().range_size(), 90 * GiB);  // 80 GiB + 10 GiB
  // 100 MiB + 12.5 MiB = 112.5 MiB, up to whole 2 MiB pages: 114 MiB.
  EXPECT_EQ(Harness("", "simulated:capacity=100MiB").a().range_size(), 114 * MiB);
  EXPECT_EQ(Harness("page_size=1GiB").a().range_size(), 90 * GiB);  // 90 GiB is whole 1 GiB pages already
}

TEST(CachingVmm, ASmallRequestTakesOnePage) {
  Harness h;
  void* p = h.alloc(1000);  // rounded to 1024 B; one 2 MiB page made and mapped
  EXPECT_EQ(h.s().allocated_bytes.current, 1024u);
  EXPECT_EQ(h.s().requested_bytes.current, 1000u);
  EXPECT_EQ(h.reserved(), 2 * MiB);
  EXPECT_EQ(h.vs().physical_pages.current, 1u);
  EXPECT_EQ(h.vs().maps, 1u);
  EXPECT_EQ(h.device().allocs, 1u);
  EXPECT_EQ(h.s().largest_free_block, 0u);  // the only page is needed by the live block
  EXPECT_EQ(h.s().free_bytes, 2 * MiB - 1024);
  h.release(p);
  // The page stays mapped, idle: free is cheap, and the whole page is free without a device call.
  EXPECT_EQ(h.reserved(), 2 * MiB);
  EXPECT_EQ(h.vs().idle_pages, 1u);
  EXPECT_EQ(h.vs().unmaps, 0u);
  EXPECT_EQ(h.s().largest_free_block, 2 * MiB);
}

TEST(CachingVmm, AdjacentBlocksShareTheirBoundaryPage) {
  Harness h;
  // 3 MiB > 1 MiB: large pool. [0, 3 MiB) touches pages 0 and 1; [3, 6 MiB) pages 1 and 2: three pages.
  void* p = h.alloc(3 * MiB);
  EXPECT_EQ(h.reserved(), 4 * MiB);
  void* q = h.alloc(3 * MiB);
  EXPECT_EQ(h.offset(q), 3 * MiB);
  EXPECT_EQ(h.reserved(), 6 * MiB);
  EXPECT_EQ(h.vs().maps, 3u);
  EXPECT_EQ(h.device().allocs, 3u);
  EXPECT_EQ(h.vs().live_pages, 3u);
  h.release(p);  // page 0 becomes idle; page 1 still holds q's first MiB
  EXPECT_EQ(h.vs().live_pages, 2u);
  EXPECT_EQ(h.vs().idle_pages, 1u);
  EXPECT_EQ(h.s().largest_free_block, 2 * MiB);
  h.release(q);
}

TEST(CachingVmm, AFreedBlockComesBackWithItsPagesMapped) {
  Harness h;
  void* p = h.alloc(8 * MiB);  // 4 pages
  const std::uint64_t at = h.offset(p);
  h.release(p);
  void* q = h.alloc(8 * MiB);  // best fit: the same place, every page still mapped
  EXPECT_EQ(h.offset(q), at);
  EXPECT_EQ(h.vs().maps, 4u);
  EXPECT_EQ(h.vs().steals, 0u);
  EXPECT_EQ(h.device().allocs, 4u);
  h.release(q);
}

TEST(CachingVmm, IdlePagesAreStolenAcrossRangesBeforeTheDeviceIsAsked) {
  Harness h;
  void* a = h.alloc(6 * MiB, 0);  // stream 0: pages 0-2 of its large range
  h.release(a);                   // three idle pages, pushed 0, 1, 2
  EXPECT_EQ(h.vs().idle_pages, 3u);
  void* b = h.alloc(4 * MiB, 1);  // stream 1: a new range, 2 pages, both stolen (pages 0 and 1: idle longest)
  EXPECT_EQ(h.vs().ranges, 2u);
  EXPECT_EQ(h.vs().steals, 2u);
  EXPECT_EQ(h.vs().unmaps, 2u);
  EXPECT_EQ(h.vs().maps, 5u);
  EXPECT_EQ(h.device().allocs, 3u);  // no device call
  EXPECT_EQ(h.reserved(), 6 * MiB);
  EXPECT_FALSE(h.a().is_mapped(address_of(a)));
  EXPECT_FALSE(h.a().is_mapped(address_of(a) + 2 * MiB));
  EXPECT_TRUE(h.a().is_mapped(address_of(a) + 4 * MiB));  // page 2 is still mapped, idle
  // Stream 0 again: its old place, page 2 reused in place, pages 0 and 1 made anew (nothing idle left).
  void* c = h.alloc(6 * MiB, 0);
  EXPECT_EQ(c, a);
  EXPECT_EQ(h.device().allocs, 5u);
  EXPECT_EQ(h.vs().maps, 7u);
  EXPECT_EQ(h.reserved(), 10 * MiB);
  h.release(b);
  h.release(c);
}

TEST(CachingVmm, AMissInTheSameRangeStealsTheIdlePagesOfAFreedHole) {
  Harness h;
  void* a = h.alloc(2 * MiB);  // page 0
  void* b = h.alloc(6 * MiB);  // pages 1-3
  void* c = h.alloc(2 * MiB);  // page 4
  h.release(b);                // a 6 MiB hole between live blocks: pages 1-3 idle
  // 8 MiB does not fit the hole: it goes to [10, 18) MiB, pages 5-8; three are stolen from the hole and
  // one is made. Reserved grows by one page, not four.
  void* d = h.alloc(8 * MiB);
  EXPECT_EQ(h.offset(d), 10 * MiB);
  EXPECT_EQ(h.vs().steals, 3u);
  EXPECT_EQ(h.device().allocs, 6u);
  EXPECT_EQ(h.reserved(), 12 * MiB);
  // The hole is still free virtual space; it just has no physical memory under it now.
  EXPECT_FALSE(h.a().is_mapped(address_of(a) + 2 * MiB));
  h.release(a);
  h.release(c);
  h.release(d);
}

TEST(CachingVmm, AFitWhosePagesAreMappedBeatsABetterFitWhoseAreNot) {
  Harness h;
  void* a = h.alloc(4 * MiB);  // pages 0-1
  void* b = h.alloc(2 * MiB);  // page 2
  void* c = h.alloc(6 * MiB);  // pages 3-5
  void* d = h.alloc(2 * MiB);  // page 6
  h.release(a);                // a 4 MiB hole, pages 0-1 idle (queued first)
  h.release(c);                // a 6 MiB hole, pages 3-5 idle
  void* e = h.alloc(4 * MiB, 1);  // stream 1 steals the two pages idle longest: 0 and 1
  EXPECT_EQ(h.vs().steals, 2u);
  EXPECT_EQ(h.device().allocs, 7u);
  // 4 MiB on stream 0: the best fit is a's hole, now unmapped; c's hole fits with its pages mapped, so it
  // is taken instead: no steal, no map, no device call.
  void* f = h.alloc(4 * MiB);
  EXPECT_EQ(h.offset(f), 6 * MiB);
  EXPECT_EQ(h.vs().steals, 2u);
  EXPECT_EQ(h.vs().maps, 9u);
  EXPECT_EQ(h.device().allocs, 7u);
  h.release(b);
  h.release(d);
  h.release(e);
  h.release(f);
}

TEST(CachingVmm, BestFitSplitsAndFreeMerges) {
  Harness h;
  void* a = h.alloc(2 * MiB);
  void* b = h.alloc(2 * MiB);
  void* c = h.alloc(2 * MiB);
  void* d = h.alloc(2 * MiB);
  h.release(a);
  h.release(c);
  // Two 2 MiB holes and the tail: the lowest address of the smallest fit.
  void* e = h.alloc(2 * MiB);
  EXPECT_EQ(e, a);
  h.release(b);  // merges with c's hole: [2, 6) MiB
  std::vector<CachingVmmAllocator::BlockInfo> blocks = h.a().snapshot().front().blocks;
  ASSERT_EQ(blocks.size(), 4u);  // e, the merged hole, d, the tail
  EXPECT_EQ(blocks[1].size, 4 * MiB);
  EXPECT_FALSE(blocks[1].allocated);
  // 1 MiB + 512 B (large pool): best fit is the 4 MiB hole, split at the front.
  void* f = h.alloc(MiB + 1);
  EXPECT_EQ(h.offset(f), 2 * MiB);
  EXPECT_EQ(h.s().allocated_bytes.current, 4 * MiB + MiB + 512);
  h.release(d);
  h.release(e);
  h.release(f);
  ASSERT_EQ(h.a().snapshot().front().blocks.size(), 1u);  // everything merged back into one block
}

TEST(CachingVmm, StreamsAndPoolsHaveTheirOwnRanges) {
  Harness h;
  void* p = h.alloc(1000, 0);         // small, stream 0
  void* q = h.alloc(1000, 1);         // small, stream 1
  void* r = h.alloc(MiB, 0);          // 1 MiB is still small: next to p
  void* s = h.alloc(MiB + 512, 0);    // large, stream 0
  const auto ranges = h.a().snapshot();
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0].address, kSyntheticRangeBase);
  EXPECT_EQ(ranges[1].address, kSyntheticRangeBase + 91 * GiB);  // 90 GiB, 1 GiB-aligned, plus a 1 GiB gap
  EXPECT_TRUE(ranges[0].small && ranges[1].small && !ranges[2].small);
  EXPECT_EQ(ranges[1].stream, 1u);
  EXPECT_EQ(h.offset(r), 1024u);
  EXPECT_EQ(h.reserved(), 3 * 2 * MiB);  // one page per range
  h.release(p);
  // Stream 1 never takes stream 0's free space, even with its page mapped: it grows its own range.
  void* t = h.alloc(1000, 1);
  EXPECT_EQ(h.offset(t), 1024u);
  EXPECT_EQ(h.vs().maps, 3u);
  h.release(q);
  h.release(r);
  h.release(s);
  h.release(t);
}

TEST(CachingVmm, OverAlignedRequestsGetAnAlignedPointerInsideTheirBlock) {
  Harness h;
  // 1000 B at 4 KiB: asks 1000 + 4096 - 512 = 4584 -> 4608 B; the range base is aligned already.
  void* p = h.alloc(1000, 0, 4096);
  EXPECT_EQ(h.offset(p), 0u);
  EXPECT_EQ(h.s().allocated_bytes.current, 4608u);
  // 100 B at 4 KiB: a 4096 B block at 4608, handed out from the first 4 KiB boundary, 8192.
  void* q = h.alloc(100, 0, 4096);
  EXPECT_EQ(h.offset(q), 8192u);
  EXPECT_EQ(h.s().allocated_bytes.current, 4608u + 4096u);
  h.release(p);
  h.release(q);
  // 1 B at 1 GiB: a block of exactly 1 GiB in the large range, 512 pages.
  void* g = h.alloc(1, 0, GiB);
  EXPECT_EQ(address_of(g) % GiB, 0u);
  EXPECT_EQ(h.vs().live_pages, 512u);
  h.release(g);
}

TEST(CachingVmm, ACapacityLimitedDeviceFailsCleanlyAndStaysUsable) {
  // 8 MiB device: four pages. The large range is 9 MiB -> 10 MiB.
  Harness h("", "simulated:capacity=8MiB");
  void* a = h.alloc(6 * MiB);  // pages 0-2
  // [6, 10) MiB needs pages 3 and 4: page 3 is made, page 4 refused; page 3 goes back, nothing changes.
  EXPECT_EQ(h.alloc(4 * MiB), nullptr);
  EXPECT_EQ(h.s().failed_requests, 1u);
  EXPECT_EQ(h.device().failed, 1u);
  EXPECT_EQ(h.device().allocs, 4u);
  EXPECT_EQ(h.device().frees, 1u);
  EXPECT_EQ(h.reserved(), 6 * MiB);
  EXPECT_EQ(h.vs().maps, 3u);
  // Still usable: a small request makes the fourth page.
  void* b = h.alloc(1000);
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(h.reserved(), 8 * MiB);
  h.release(a);
  // The freed 6 MiB: 4 MiB of it comes back on its idle pages without a device call.
  void* c = h.alloc(4 * MiB);
  EXPECT_EQ(c, a);
  EXPECT_EQ(h.device().allocs, 5u);
  // Bigger than the range: refused before any page is touched.
  EXPECT_EQ(h.alloc(11 * MiB), nullptr);
  EXPECT_EQ(h.s().failed_requests, 2u);
  h.release(b);
  h.release(c);
}

TEST(CachingVmm, TrimUnmapsIdlePagesAndReturnsEveryUnmappedPage) {
  Harness h;
  void* small = h.alloc(1000);     // one page in the small range
  void* large = h.alloc(4 * MiB);  // two pages in the large range
  h.release(large);
  h.trim();  // the two idle pages are unmapped and go back; the small one stays under its block
  EXPECT_EQ(h.reserved(), 2 * MiB);
  EXPECT_EQ(h.vs().unmaps, 2u);
  EXPECT_EQ(h.vs().steals, 0u);
  EXPECT_EQ(h.device().frees, 2u);
  EXPECT_EQ(h.s().largest_free_block, 0u);
  h.release(small);
  h.trim();
  EXPECT_EQ(h.reserved(), 0u);
  EXPECT_EQ(h.vs().physical_pages.current, 0u);
  EXPECT_EQ(h.vs().physical_pages.peak, 3u);
  EXPECT_EQ(h.device().frees, 3u);
  EXPECT_EQ(h.device().bytes.current, 0u);
  void* again = h.alloc(4 * MiB);  // usable after trim: two pages made anew
  EXPECT_EQ(h.device().allocs, 5u);
  h.release(again);
}

TEST(CachingVmm, PageSizeSetsTheUnitOfMapping) {
  Harness h("page_size=64KiB");
  void* p = h.alloc(1000);
  EXPECT_EQ(h.reserved(), 64 * KiB);
  void* q = h.alloc(3 * MiB);  // large range: 48 pages of 64 KiB
  EXPECT_EQ(h.reserved(), 64 * KiB + 3 * MiB);
  h.release(p);
  h.release(q);
}

TEST(CachingVmm, SmallSizeMovesThePoolBoundary) {
  Harness h("small_size=0");  // every request goes to the large pool
  void* p = h.alloc(1000);
  EXPECT_FALSE(h.a().snapshot().front().small);
  h.release(p);
}

TEST(CachingVmm, VirtualFragmentationCostsNoPhysicalMemory) {
  // Sixteen 6 MiB blocks with every other one freed: 48 MiB of holes. caching.pytorch would keep the
  // holes reserved; here the holes' interior pages are idle and serve a 40 MiB request placed beyond
  // them, so reserved grows only by what no idle page covers.
  Harness h;
  std::vector<void*> blocks;
  for (int i = 0; i < 16; ++i) blocks.push_back(h.alloc(6 * MiB));  // [0, 96) MiB: 48 pages
  for (int i = 0; i < 16; i += 2) h.release(blocks[i]);  // holes [12k, 12k + 6): pages 6k..6k+2, 24 idle
  EXPECT_EQ(h.vs().idle_pages, 24u);
  void* big = h.alloc(40 * MiB);  // [96, 136) MiB: 20 pages, all stolen
  EXPECT_EQ(h.vs().steals, 20u);
  EXPECT_EQ(h.device().allocs, 48u);
  EXPECT_EQ(h.reserved(), 96 * MiB);
  for (int i = 1; i < 16; i += 2) h.release(blocks[i]);
  h.release(big);
}

TEST(CachingVmm, RejectsHostMemoryAndBadOptionsInOneLine) {
  SimulatedUpstream device(make_options("simulated:capacity=1GiB", "simulated", SimulatedUpstream::option_specs()));
  auto host = make_upstream("host");
  const auto rejects = [&](const std::string& settings, Upstream& upstream, const std::string& fragment) {
    try {
      CachingVmmAllocator a(vmm_options(settings), upstream);
      ADD_FAILURE() << settings << " was accepted";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(fragment), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  };
  rejects("", *host, "needs a simulated upstream");
  rejects("page_size=3MiB", device, "power of two");
  rejects("page_size=32KiB", device, "from 64KiB");
  rejects("page_size=2GiB", device, "to 1GiB");
  rejects("small_size=1000", device, "multiple of 512B");
}

// ---- Randomized churn against a model ------------------------------------------------------------------

// Pages that [p, p + size) touches, counted independently of the allocator: a lower bound on live pages.
std::uint64_t pages_touched(const std::vector<std::pair<std::uintptr_t, std::uint64_t>>& spans, std::uint64_t page) {
  std::set<std::uintptr_t> pages;
  for (const auto& [p, size] : spans) {
    for (std::uintptr_t at = p / page * page; at < p + size; at += page) pages.insert(at);
  }
  return pages.size();
}

void churn(const std::string& settings, const std::string& memory, std::uint64_t max_size, int ops, bool may_fail) {
  auto upstream = make_upstream(memory);
  CachingVmmAllocator a(vmm_options(settings), *upstream);
  testing::ChurnSettings churn;
  churn.ops = ops;
  churn.max_size = max_size;
  churn.alignments = {16, 16, 16, 256, 512, 1024, 4096, 1 << 21};
  churn.streams = 2;
  churn.max_blocks = 400;
  churn.trim_every = 2500;
  churn.may_fail = may_fail;
  std::uint64_t peak_live_pages = 0;
  const testing::ChurnResult result = testing::random_churn(
      a, churn,
      [&](int op, const std::vector<testing::ChurnBlock>& blocks, std::uint64_t requested, const testing::ChurnResult& r) {
        const AllocatorStats s = a.stats();
        const VmmMemoryStats v = a.vmm_stats();
        ASSERT_EQ(s.requested_bytes.current, requested) << "op " << op;
        ASSERT_EQ(s.failed_requests, r.failures) << "op " << op;
        ASSERT_EQ(testing::reserved_stats_mismatch(s, upstream->stats()), "") << "op " << op;
        // Pages under the caller's bytes must be physical; the allocator's live pages can only be more.
        if (op % 64 == 0) {
          std::vector<std::pair<std::uintptr_t, std::uint64_t>> spans;
          for (const testing::ChurnBlock& b : blocks) spans.emplace_back(address_of(b.p), b.size);
          ASSERT_LE(pages_touched(spans, a.page_size()), v.live_pages) << "op " << op;
        }
        // Pages are made only when nothing is idle or unmapped, so without trim or failures the physical
        // pages are exactly the peak of live pages.
        peak_live_pages = std::max(peak_live_pages, v.live_pages);
        if (!r.trimmed && r.failures == 0) {
          ASSERT_EQ(v.physical_pages.current, peak_live_pages) << "op " << op;
        }
        ASSERT_EQ(s.largest_free_block, (v.physical_pages.current - v.live_pages) * a.page_size());
      });
  EXPECT_EQ(a.vmm_stats().live_pages, 0u);
  a.trim();
  ASSERT_EQ(a.check_invariants(), "");
  EXPECT_EQ(a.stats().reserved_bytes.current, 0u);
  EXPECT_EQ(upstream->stats().bytes.current, 0u);
  if (may_fail) {
    EXPECT_GT(result.failures, 0u) << "the capacity never bit: the test would not cover failures";
  }
}

TEST(CachingVmm, RandomChurnOnTheDefaultDevice) { churn("", "simulated", 64 * MiB, 20'000, false); }
TEST(CachingVmm, RandomChurnWithSmallPages) { churn("page_size=64KiB", "simulated:capacity=80GiB", 8 * MiB, 20'000, false); }
TEST(CachingVmm, RandomChurnUnderCapacityPressure) {
  churn("", "simulated:capacity=1GiB", 64 * MiB, 20'000, true);
}

}  // namespace
}  // namespace tiermark
