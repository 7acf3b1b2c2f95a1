// A simulated 80 GiB device on this small host: 10,000 allocations of 8 MiB (78.1 GiB) must succeed
// for every allocator that sits on an upstream, in bounded host memory (metadata only, no backing).
#include <gtest/gtest.h>

#include <vector>

#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

class SimulatedDevice : public ::testing::TestWithParam<std::string> {};

TEST_P(SimulatedDevice, TenThousandEightMiBBlocksFitIn80GiBWithBoundedHostMemory) {
  constexpr std::size_t kBlock = std::size_t{8} << 20;
  constexpr int kBlocks = 10'000;
  const std::uint64_t rss_before = testing::resident_bytes();
  auto [device, allocator] = testing::build(GetParam(), "simulated:capacity=80GiB");
  std::vector<void*> blocks;
  blocks.reserve(kBlocks);
  for (int i = 0; i < kBlocks; ++i) {
    blocks.push_back(allocator->allocate(kBlock, 256, 0));
    ASSERT_NE(blocks.back(), nullptr) << "allocation " << i;
  }
  const AllocatorStats s = allocator->stats();
  EXPECT_EQ(s.requested_bytes.current, std::uint64_t{kBlocks} * kBlock);
  EXPECT_GE(s.reserved_bytes.current, std::uint64_t{kBlocks} * kBlock);
  EXPECT_LE(s.reserved_bytes.current, std::uint64_t{80} << 30);
  EXPECT_EQ(allocator->check_invariants(), "");
  // 256 MiB of host memory for 78 GiB of device blocks: metadata only.
  if (testing::kResidentBoundsHold) {
    EXPECT_LT(testing::resident_bytes() - std::min(rss_before, testing::resident_bytes()), std::uint64_t{256} << 20);
  }
  for (void* p : blocks) allocator->deallocate(p, kBlock, 256, 0);
  EXPECT_EQ(allocator->stats().allocated_bytes.current, 0u);
  EXPECT_EQ(allocator->check_invariants(), "");
}

INSTANTIATE_TEST_SUITE_P(EveryUpstreamAllocator, SimulatedDevice,
                         ::testing::Values("bump", "buddy", "pool.fixed:block_size=8MiB,blocks_per_chunk=16",
                                           "pool.sizeclass", "pool.coalescing"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string name = param_info.param.substr(0, param_info.param.find(':'));
                           std::replace(name.begin(), name.end(), '.', '_');
                           return name;
                         });

}  // namespace
}  // namespace tiermark
