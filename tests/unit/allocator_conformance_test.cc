// The contract every allocator keeps, checked the same way for each (allocator.h): alignment, no
// overlap and intact contents under seeded random churn, stats equal to independently tracked sums,
// check_invariants() after every operation, exhaustion as a counted failure with recovery, and that
// everything goes back to zero when every block is freed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "allocators/registry.h"
#include "common/input_error.h"
#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

using testing::build;
using testing::LiveBlocks;

struct Case {
  std::string allocator;   // spec
  std::string memory;      // upstream spec for the churn and alignment tests
  std::size_t max_size;    // largest request the allocator serves in this configuration
  std::string exhaustion;  // upstream spec with a small capacity; empty: exhaust with an impossible size

  friend void PrintTo(const Case& c, std::ostream* out) { *out << c.allocator << " on " << c.memory; }
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.allocator.substr(0, info.param.allocator.find(':')) + "_" +
                     info.param.memory.substr(0, info.param.memory.find(':'));
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

class Conformance : public ::testing::TestWithParam<Case> {};

TEST_P(Conformance, EveryAlignmentUpTo4KiBIsHonoured) {
  auto [upstream, allocator] = build(GetParam().allocator, GetParam().memory);
  for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2) {
    for (std::size_t size : {std::size_t{1}, std::size_t{24}, alignment, 3 * alignment + 5}) {
      size = std::min(size, GetParam().max_size);
      void* p = allocator->allocate(size, alignment, 0);
      ASSERT_NE(p, nullptr) << "size " << size << " alignment " << alignment;
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignment, 0u) << "size " << size << " alignment " << alignment;
      ASSERT_EQ(allocator->check_invariants(), "");
      allocator->deallocate(p, size, alignment, 0);
      ASSERT_EQ(allocator->check_invariants(), "");
    }
  }
  EXPECT_EQ(allocator->stats().failed_requests, 0u);
}

// 100,000 seeded operations around a live set of about 1,000 blocks, log-uniform sizes and mixed
// alignments; after every operation the allocator's invariants and its stats are checked against
// sums kept here, independently of the allocator.
TEST_P(Conformance, RandomChurnKeepsBlocksDisjointAndStatsExact) {
  auto [upstream, allocator] = build(GetParam().allocator, GetParam().memory);
  LiveBlocks live(upstream->touchable());
  struct Block {
    void* p;
    std::size_t size;
    std::size_t alignment;
    std::uint64_t allocated;  // what the allocation added to allocated_bytes
  };
  std::vector<Block> blocks;
  std::mt19937_64 rng(20261123);
  std::uniform_real_distribution<double> log_size(0.0, std::log(double(GetParam().max_size)));
  const std::size_t alignments[] = {16, 16, 16, 16, 8, 64, 256, 4096};
  std::uint64_t requested = 0, peak_requested = 0, allocs = 0, frees = 0;

  for (int op = 0; op < 100'000; ++op) {
    const bool allocate = blocks.empty() || (blocks.size() < 2000 && rng() % 100 < (blocks.size() < 1000 ? 60u : 40u));
    const std::uint64_t allocated_before = allocator->stats().allocated_bytes.current;
    if (allocate) {
      const std::size_t size = std::max<std::size_t>(1, static_cast<std::size_t>(std::exp(log_size(rng))));
      const std::size_t alignment = alignments[rng() % std::size(alignments)];
      void* p = allocator->allocate(size, alignment, 0);
      ASSERT_NE(p, nullptr) << "op " << op << ": size " << size << " alignment " << alignment;
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignment, 0u);
      ASSERT_EQ(live.add(p, size, static_cast<std::uint64_t>(op)), "") << "op " << op;
      const std::uint64_t added = allocator->stats().allocated_bytes.current - allocated_before;
      ASSERT_GE(added, size) << "op " << op << ": a block smaller than the request";
      blocks.push_back({p, size, alignment, added});
      requested += size;
      peak_requested = std::max(peak_requested, requested);
      ++allocs;
    } else {
      const std::size_t victim = rng() % blocks.size();
      const Block block = blocks[victim];
      blocks[victim] = blocks.back();
      blocks.pop_back();
      ASSERT_EQ(live.remove(block.p, block.size), "") << "op " << op;
      allocator->deallocate(block.p, block.size, block.alignment, 0);
      ASSERT_EQ(allocated_before - allocator->stats().allocated_bytes.current, block.allocated)
          << "op " << op << ": free released a different size than its allocation added";
      requested -= block.size;
      ++frees;
    }
    ASSERT_EQ(allocator->check_invariants(), "") << "after op " << op;
    const AllocatorStats s = allocator->stats();
    ASSERT_EQ(s.requested_bytes.current, requested) << "op " << op;
    ASSERT_EQ(s.requested_bytes.peak, peak_requested) << "op " << op;
    ASSERT_EQ(s.allocs, allocs);
    ASSERT_EQ(s.frees, frees);
    ASSERT_EQ(s.failed_requests, 0u);
    ASSERT_LE(s.requested_bytes.current, s.allocated_bytes.current);
    if (s.reserved_known) {
      ASSERT_EQ(testing::reserved_stats_mismatch(s, upstream->stats()), "") << "op " << op;
    }
  }
  for (const Block& block : blocks) {
    ASSERT_EQ(live.remove(block.p, block.size), "");
    allocator->deallocate(block.p, block.size, block.alignment, 0);
  }
  ASSERT_EQ(allocator->check_invariants(), "");
  AllocatorStats s = allocator->stats();
  EXPECT_EQ(s.requested_bytes.current, 0u);
  EXPECT_EQ(s.allocated_bytes.current, 0u);
  EXPECT_EQ(s.allocs, s.frees);
  allocator->trim();
  ASSERT_EQ(allocator->check_invariants(), "");
}

