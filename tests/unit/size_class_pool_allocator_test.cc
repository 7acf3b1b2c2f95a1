#include "allocators/size_class_pool_allocator.h"

#include <gtest/gtest.h>

#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"

namespace tiermark {
namespace {

using SC = SizeClassPoolAllocator;

TEST(SizeClasses, FollowJemallocSpacing) {
  // 16, 32, 48, 64, then four classes per doubling.
  const std::uint64_t expected[] = {16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512};
  for (unsigned i = 0; i < std::size(expected); ++i) EXPECT_EQ(SC::class_size(i), expected[i]) << i;
  EXPECT_EQ(SC::class_index(1), 0u);
  EXPECT_EQ(SC::class_index(16), 0u);
  EXPECT_EQ(SC::class_index(17), 1u);
  EXPECT_EQ(SC::class_index(65), 4u);
  EXPECT_EQ(SC::class_index(129), 8u);
  // Every size maps to the smallest class that holds it, and rounding wastes less than 25%.
  for (std::uint64_t size = 1; size <= (1u << 20); size += (size < 4096 ? 1 : 97)) {
    const unsigned index = SC::class_index(size);
    ASSERT_GE(SC::class_size(index), size) << size;
    if (index > 0) {
      ASSERT_LT(SC::class_size(index - 1), size) << size;
    }
    if (size > 64) {
      ASSERT_LT(double(SC::class_size(index) - size) / double(size), 0.25) << size;
    }
  }
}

struct SizeClassFixture : ::testing::Test {
  SimulatedUpstream device{make_options("simulated:capacity=1GiB", "simulated", SimulatedUpstream::option_specs())};
  SC pool{make_options("pool.sizeclass:max_size=4KiB,chunk=64KiB", "pool.sizeclass", SC::option_specs()), device};
};

TEST_F(SizeClassFixture, RequestsGoToTheirClassAndLargeOnesUpstream) {
  void* a = pool.allocate(100, 16, 0);   // class 112: one chunk of 65536 / 112 = 585 blocks = 65520 bytes
  void* b = pool.allocate(5000, 16, 0);  // above max_size 4 KiB: 8 KiB straight from upstream
  AllocatorStats s = pool.stats();
  EXPECT_EQ(s.allocated_bytes.current, 112u + 8192u);
  EXPECT_EQ(s.reserved_bytes.current, 65520u + 8192u);
  EXPECT_EQ(s.upstream_allocs, 2u);
  EXPECT_EQ(s.largest_free_block, 112u) << "only class 112 has free blocks";
  EXPECT_EQ(pool.check_invariants(), "");
  pool.deallocate(b, 5000, 16, 0);
  EXPECT_EQ(pool.stats().reserved_bytes.current, 65520u);
  EXPECT_EQ(pool.stats().upstream_frees, 1u);
  pool.deallocate(a, 100, 16, 0);
  pool.trim();
  EXPECT_EQ(pool.stats().reserved_bytes.current, 0u);
  EXPECT_EQ(pool.check_invariants(), "");
}

TEST_F(SizeClassFixture, OveralignedRequestsTakeAClassThatIsAMultipleOfTheAlignment) {
  void* p = pool.allocate(100, 256, 0);  // 112 and 128 are not multiples of 256; 256 is
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 256, 0u);
  EXPECT_EQ(pool.stats().allocated_bytes.current, 256u);
  void* q = pool.allocate(3000, 4096, 0);  // classes 3072 and 3584 are not multiples of 4096: class 4096
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(q) % 4096, 0u);
  EXPECT_EQ(pool.stats().allocated_bytes.current, 256u + 4096u);
  pool.deallocate(p, 100, 256, 0);
  pool.deallocate(q, 3000, 4096, 0);
  EXPECT_EQ(pool.stats().allocated_bytes.current, 0u);
  EXPECT_EQ(pool.check_invariants(), "");
}

}  // namespace
}  // namespace tiermark
