// CaptureRecord: one intercepted allocator call as the recorder stores it before conversion, in a
// per-thread buffer and then in the spill file: 32 raw bytes, the address itself rather than a slot
// id (ids are assigned only at conversion, when the whole order is known).
//
// Invariants: `seq` values are unique within a process and come from one atomic counter; within a
// spill chunk (one thread's flushed buffer, or the orphan buffer) they ascend. A free's seq is taken
// before the real free and an allocation's after the real allocation returned, so when an address
// is reused the free that released it always sorts first.
#pragma once

#include <cstdint>
#include <string_view>

namespace tiermark::capture {

enum class CallOp : std::uint8_t { kAlloc = 0, kFree = 1 };

// Which function made the call; it becomes the event's tag.
enum class CallKind : std::uint8_t {
  kMalloc,
  kCalloc,
  kRealloc,  // both halves of a realloc: the free of the old block and the alloc of the new one
  kPosixMemalign,
  kAlignedAlloc,
  kMemalign,
  kValloc,
  kPvalloc,
  kNew,       // every operator new: plain, nothrow, aligned (the alignment is in the record)
  kNewArray,  // every operator new[]
  kFree,
  kDelete,       // every operator delete: plain, sized, nothrow, aligned
  kDeleteArray,  // every operator delete[]
  kCount,
};

// The tag names; `new` and `new[]` as the C++ standard spells the operators.
inline constexpr std::string_view kCallKindNames[] = {
    "malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc",
    "pvalloc", "new",   "new[]",   "free",           "delete",        "delete[]",
};
static_assert(std::size(kCallKindNames) == static_cast<std::size_t>(CallKind::kCount));

inline std::string_view call_kind_name(CallKind kind) { return kCallKindNames[static_cast<std::size_t>(kind)]; }

struct CaptureRecord {
  std::uint64_t seq;
  std::uint64_t address;  // 0 for free(NULL) and delete of a null pointer
  std::uint64_t size;     // bytes requested (calloc: n * size); 0 for frees
  std::uint32_t thread;   // recorder's thread index, in order of each thread's first recorded call
  CallOp op;
  CallKind kind;
  std::uint8_t alignment_log2;  // 4 (16 bytes, malloc's guarantee) unless the call names one
  std::uint8_t unused;
};
static_assert(sizeof(CaptureRecord) == 32, "the spill layout and docs/capture.md assume 32-byte records");

// One run of records in the spill file, in ascending seq order.
struct SpillChunk {
  std::uint64_t offset;     // bytes from the start of the spill file
  std::uint64_t count;      // records
  std::uint64_t first_seq;  // seq of its first record, the key of the merge
};

}  // namespace tiermark::capture
