#include "allocators/system_allocator.h"

#include <gtest/gtest.h>

#include "allocators/registry.h"

namespace tiermark {
namespace {

TEST(SystemAllocator, MeasuresUsableSizeAndReportsReservedAsUnknown) {
  auto host = make_upstream("host");
  SystemAllocator system(make_options("system", "system", SystemAllocator::option_specs()), *host);
  void* p = system.allocate(100, 16, 0);
  ASSERT_NE(p, nullptr);
  const AllocatorStats s = system.stats();
  EXPECT_EQ(s.requested_bytes.current, 100u);
  EXPECT_EQ(s.allocated_bytes.current, malloc_usable_size(p));
  EXPECT_GE(s.allocated_bytes.current, 100u);
  EXPECT_FALSE(s.reserved_known);
  EXPECT_EQ(s.reserved_bytes.current, 0u);
  void* aligned = system.allocate(10, 4096, 0);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(aligned) % 4096, 0u);
  system.deallocate(aligned, 10, 4096, 0);
  system.deallocate(p, 100, 16, 0);
  EXPECT_EQ(system.stats().allocated_bytes.current, 0u);
  EXPECT_EQ(system.check_invariants(), "");
  EXPECT_EQ(host->stats().allocs, 0u) << "the C library does not use tiermark's upstream";
}

TEST(SystemAllocator, NamesTheMallocInUse) {
  // This test binary runs without LD_PRELOAD, so glibc serves it; tools/suite.sh checks the others.
  EXPECT_EQ(active_malloc_name(), "glibc");
}

}  // namespace
}  // namespace tiermark
