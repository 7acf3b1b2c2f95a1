#include "allocators/registry.h"
#include "cuda/cuda_runtime.h"

#include <gtest/gtest.h>

#include "common/input_error.h"

namespace tiermark {
namespace {

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Registry, ListsEveryAllocatorInOrder) {
  std::vector<std::string> names;
  for (const ComponentInfo& info : allocator_catalog()) names.emplace_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"bump", "system", "buddy", "pool.fixed", "pool.sizeclass", "pool.coalescing",
                                             "caching.pytorch", "caching.bfc", "caching.vmm"}));
}

TEST(Registry, BuildsEveryAllocatorWithDefaultsOnASimulatedDevice) {
  auto device = make_upstream("simulated");
  for (const ComponentInfo& info : allocator_catalog()) {
    auto allocator = make_allocator(std::string(info.name), *device);
    EXPECT_EQ(allocator->name(), info.name);
    EXPECT_EQ(allocator->config().rfind(std::string(info.name), 0), 0u) << allocator->config();
    EXPECT_EQ(allocator->check_invariants(), "");
    EXPECT_EQ(&allocator->upstream(), device.get());
  }
}

TEST(Registry, ConfigIsCanonicalWithEveryDefault) {
  auto device = make_upstream("simulated:capacity=1GiB");
  EXPECT_EQ(device->config(), "simulated:capacity=1GiB,alloc_cost_ns=0,free_cost_ns=0");
  auto fixed = make_allocator("pool.fixed:blocks_per_chunk=4", *device);
  EXPECT_EQ(fixed->config(), "pool.fixed:block_size=1MiB,blocks_per_chunk=4");
}

TEST(Registry, BadSpecsGiveOneClearLine) {
  auto device = make_upstream("simulated");
  EXPECT_EQ(error_of([&] { make_allocator("bodyguard", *device); }),
            "unknown allocator 'bodyguard' (known: bump, system, buddy, pool.fixed, pool.sizeclass, pool.coalescing, caching.pytorch, caching.bfc, caching.vmm)");
  EXPECT_EQ(error_of([&] { make_allocator("pool.fixed:block=4", *device); }),
            "pool.fixed: unknown option 'block' (known: block_size, blocks_per_chunk)");
  EXPECT_EQ(error_of([&] { make_allocator("pool.fixed:block_size=huge", *device); }),
            "pool.fixed: option block_size='huge': expected a size such as 512, 64KiB or 80GiB");
  EXPECT_EQ(error_of([&] { make_allocator("pool.fixed:block_size=24", *device); }),
            "pool.fixed: option block_size='24': must be a positive multiple of 16");
  EXPECT_EQ(error_of([&] { make_allocator("bump:chunk=3MiB", *device); }),
            "bump: option chunk='3MiB': must be a power of two of at least 64KiB");
  EXPECT_EQ(error_of([&] { make_allocator("bump/fast", *device); }), "bump: has no presets, but '/fast' was given");
  EXPECT_EQ(error_of([&] { make_upstream("gpu"); }), "unknown memory source 'gpu' (known: host, simulated, cuda)");
  EXPECT_EQ(error_of([&] { make_upstream("simulated:capacity=0"); }), "simulated: option capacity='0': must be positive");
  EXPECT_EQ(error_of([&] { make_upstream("host:numa_node=4096"); }).rfind("host: option numa_node='4096': no such NUMA node", 0), 0u);
  EXPECT_EQ(error_of([&] { make_upstream("cuda:devcie=1"); }), "cuda: unknown option 'devcie' (known: device, async, capacity)");
}

// `cuda` over a real device: every allocator can sit on it. Without a device (this machine kind has
// the toolkit but no GPU), it refuses in one line that says so.
TEST(Registry, CudaUpstreamServesAnAllocatorOrSaysThereIsNoDevice) {
  if (!cuda::probe().unavailable.empty()) {
    const std::string error = error_of([&] { make_upstream("cuda"); });
    EXPECT_EQ(error.rfind("memory source 'cuda': no CUDA device", 0), 0u) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos);
    return;
  }
  auto device = make_upstream("cuda:capacity=64MiB");
  EXPECT_FALSE(device->touchable());
  auto allocator = make_allocator("caching.pytorch", *device);
  void* p = allocator->allocate(1 << 20, 256, 0);
  ASSERT_NE(p, nullptr);
  allocator->deallocate(p, 1 << 20, 256, 0);
  auto bump = make_allocator("bump", *device);
  EXPECT_EQ(bump->allocate(std::size_t{128} << 20, 256, 0), nullptr) << "capacity 64 MiB";
}

}  // namespace
}  // namespace tiermark