TEST_P(Conformance, ExhaustionIsACountedFailureAndFreesRecover) {
  const bool by_capacity = !GetParam().exhaustion.empty();
  auto [upstream, allocator] = build(GetParam().allocator, by_capacity ? GetParam().exhaustion : GetParam().memory);
  const std::size_t size = std::min<std::size_t>(GetParam().max_size, 64 << 10);
  std::vector<void*> blocks;
  if (by_capacity) {
    for (int i = 0; i < 1'000'000; ++i) {
      void* p = allocator->allocate(size, kDefaultAlignment, 0);
      ASSERT_EQ(allocator->check_invariants(), "");
      if (p == nullptr) break;
      blocks.push_back(p);
    }
    ASSERT_FALSE(blocks.empty());
  } else {
    // An impossible request: no malloc can give a quarter of the 64-bit address space.
    EXPECT_EQ(allocator->allocate(std::size_t{1} << 62, kDefaultAlignment, 0), nullptr);
  }
  EXPECT_EQ(allocator->stats().failed_requests, 1u);
  EXPECT_EQ(allocator->stats().allocs, blocks.size());
  if (by_capacity) {
    EXPECT_EQ(allocator->allocate(size, kDefaultAlignment, 0), nullptr) << "still exhausted: a second failure";
    EXPECT_EQ(allocator->stats().failed_requests, 2u);
  }
  // Free the older half (in allocation order, so that whole chunks empty for `bump`), then allocate again.
  const std::size_t half = blocks.size() / 2;
  for (std::size_t i = 0; i < half; ++i) allocator->deallocate(blocks[i], size, kDefaultAlignment, 0);
  blocks.erase(blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(half));
  ASSERT_EQ(allocator->check_invariants(), "");
  void* again = allocator->allocate(size, kDefaultAlignment, 0);
  ASSERT_NE(again, nullptr) << "the allocator did not recover after frees";
  blocks.push_back(again);
  EXPECT_EQ(allocator->stats().failed_requests, by_capacity ? 2u : 1u);
  for (void* p : blocks) allocator->deallocate(p, size, kDefaultAlignment, 0);
  ASSERT_EQ(allocator->check_invariants(), "");
  EXPECT_EQ(allocator->stats().allocated_bytes.current, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    AllAllocators, Conformance,
    ::testing::Values(
        Case{"bump:chunk=1MiB", "simulated:capacity=64GiB", 256 << 10, "simulated:capacity=16MiB"},
        Case{"bump:chunk=1MiB", "host", 256 << 10, "host:capacity=16MiB"},
        Case{"system", "host", 256 << 10, ""},
        Case{"buddy:arena=4MiB", "simulated", 256 << 10, "simulated:capacity=16MiB"},
        Case{"buddy:arena=4MiB", "host", 256 << 10, "host:capacity=16MiB"},
        Case{"pool.fixed:block_size=64KiB,blocks_per_chunk=16", "simulated", 64 << 10, "simulated:capacity=16MiB"},
        Case{"pool.fixed:block_size=64KiB,blocks_per_chunk=16", "host", 64 << 10, "host:capacity=16MiB"},
        Case{"pool.sizeclass:max_size=64KiB,chunk=256KiB", "simulated", 256 << 10, "simulated:capacity=16MiB"},
        Case{"pool.sizeclass:max_size=64KiB,chunk=256KiB", "host", 256 << 10, "host:capacity=16MiB"},
        Case{"pool.coalescing:initial=4MiB", "simulated", 256 << 10, "simulated:capacity=16MiB"},
        Case{"pool.coalescing:initial=4MiB", "host", 256 << 10, "host:capacity=16MiB"},
        Case{"caching.pytorch", "simulated", 256 << 10, "simulated:capacity=16MiB"},
        Case{"caching.pytorch", "host", 256 << 10, "host:capacity=16MiB"},
        Case{"caching.bfc", "simulated", 256 << 10, "simulated:capacity=16MiB"},
        Case{"caching.bfc", "host", 256 << 10, "host:capacity=16MiB"},
        // Simulated only: caching.vmm refuses host memory (RefusesWhatItCannotModel below).
        Case{"caching.vmm", "simulated", 256 << 10, "simulated:capacity=16MiB"}),
    case_name);

// Every registered allocator is covered above: a new allocator must be added to the list.
TEST(Conformance, CoversEveryRegisteredAllocator) {
  std::set<std::string> covered = {"bump", "system", "buddy", "pool.fixed", "pool.sizeclass", "pool.coalescing", "caching.pytorch",
                                   "caching.bfc", "caching.vmm"};
  for (const ComponentInfo& info : allocator_catalog()) {
    EXPECT_TRUE(covered.count(std::string(info.name))) << info.name << " has no conformance case";
  }
}

// Allocators that map pages under a reserved virtual range need a simulated device: on host memory the
// registry refuses them with one line that says why, instead of building something untouchable.
TEST(Conformance, RefusesWhatItCannotModel) {
  const auto host_error = [](const std::string& spec) -> std::string {
    try {
      build(spec, "host");
    } catch (const InputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  for (const std::string spec : {"caching.vmm", "caching.pytorch:expandable_segments=true"}) {
    const std::string message = host_error(spec);
    EXPECT_NE(message.find("needs a simulated upstream"), std::string::npos) << spec << ": " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace tiermark
