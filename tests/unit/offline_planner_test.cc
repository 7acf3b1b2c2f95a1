// Tests for the offline planner: hand-computed greedy-by-size plans (the arithmetic is in the
// comments), the lower-bound sweep, validate_plan against a brute-force pair check, the fast planner
// against a plain O(n^2) transcription of TFLite's loop, and PlannedAllocator replaying a plan on a
// simulated device.
#include "allocators/offline_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "allocators/registry.h"
#include "common/input_error.h"

namespace tiermark {
namespace {

constexpr std::uint64_t kForever = std::numeric_limits<std::uint64_t>::max();

PlannedBuffer buf(std::uint64_t size, std::uint64_t first, std::uint64_t last, std::uint64_t alignment = 1) {
  return PlannedBuffer{size, alignment, first, last};
}

bool conflict(const PlannedBuffer& a, const PlannedBuffer& b) { return a.first_use <= b.last_use && b.first_use <= a.last_use; }

// The same greedy placement as TFLite's GreedyBySizeAssignment, written as plainly as possible: scan
// every placed buffer (kept ordered by offset) for each new one, in the given order. With the
// size-descending order it is the reference for plan_greedy_by_size; with arrival order it is
// "first-come" placement.
std::vector<std::uint64_t> reference_offsets(const std::vector<PlannedBuffer>& buffers, const std::vector<std::size_t>& order) {
  std::vector<std::uint64_t> offsets(buffers.size(), 0);
  std::vector<std::size_t> placed;  // by offset
  for (const std::size_t i : order) {
    std::uint64_t prev_end = 0;
    std::uint64_t best_gap = kForever;
    std::uint64_t best = 0;
    for (const std::size_t j : placed) {
      if (!conflict(buffers[i], buffers[j])) continue;
      if (offsets[j] > prev_end) {
        const std::uint64_t start = align_up(prev_end, buffers[i].alignment);
        if (start + buffers[i].size <= offsets[j] && offsets[j] - prev_end < best_gap) {
          best_gap = offsets[j] - prev_end;
          best = start;
        }
      }
      prev_end = std::max(prev_end, offsets[j] + buffers[j].size);
    }
    offsets[i] = best_gap != kForever ? best : align_up(prev_end, buffers[i].alignment);
    const auto at = std::upper_bound(placed.begin(), placed.end(), offsets[i],
                                     [&](std::uint64_t o, std::size_t j) { return o < offsets[j]; });
    placed.insert(at, i);
  }
  return offsets;
}

std::vector<std::size_t> size_order(const std::vector<PlannedBuffer>& buffers) {
  std::vector<std::size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return buffers[a].size != buffers[b].size ? buffers[a].size > buffers[b].size : buffers[a].first_use < buffers[b].first_use;
  });
  return order;
}

std::uint64_t arena_of(const std::vector<PlannedBuffer>& buffers, const std::vector<std::uint64_t>& offsets) {
  std::uint64_t arena = 0;
  for (std::size_t i = 0; i < buffers.size(); ++i) arena = std::max(arena, offsets[i] + buffers[i].size);
  return arena;
}

// O(n^2) validity, independent of validate_plan's sweep.
bool brute_force_valid(const std::vector<PlannedBuffer>& buffers, const std::vector<std::uint64_t>& offsets) {
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    if (offsets[i] % buffers[i].alignment != 0) return false;
    for (std::size_t j = i + 1; j < buffers.size(); ++j) {
      const bool disjoint = offsets[i] + buffers[i].size <= offsets[j] || offsets[j] + buffers[j].size <= offsets[i];
      if (conflict(buffers[i], buffers[j]) && !disjoint) return false;
    }
  }
  return true;
}

