// AllAllocatorTypes: the one list of tiermark's allocator implementations. Adding an allocator means
// writing its class (see allocator.h for the AllocatorImpl contract) and naming it here.
#pragma once

#include <type_traits>

#include "allocators/broken_overlap_allocator.h"
#include "allocators/buddy_allocator.h"
#include "allocators/bump_allocator.h"
#include "allocators/caching_bfc_allocator.h"
#include "allocators/caching_pytorch_allocator.h"
#include "allocators/caching_vmm_allocator.h"
#include "allocators/coalescing_pool_allocator.h"
#include "allocators/fixed_pool_allocator.h"
#include "allocators/size_class_pool_allocator.h"
#include "allocators/system_allocator.h"

namespace tiermark {

template <AllocatorImpl... Ts>
struct AllocatorTypeList {
  // Calls f(std::type_identity<T>{}) for each type, in order.
  template <class F>
  static void for_each(F&& f) {
    (f(std::type_identity<Ts>{}), ...);
  }
};

using AllAllocatorTypes = AllocatorTypeList<BumpAllocator, SystemAllocator, BuddyAllocator, FixedPoolAllocator,
                                            SizeClassPoolAllocator, CoalescingPoolAllocator, CachingPytorchAllocator,
                                            CachingBfcAllocator, CachingVmmAllocator>;

// Allocators built for tests of tiermark itself (broken.overlap, a planted fault for stress --verify).
// The registry builds them by name, but they are kept out of AllAllocatorTypes so that no benchmark,
// conformance run, replay or `--allocator all` ever takes them for real allocators.
using TestAllocatorTypes = AllocatorTypeList<BrokenOverlapAllocator>;

}  // namespace tiermark
