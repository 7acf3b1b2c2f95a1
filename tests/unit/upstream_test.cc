#include <gtest/gtest.h>

#include <cstring>

#include "allocators/host_upstream.h"
#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"

namespace tiermark {
namespace {

TEST(HostUpstream, GivesTouchableAlignedMemoryAndCountsCalls) {
  auto host = make_upstream("host");
  ASSERT_TRUE(host->touchable());
  for (std::size_t alignment : {std::size_t{4096}, std::size_t{1} << 16, std::size_t{1} << 21}) {
    void* p = host->allocate(100'000, alignment);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignment, 0u);
    std::memset(p, 0xab, 100'000);
    host->deallocate(p, 100'000, alignment);
  }
  const UpstreamStats s = host->stats();
  EXPECT_EQ(s.allocs, 3u);
  EXPECT_EQ(s.frees, 3u);
  EXPECT_EQ(s.bytes.current, 0u);
  EXPECT_EQ(s.bytes.peak, 100'000u);
}

TEST(HostUpstream, CapacityRefusesAndCounts) {
  auto host = make_upstream("host:capacity=1MiB");
  void* a = host->allocate(768 << 10, 4096);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(host->allocate(512 << 10, 4096), nullptr);  // 768 + 512 KiB > 1 MiB
  EXPECT_EQ(host->stats().failed, 1u);
  void* b = host->allocate(256 << 10, 4096);  // exactly fills the capacity
  ASSERT_NE(b, nullptr);
  host->deallocate(a, 768 << 10, 4096);
  host->deallocate(b, 256 << 10, 4096);
}

TEST(HostUpstream, HugePageAndPopulateOptionsWork) {
  auto thp = make_upstream("host:huge_pages=transparent,populate=true");
  void* p = thp->allocate(4 << 20, 2 << 20);
  ASSERT_NE(p, nullptr);
  static_cast<char*>(p)[(4 << 20) - 1] = 1;
  thp->deallocate(p, 4 << 20, 2 << 20);
  // Explicit huge pages need pages reserved by the administrator; without them the call fails cleanly.
  auto explicit_pages = make_upstream("host:huge_pages=explicit");
  if (void* q = explicit_pages->allocate(2 << 20, 2 << 20)) {
    explicit_pages->deallocate(q, 2 << 20, 2 << 20);
  } else {
    EXPECT_EQ(explicit_pages->stats().failed, 1u);
  }
}

TEST(HostUpstream, BindsToNumaNodeZero) {
  auto bound = make_upstream("host:numa_node=0");
  void* p = bound->allocate(1 << 20, 4096);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, 1 << 20);
  bound->deallocate(p, 1 << 20, 4096);
}

TEST(SimulatedUpstream, HandsOutDisjointNonCanonicalRangesAndReusesThem) {
  auto device = make_upstream("simulated:capacity=1GiB,alloc_cost_ns=1000,free_cost_ns=250");
  ASSERT_FALSE(device->touchable());
  void* a = device->allocate(100, 16);      // rounded to 256 inside the device
  void* b = device->allocate(1 << 20, 1 << 20);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(SimulatedUpstream::owns(a, 100));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 256, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) % (1 << 20), 0u);
  EXPECT_GE(reinterpret_cast<std::uintptr_t>(b), reinterpret_cast<std::uintptr_t>(a) + 256);
  device->deallocate(a, 100, 16);
  void* c = device->allocate(256, 256);
  EXPECT_EQ(c, a) << "first fit reuses the lowest free range";
  device->deallocate(c, 256, 256);
  device->deallocate(b, 1 << 20, 1 << 20);
  EXPECT_EQ(static_cast<SimulatedUpstream&>(*device).check_invariants(), "");
  const UpstreamStats s = device->stats();
  EXPECT_EQ(s.allocs, 3u);
  EXPECT_EQ(s.frees, 3u);
  EXPECT_DOUBLE_EQ(s.modelled_cost_ns, 3 * 1000.0 + 3 * 250.0);
  EXPECT_EQ(s.capacity, 1u << 30);
}

TEST(SimulatedUpstream, CapacityIsBytesNotAddressSpace) {
  auto device = make_upstream("simulated:capacity=80GiB");
  std::vector<void*> blocks;
  for (int i = 0; i < 80; ++i) {
    blocks.push_back(device->allocate(std::size_t{1} << 30, std::size_t{1} << 30));
    ASSERT_NE(blocks.back(), nullptr) << i;
  }
  EXPECT_EQ(device->allocate(1, 1), nullptr);
  device->deallocate(blocks[40], std::size_t{1} << 30, std::size_t{1} << 30);
  blocks[40] = device->allocate(std::size_t{1} << 30, std::size_t{1} << 30);
  EXPECT_NE(blocks[40], nullptr);
  for (void* p : blocks) device->deallocate(p, std::size_t{1} << 30, std::size_t{1} << 30);
  EXPECT_EQ(device->stats().bytes.current, 0u);
  EXPECT_EQ(device->stats().bytes.peak, 80ull << 30);
  EXPECT_EQ(static_cast<SimulatedUpstream&>(*device).check_invariants(), "");
}

}  // namespace
}  // namespace tiermark