// Random buffers shaped like a trace: allocations spread over 2n events, lifetimes mostly short with
// a few long ones, sizes log-uniform from 1 B to 1 MiB, alignments from {1, 16, 256, 4096} (or all 1).
std::vector<PlannedBuffer> random_buffers(std::size_t n, std::uint32_t seed, bool aligned, std::uint64_t mean_life) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint64_t> start(0, 2 * n);
  std::exponential_distribution<double> life(1.0 / static_cast<double>(mean_life));
  std::uniform_real_distribution<double> log_size(0.0, 20.0);
  std::uniform_int_distribution<int> align_pick(0, 3);
  const std::uint64_t alignments[] = {1, 16, 256, 4096};
  std::vector<PlannedBuffer> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t first = start(rng);
    const std::uint64_t size = static_cast<std::uint64_t>(std::exp2(log_size(rng)));
    const std::uint64_t alignment = aligned ? alignments[align_pick(rng)] : 1;
    // One in 64 is never freed: it lives to the end.
    const std::uint64_t last = (rng() % 64 == 0) ? kForever : first + static_cast<std::uint64_t>(life(rng));
    out.push_back(buf(size, first, last, alignment));
  }
  return out;
}

void expect_offsets(const MemoryPlan& plan, const std::vector<std::uint64_t>& expected) {
  ASSERT_EQ(plan.offsets.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(plan.offsets[i], expected[i]) << "buffer " << i;
}

// Five buffers whose lifetimes chain through overlaps, the shape of REFERENCE section 4's example.
const std::vector<PlannedBuffer> kChain = {
    buf(32, 0, 1),  // 0 A
    buf(28, 1, 2),  // 1 B
    buf(36, 2, 4),  // 2 C
    buf(16, 3, 5),  // 3 D
    buf(8, 4, 5),   // 4 E
};

TEST(OfflinePlanner, OverlappingAndDisjointLifetimesReuseMemory) {
  // Order by size: C36, A32, B28, D16, E8.
  //  C [2,4]: nothing placed                              -> 0   [0,36)
  //  A [0,1]: C starts at 2 > 1, no conflict              -> 0   [0,32)   reuses C's bytes
  //  B [1,2]: conflicts A (instant 1) and C (instant 2); by offset A[0,32) C[0,36): no gap
  //                                                        -> 36  [36,64)
  //  D [3,5]: conflicts C only (B ends at 2)               -> 36  [36,52)   reuses B's bytes
  //  E [4,5]: conflicts C[0,36) and D[36,52): no gap       -> 52  [52,60)
  // Arena = max end = 64. Live bytes: t0 32, t1 A+B 60, t2 B+C 64, t3 C+D 52, t4 C+D+E 60, t5 D+E 24
  // -> lower bound 64: the plan is optimal, against 120 bytes with no reuse.
  const MemoryPlan plan = plan_greedy_by_size(kChain);
  expect_offsets(plan, {0, 36, 0, 36, 52});
  EXPECT_EQ(plan.arena_bytes, 64u);
  EXPECT_EQ(plan.lower_bound_bytes, 64u);
  EXPECT_EQ(validate_plan(kChain, plan), "");
}

TEST(OfflinePlanner, GreedyBySizeBeatsFirstComePlacement) {
  const std::vector<PlannedBuffer> buffers = {buf(4, 0, 1), buf(4, 1, 2), buf(8, 2, 3)};
  // First-come (arrival order, same gap rule): A -> 0 [0,4); B conflicts A -> 4 [4,8);
  // C conflicts B only, gap [0,4) too small for 8 -> 8 [8,16). Arena 16.
  const std::vector<std::uint64_t> first_come = reference_offsets(buffers, {0, 1, 2});
  EXPECT_EQ(first_come, (std::vector<std::uint64_t>{0, 4, 8}));
  EXPECT_EQ(arena_of(buffers, first_come), 16u);
  // Greedy by size: C -> 0 [0,8); A [0,1] does not meet C -> 0 [0,4); B conflicts A[0,4) and
  // C[0,8) -> 8 [8,12). Arena 12 = lower bound (t1: 4+4 = 8, t2: 4+8 = 12).
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  expect_offsets(plan, {0, 8, 0});
  EXPECT_EQ(plan.arena_bytes, 12u);
  EXPECT_EQ(plan.lower_bound_bytes, 12u);
}

TEST(OfflinePlanner, BestFitTakesTheSmallestGapNotTheLowest) {
  const std::vector<PlannedBuffer> buffers = {
      buf(10, 0, 2),  // 0 long
      buf(8, 0, 0),   // 1 short: its bytes become a gap of 8 after instant 0
      buf(8, 0, 2),   // 2 long
      buf(6, 0, 0),   // 3 short: a gap of 6
      buf(5, 0, 2),   // 4 long
      buf(4, 0, 0),   // 5 short
      buf(4, 1, 2),   // 6 Q
      buf(4, 1, 2),   // 7 R
  };
  // Everything is live at instant 0, so 0..5 stack in size order (ties 1 before 2 by index):
  //   0 -> [0,10), 1 -> [10,18), 2 -> [18,26), 3 -> [26,32), 4 -> [32,37), 5 -> [37,41).
  // Q [1,2] conflicts 0, 2, 4 only: gaps [10,18) of 8 and [26,32) of 6. Best fit: 6 -> Q at 26
  //   (first fit would take 10).
  // R [1,2] conflicts 0, 2, 4 and Q[26,30): gaps [10,18) of 8 and [30,32) of 2 (too small) -> 10.
  // Arena 41 = lower bound (instant 0: 10+8+8+6+5+4 = 41; instant 1: 10+8+5+4+4 = 31).
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  expect_offsets(plan, {0, 10, 18, 26, 32, 37, 26, 10});
  EXPECT_EQ(plan.arena_bytes, 41u);
  EXPECT_EQ(plan.lower_bound_bytes, 41u);
  EXPECT_EQ(validate_plan(buffers, plan), "");
}

TEST(OfflinePlanner, AlignmentPadsTheGapStartAndTheTop) {
  const std::vector<PlannedBuffer> buffers = {
      buf(10, 0, 2, 1),   // 0 A
      buf(8, 0, 2, 16),   // 1 B
      buf(5, 1, 1, 4),    // 2 D
      buf(4, 1, 1, 4),    // 3 C
  };
  // A -> [0,10). B conflicts A: above at align_up(10, 16) = 16 -> [16,24), leaving the gap [10,16).
  // D (5, align 4): the gap's aligned start is 12 and 12 + 5 = 17 > 16, so the raw 6-byte gap does not
  //   fit once aligned (TFLite, aligning ends only, would use 10); above at align_up(24, 4) = 24 -> [24,29).
  // C (4, align 4): gap start 12, 12 + 4 = 16 fits -> [12,16).
  // Arena 29; lower bound at instant 1: 10 + 8 + 5 + 4 = 27.
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  expect_offsets(plan, {0, 16, 24, 12});
  EXPECT_EQ(plan.arena_bytes, 29u);
  EXPECT_EQ(plan.lower_bound_bytes, 27u);
  EXPECT_EQ(validate_plan(buffers, plan), "");
}

TEST(OfflinePlanner, TiesGoByFirstUseThenIndex) {
  // Four 8-byte buffers all live at instants 2..5, given with first_use falling:
  // order = 2 (first 0), 3 (first 0, higher index), 1 (first 1), 0 (first 2) -> offsets 0, 8, 16, 24.
  const std::vector<PlannedBuffer> buffers = {buf(8, 2, 5), buf(8, 1, 5), buf(8, 0, 5), buf(8, 0, 5)};
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  expect_offsets(plan, {24, 16, 0, 8});
  EXPECT_EQ(plan.arena_bytes, 32u);
  // Planning the same input twice gives the same plan.
  EXPECT_EQ(plan_greedy_by_size(buffers).offsets, plan.offsets);
}

TEST(OfflinePlanner, SequentialBuffersShareOneSlotTheSizeOfTheLargest) {
  // Closed lifetimes [0,0], [1,1], [2,2], [3,3] never meet: all at offset 0, arena = largest = 9.
  const std::vector<PlannedBuffer> buffers = {buf(5, 0, 0), buf(9, 1, 1), buf(3, 2, 2), buf(7, 3, 3)};
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  expect_offsets(plan, {0, 0, 0, 0});
  EXPECT_EQ(plan.arena_bytes, 9u);
  EXPECT_EQ(plan.lower_bound_bytes, 9u);
}

TEST(OfflinePlanner, AllOverlappingStackToTheSum) {
  // All live over [0,3]: stacked by size 9, 7, 5, 3 -> offsets 0, 9, 16, 21; arena 24 = sum = bound.
  const std::vector<PlannedBuffer> buffers = {buf(5, 0, 3), buf(9, 0, 3), buf(3, 0, 3), buf(7, 0, 3)};
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  expect_offsets(plan, {16, 0, 21, 9});
  EXPECT_EQ(plan.arena_bytes, 24u);
  EXPECT_EQ(plan.lower_bound_bytes, 24u);
}

TEST(OfflinePlanner, LowerBoundIsThePeakOfLiveBytes) {
  const std::vector<PlannedBuffer> buffers = {
      buf(10, 0, 4), buf(20, 2, 6), buf(5, 5, 9), buf(40, 7, 7), buf(1, 4, 5), buf(3, 7, kForever),
  };
  // Live bytes: t0-1 10; t2-3 30; t4 10+20+1 = 31; t5 20+5+1 = 26; t6 25; t7 5+40+3 = 48;
  // t8 onwards 5+3 = 8 (the never-freed 3 stays). Peak 48 at t7.
  EXPECT_EQ(lower_bound_bytes(buffers), 48u);
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  EXPECT_EQ(plan.lower_bound_bytes, 48u);
  EXPECT_GE(plan.arena_bytes, 48u);
  EXPECT_EQ(validate_plan(buffers, plan), "");
  EXPECT_EQ(lower_bound_bytes({}), 0u);
}

TEST(OfflinePlanner, EmptyInputGivesAnEmptyPlan) {
  const MemoryPlan plan = plan_greedy_by_size({});
  EXPECT_TRUE(plan.offsets.empty());
  EXPECT_EQ(plan.arena_bytes, 0u);
  EXPECT_EQ(plan.lower_bound_bytes, 0u);
  EXPECT_EQ(validate_plan({}, plan), "");
}

TEST(OfflinePlanner, RejectsBuffersNoAllocatorCouldServe) {
  EXPECT_THROW(plan_greedy_by_size(std::vector<PlannedBuffer>{buf(0, 0, 1)}), InputError);
  EXPECT_THROW(plan_greedy_by_size(std::vector<PlannedBuffer>{buf(8, 0, 1, 3)}), InputError);
  EXPECT_THROW(plan_greedy_by_size(std::vector<PlannedBuffer>{buf(8, 2, 1)}), InputError);
  EXPECT_THROW(plan_greedy_by_size(std::vector<PlannedBuffer>{buf(kForever, 0, 1), buf(2, 0, 1)}), InputError);
}

TEST(ValidatePlan, CatchesBrokenPlans) {
  const MemoryPlan good = plan_greedy_by_size(kChain);  // offsets {0, 36, 0, 36, 52}, arena 64
  ASSERT_EQ(validate_plan(kChain, good), "");

  MemoryPlan overlap = good;
  overlap.offsets[1] = 30;  // B [30,58) and A [0,32) are both live at instant 1
  EXPECT_NE(validate_plan(kChain, overlap).find("overlap"), std::string::npos) << validate_plan(kChain, overlap);

  MemoryPlan adjacent_instant = good;
  adjacent_instant.offsets[3] = 40;  // D [40,56) meets B [36,64)? No: B ends at 2, D starts at 3 ...
  adjacent_instant.offsets[4] = 44;  // ... but E [44,52) and D are both live at 4 and 5
  EXPECT_NE(validate_plan(kChain, adjacent_instant), "");

  MemoryPlan outside = good;
  outside.arena_bytes = 63;  // B ends at 64
  EXPECT_NE(validate_plan(kChain, outside).find("outside the arena"), std::string::npos);

  std::vector<PlannedBuffer> aligned = kChain;
  aligned[4].alignment = 16;  // E at 52 is not a multiple of 16
  EXPECT_NE(validate_plan(aligned, good).find("not aligned"), std::string::npos);

  MemoryPlan short_plan = good;
  short_plan.offsets.pop_back();
  EXPECT_NE(validate_plan(kChain, short_plan), "");

  MemoryPlan wrong_bound = good;
  wrong_bound.lower_bound_bytes = 60;
  EXPECT_NE(validate_plan(kChain, wrong_bound).find("lower_bound_bytes"), std::string::npos);

  // Conflicting buffers may touch: the good plan has C [0,36) | D [36,52) | E [52,60) all live at 4.
}

TEST(ValidatePlan, AgreesWithABruteForcePairCheck) {
  // Random perturbations of valid plans: the sweep must call a plan valid exactly when no pair of
  // conflicting buffers overlaps.
  int invalid_seen = 0;
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    const std::vector<PlannedBuffer> buffers = random_buffers(200, seed, seed % 2 == 0, 20);
    const MemoryPlan plan = plan_greedy_by_size(buffers);
    std::mt19937_64 rng(seed);
    for (int trial = 0; trial < 20; ++trial) {
      MemoryPlan broken = plan;
      const std::size_t i = rng() % buffers.size();
      broken.offsets[i] = (rng() % std::max<std::uint64_t>(plan.arena_bytes, 1)) / buffers[i].alignment * buffers[i].alignment;
      broken.arena_bytes = std::max(plan.arena_bytes, broken.offsets[i] + buffers[i].size);
      const bool valid = brute_force_valid(buffers, broken.offsets);
      invalid_seen += valid ? 0 : 1;
      EXPECT_EQ(validate_plan(buffers, broken).empty(), valid) << "seed " << seed << " trial " << trial;
    }
  }
  EXPECT_GT(invalid_seen, 50) << "the perturbations should break many plans";
}

