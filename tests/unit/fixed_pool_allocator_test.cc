#include "allocators/fixed_pool_allocator.h"

#include <gtest/gtest.h>

#include "allocators/host_upstream.h"
#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"

namespace tiermark {
namespace {

template <class Memory>
struct FixedOn {
  Memory memory{make_options(std::string(Memory::kName), Memory::kName, Memory::option_specs())};
  FixedPoolAllocator pool{make_options("pool.fixed:block_size=4KiB,blocks_per_chunk=4", "pool.fixed",
                                       FixedPoolAllocator::option_specs()),
                          memory};
};

TEST(FixedPool, LifoReuseAndChunkGrowthOnBothMemories) {
  auto run = [](auto& fixture) {
    FixedPoolAllocator& pool = fixture.pool;
    void* a = pool.allocate(100, 16, 0);
    void* b = pool.allocate(4096, 4096, 0);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) - reinterpret_cast<std::uintptr_t>(a), 4096u) << "carved in order";
    pool.deallocate(a, 100, 16, 0);
    EXPECT_EQ(pool.allocate(50, 16, 0), a) << "the last freed block comes back first";
    std::vector<void*> more;
    for (int i = 0; i < 3; ++i) more.push_back(pool.allocate(1, 1, 0));  // 2 left in chunk 1, then chunk 2
    AllocatorStats s = pool.stats();
    EXPECT_EQ(s.reserved_bytes.current, 2u * 4 * 4096);
    EXPECT_EQ(s.upstream_allocs, 2u);
    EXPECT_EQ(s.allocated_bytes.current, 5u * 4096);
    EXPECT_EQ(s.requested_bytes.current, 50u + 4096 + 3);
    EXPECT_EQ(s.largest_free_block, 4096u);
    EXPECT_EQ(pool.check_invariants(), "");
    pool.deallocate(a, 50, 16, 0);
    pool.deallocate(b, 4096, 4096, 0);
    for (void* p : more) pool.deallocate(p, 1, 1, 0);
    EXPECT_EQ(pool.check_invariants(), "");
    pool.trim();
    EXPECT_EQ(pool.stats().reserved_bytes.current, 0u);
    EXPECT_EQ(pool.stats().upstream_frees, 2u);
    EXPECT_EQ(pool.check_invariants(), "");
  };
  FixedOn<HostUpstream> host;
  run(host);
  FixedOn<SimulatedUpstream> device;
  run(device);
}

TEST(FixedPool, OversizeAndOveralignedRequestsAreCountedFailures) {
  FixedOn<SimulatedUpstream> fixture;
  EXPECT_EQ(fixture.pool.allocate(4097, 16, 0), nullptr);
  EXPECT_EQ(fixture.pool.allocate(16, 8192, 0), nullptr);  // 4 KiB blocks are only 4 KiB aligned
  EXPECT_EQ(fixture.pool.stats().failed_requests, 2u);
  EXPECT_EQ(fixture.pool.stats().reserved_bytes.current, 0u);
}

TEST(FixedPool, TrimKeepsChunksWhileABlockIsLive) {
  FixedOn<SimulatedUpstream> fixture;
  void* p = fixture.pool.allocate(8, 8, 0);
  fixture.pool.trim();
  EXPECT_EQ(fixture.pool.stats().reserved_bytes.current, 4u * 4096);
  fixture.pool.deallocate(p, 8, 8, 0);
}

}  // namespace
}  // namespace tiermark
