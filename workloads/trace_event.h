// TraceEvent: one step of an allocation trace. An allocation names a slot id; its free names the same
// id, never an address, so that any allocator can replay the trace. Phase markers (`forward`,
// `step2.optimizer`) and counters (`kv.token_bytes` = 1,048,576) ride in the same stream so that
// tools see them at the exact point where they happened.
//
// Invariants of a valid trace (checked by TraceValidator): an id is live from its alloc to its free;
// a free names a live id; an id is not allocated again while live; alloc sizes are in
// [1, kMaxTraceSize]; alignments are powers of two up to kMaxTraceAlignment.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/allocation_request.h"

namespace tiermark {

using SlotId = std::uint64_t;
using TagId = std::uint32_t;
using ThreadId = std::uint32_t;

// Tag 0 is the empty tag: an event that names no operator or tensor.
inline constexpr TagId kNoTag = 0;

// 64 PiB: larger than any memory a trace could describe, small enough that the live total of many
// such blocks cannot overflow 64 bits unnoticed (the validator also checks the sum).
inline constexpr std::uint64_t kMaxTraceSize = std::uint64_t{1} << 56;
// 1 GiB: the largest alignment any allocator here honours (huge pages).
inline constexpr std::uint64_t kMaxTraceAlignment = std::uint64_t{1} << 30;

enum class EventKind : std::uint8_t {
  kAlloc,    // id, size, alignment, stream, thread, tag
  kFree,     // id; size 0 when not given (the alloc's size is implied); stream, thread, tag optional
  kPhase,    // tag = phase name; no id, size, stream or thread
  kCounter,  // tag = counter name, size = its new value (may be 0)
};

std::string_view event_kind_name(EventKind kind);  // "alloc", "free", "phase", "counter"

struct TraceEvent {
  EventKind kind = EventKind::kAlloc;
  SlotId id = 0;
  std::uint64_t size = 0;  // kCounter: the value
  std::uint64_t alignment = kDefaultAlignment;
  StreamId stream = 0;
  ThreadId thread = 0;
  TagId tag = kNoTag;

  friend bool operator==(const TraceEvent&, const TraceEvent&) = default;
};

}  // namespace tiermark