TEST(OfflinePlanner, RandomPlansAreValidAndBetweenTheBounds) {
  for (std::uint32_t seed = 1; seed <= 6; ++seed) {
    const bool aligned = seed % 2 == 0;
    const std::vector<PlannedBuffer> buffers = random_buffers(4000, seed, aligned, seed <= 3 ? 50 : 1000);
    const MemoryPlan plan = plan_greedy_by_size(buffers);
    ASSERT_EQ(validate_plan(buffers, plan), "") << "seed " << seed;
    std::uint64_t sum = 0;
    std::uint64_t padded_sum = 0;
    for (const PlannedBuffer& b : buffers) {
      sum += b.size;
      padded_sum += b.size + b.alignment - 1;
    }
    EXPECT_GE(plan.arena_bytes, plan.lower_bound_bytes) << "seed " << seed;
    EXPECT_LE(plan.arena_bytes, padded_sum) << "seed " << seed;
    if (!aligned) {
      EXPECT_LE(plan.arena_bytes, sum) << "seed " << seed;
    }
    EXPECT_EQ(plan.arena_bytes, arena_of(buffers, plan.offsets));
  }
}

TEST(OfflinePlanner, MatchesAPlainTranscriptionOfTfliteLoop) {
  // The conflict index must find exactly the conflicting buffers the O(n^2) scan finds.
  for (std::uint32_t seed = 11; seed <= 14; ++seed) {
    const std::vector<PlannedBuffer> buffers = random_buffers(1500, seed, seed % 2 == 0, seed * 40);
    EXPECT_EQ(plan_greedy_by_size(buffers).offsets, reference_offsets(buffers, size_order(buffers))) << "seed " << seed;
  }
}

