// The vocabulary an allocation request shares between allocators and traces: the stream it is
// ordered on and the alignment it gets when nobody names one. Defined here, below both layers, so
// that a trace event and an allocator agree without either including the other.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tiermark {

// A device stream (CUDA stream, queue): caching allocators never share a free block across streams.
using StreamId = std::uint32_t;

// The alignment a request gets when a trace or caller names none: what malloc guarantees on x86-64
// (alignof(max_align_t) = 16).
inline constexpr std::size_t kDefaultAlignment = 16;

}  // namespace tiermark
