#include "allocators/buddy_allocator.h"