// PlannedAllocator replays kChain: allocate calls come in buffer order A, B, C, D, E, frees when the
// lifetimes end.
struct PlannedAllocatorTest : ::testing::Test {
  std::unique_ptr<Upstream> device = make_upstream("simulated:capacity=1MiB");
  MemoryPlan plan = plan_greedy_by_size(kChain);
};

TEST_F(PlannedAllocatorTest, ReplayReturnsBasePlusOffset) {
  PlannedAllocator planner(plan, kChain, *device);
  ASSERT_NE(planner.base(), 0u);
  EXPECT_EQ(planner.stats().reserved_bytes.current, 64u);
  EXPECT_EQ(device->stats().bytes.current, 64u) << "one upstream block of arena_bytes";
  const auto at = [&](std::uint64_t offset) { return pointer_at(planner.base() + offset); };
  void* a = planner.allocate(32, 1, 0);
  EXPECT_EQ(a, at(0));
  void* b = planner.allocate(28, 1, 0);
  EXPECT_EQ(b, at(36));
  planner.deallocate(a, 32, 1, 0);
  void* c = planner.allocate(36, 1, 0);
  EXPECT_EQ(c, at(0));
  planner.deallocate(b, 28, 1, 0);
  void* d = planner.allocate(16, 1, 0);
  EXPECT_EQ(d, at(36));
  void* e = planner.allocate(8, 4, 0);  // base is at least 256-aligned (simulated device), 52 % 4 == 0
  EXPECT_EQ(e, at(52));
  EXPECT_EQ(planner.check_invariants(), "");
  AllocatorStats s = planner.stats();
  EXPECT_EQ(s.requested_bytes.peak, 64u) << "B + C at instant 2: the lower bound";
  EXPECT_EQ(s.requested_bytes.current, 60u);
  EXPECT_EQ(s.allocated_bytes.current, 60u);
  EXPECT_EQ(s.free_bytes, 4u);
  EXPECT_EQ(s.failed_requests, 0u);
  EXPECT_EQ(s.largest_free_block, 0u) << "the plan is used up";

  EXPECT_EQ(planner.allocate(8, 1, 0), nullptr) << "more requests than planned";
  EXPECT_EQ(planner.stats().failed_requests, 1u);

  planner.trim();
  EXPECT_EQ(planner.stats().reserved_bytes.current, 64u) << "blocks still live: the arena stays";
  planner.deallocate(c, 36, 1, 0);
  planner.deallocate(d, 16, 1, 0);
  planner.deallocate(e, 8, 4, 0);
  EXPECT_EQ(planner.check_invariants(), "");
  planner.trim();
  EXPECT_EQ(planner.stats().reserved_bytes.current, 0u) << "plan finished and nothing live: arena released";
  EXPECT_EQ(device->stats().bytes.current, 0u);
  EXPECT_EQ(planner.check_invariants(), "");
}

