#include "allocators/coalescing_pool_allocator.h"
