#include "allocators/bump_allocator.h"

#include <gtest/gtest.h>

#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"

namespace tiermark {
namespace {

struct BumpFixture : ::testing::Test {
  SimulatedUpstream device{make_options("simulated:capacity=1GiB", "simulated", SimulatedUpstream::option_specs())};
  BumpAllocator bump{make_options("bump:chunk=64KiB", "bump", BumpAllocator::option_specs()), device};
};

TEST_F(BumpFixture, BumpsThroughAChunkAndNeverReuses) {
  void* a = bump.allocate(100, 16, 0);  // block 112 (100 rounded to 16)
  void* b = bump.allocate(16, 16, 0);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) - reinterpret_cast<std::uintptr_t>(a), 112u);
  bump.deallocate(b, 16, 16, 0);
  void* c = bump.allocate(16, 16, 0);
  EXPECT_NE(c, b) << "bump never reuses a freed block";
  AllocatorStats s = bump.stats();
  EXPECT_EQ(s.reserved_bytes.current, 64u << 10);
  EXPECT_EQ(s.allocated_bytes.current, 112u + 16u);
  EXPECT_EQ(s.largest_free_block, (64u << 10) - 112 - 16 - 16);  // the tail of the chunk
  EXPECT_EQ(bump.check_invariants(), "");
  bump.deallocate(a, 100, 16, 0);
  bump.deallocate(c, 16, 16, 0);
}

TEST_F(BumpFixture, AlignmentPadsTheCursor) {
  void* a = bump.allocate(16, 16, 0);
  void* b = bump.allocate(16, 4096, 0);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) % 4096, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) - reinterpret_cast<std::uintptr_t>(a), 4096u);  // chunks are 64 KiB aligned
  EXPECT_EQ(bump.stats().allocated_bytes.current, 32u) << "padding is free space, not allocated bytes";
  bump.deallocate(a, 16, 16, 0);
  bump.deallocate(b, 16, 4096, 0);
}

TEST_F(BumpFixture, AnEmptiedOldChunkGoesBackUpstream) {
  std::vector<void*> first_chunk;
  for (int i = 0; i < 4; ++i) first_chunk.push_back(bump.allocate(16 << 10, 16, 0));  // fills chunk 1 exactly
  void* next = bump.allocate(16, 16, 0);                                                // opens chunk 2
  EXPECT_EQ(bump.stats().reserved_bytes.current, 128u << 10);
  for (void* p : first_chunk) bump.deallocate(p, 16 << 10, 16, 0);
  EXPECT_EQ(bump.stats().reserved_bytes.current, 64u << 10) << "chunk 1 is empty and the cursor has left it";
  EXPECT_EQ(bump.stats().upstream_frees, 1u);
  EXPECT_EQ(bump.check_invariants(), "");
  bump.deallocate(next, 16, 16, 0);
  EXPECT_EQ(bump.stats().reserved_bytes.current, 64u << 10) << "the current chunk stays";
}

TEST_F(BumpFixture, OversizeRequestsGetADedicatedChunkReleasedOnFree) {
  void* small = bump.allocate(16, 16, 0);
  void* big = bump.allocate(100 << 10, 16, 0);  // > 64 KiB: a dedicated 128 KiB chunk (next multiple of 64 KiB)
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(bump.stats().reserved_bytes.current, (64u + 128u) << 10);
  void* after = bump.allocate(16, 16, 0);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(after) - reinterpret_cast<std::uintptr_t>(small), 16u) << "cursor unmoved";
  bump.deallocate(big, 100 << 10, 16, 0);
  EXPECT_EQ(bump.stats().reserved_bytes.current, 64u << 10);
  EXPECT_EQ(bump.check_invariants(), "");
  bump.deallocate(small, 16, 16, 0);
  bump.deallocate(after, 16, 16, 0);
}

TEST_F(BumpFixture, ImpossibleRequestsFailCleanly) {
  EXPECT_EQ(bump.allocate(~std::size_t{0} - 4, 16, 0), nullptr);   // would overflow the rounding
  EXPECT_EQ(bump.allocate(16, std::size_t{1} << 20, 0), nullptr);  // alignment above the chunk size
  EXPECT_EQ(bump.stats().failed_requests, 2u);
  EXPECT_EQ(bump.check_invariants(), "");
}

}  // namespace
}  // namespace tiermark