TEST_F(PlannedAllocatorTest, MismatchedRequestsFailWithoutShiftingLaterOnes) {
  PlannedAllocator planner(plan, kChain, *device);
  EXPECT_EQ(planner.stats().largest_free_block, 32u) << "the next planned request";
  void* a = planner.allocate(32, 1, 0);
  EXPECT_EQ(planner.allocate(29, 1, 0), nullptr) << "B is planned as 28 bytes";
  EXPECT_EQ(planner.stats().failed_requests, 1u);
  planner.deallocate(a, 32, 1, 0);  // A's lifetime ends before C's starts, as planned
  void* c = planner.allocate(36, 1, 0);
  EXPECT_EQ(c, pointer_at(planner.base() + 0)) << "request 3 is still buffer C";
  EXPECT_EQ(planner.allocate(16, 4096, 0), nullptr) << "D at offset 36 cannot be 4096-aligned";
  EXPECT_EQ(planner.stats().failed_requests, 2u);
  EXPECT_EQ(planner.check_invariants(), "");
  planner.deallocate(c, 36, 1, 0);
  EXPECT_EQ(planner.check_invariants(), "");
}

TEST_F(PlannedAllocatorTest, LiveBytesBeyondTheArenaBreakAnInvariant) {
  PlannedAllocator planner(plan, kChain, *device);
  void* a = planner.allocate(32, 1, 0);
  void* b = planner.allocate(28, 1, 0);
  void* c = planner.allocate(36, 1, 0);  // A not freed first: A [0,32) and C [0,36) now share bytes
  EXPECT_EQ(planner.check_invariants(), "planner: allocated exceeds the arena");  // 32 + 28 + 36 > 64
  planner.deallocate(a, 32, 1, 0);
  planner.deallocate(b, 28, 1, 0);
  planner.deallocate(c, 36, 1, 0);
}

TEST(PlannedAllocator, ArenaRefusedMeansEveryRequestFails) {
  const std::unique_ptr<Upstream> small = make_upstream("simulated:capacity=32");
  const MemoryPlan plan = plan_greedy_by_size(kChain);  // needs 64 bytes
  PlannedAllocator planner(plan, kChain, *small);
  EXPECT_EQ(planner.base(), 0u);
  EXPECT_EQ(planner.allocate(32, 1, 0), nullptr);
  EXPECT_EQ(planner.stats().failed_requests, 1u);
  EXPECT_EQ(planner.stats().reserved_bytes.current, 0u);
  EXPECT_EQ(planner.check_invariants(), "");
}

TEST(PlannedAllocator, RejectsAnInvalidPlan) {
  const std::unique_ptr<Upstream> device = make_upstream("simulated:capacity=1MiB");
  MemoryPlan plan = plan_greedy_by_size(kChain);
  plan.offsets[1] = 30;  // B overlaps A at instant 1
  EXPECT_THROW(PlannedAllocator(plan, kChain, *device), InputError);
  EXPECT_EQ(device->stats().bytes.current, 0u);
}

}  // namespace
}  // namespace tiermark
