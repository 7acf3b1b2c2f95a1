// FlatTrace: a trace decoded once into what a replay loop needs and nothing else. Replay loops must
// add almost nothing to the allocator's own work (docs/replay.md measures it), so the trace is
// flattened before any timing: each alloc or free becomes a 24-byte ReplayOp whose `slot` is a dense
// index into a vector<void*> (trace ids of any value are remapped, and a freed id's slot is reused,
// so that vector is as long as the peak number of live blocks), and a free carries its allocation's
// size, alignment and stream, as the allocator contract asks. Phase markers are dropped; counters
// are kept on the side with the op index they precede.
//
// A trace too large to hold (more ops than the caller's budget) is *streamed*: the first pass keeps
// only its facts and O(live blocks) state, and every replay pass reads it again (`emit`), flattening
// it the same way into a bounded buffer of kStreamChunkOps ops at a time (for_each_chunk). Memory is
// then O(live blocks + the buffer + the counters), whatever the trace's length.
//
// Also here: the facts of the trace itself that every allocator is measured against (the lower
// bound and the op where it is reached, what is live there by tag, what is still live at the end)
// and the offline planner's input. Invariants: allocs + frees == ops.size(); every free's slot was
// filled by an earlier alloc with the same size, alignment and stream; leftovers hold one free per
// block the trace never frees; requested bytes after op peak_op == peak_requested_bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocators/offline_planner.h"
#include "workloads/trace_event.h"
#include "workloads/trace_metadata.h"
#include "workloads/trace_stream.h"

namespace tiermark {

enum class ReplayOpKind : std::uint8_t { kAlloc, kFree };

struct ReplayOp {
  std::uint64_t size;        // a free carries its allocation's size,
  std::uint32_t slot;        // index into the replay's vector<void*>
  StreamId stream;           // stream,
  TagId tag;                 // tag (of the allocation)
  std::uint16_t thread;      // the trace's thread, for multi-thread replays
  std::uint8_t align_log2;   // and alignment, 2^align_log2 (at most kMaxTraceAlignment = 2^30)
  ReplayOpKind kind;

  std::size_t alignment() const { return std::size_t{1} << align_log2; }
};
static_assert(sizeof(ReplayOp) == 24, "the replay loop streams ops: keep them small");

// A counter's new value, taking effect just before ops[op_index] (== ops.size(): after the last op).
struct CounterSample {
  std::uint64_t op_index;
  TagId tag;
  std::uint64_t value;
};

struct TagBytes {
  std::string tag;  // "" for untagged blocks
  std::uint64_t bytes = 0;
  std::uint64_t blocks = 0;
};

// Emits the whole trace into a sink, from its start (a file read again, a workload generated again).
using TraceEmitter = std::function<void(TraceSink&)>;

// Ops per buffer of a streamed trace: 24 MiB, large enough that the per-chunk clock reads and
// re-reading costs vanish in the throughput pass.
inline constexpr std::size_t kStreamChunkOps = std::size_t{1} << 20;

struct FlatTrace {
  std::string name;  // the workload spec or the file it came from
  TraceMetadata metadata;
  std::vector<std::string> tag_names;  // by TagId; [0] is ""
  std::vector<ReplayOp> ops;        // every op, in order; empty when the trace is streamed
  std::uint64_t events = 0;         // allocs + frees (== ops.size() unless streamed)
  TraceEmitter emit;                // set only when streamed: reads the trace again
  std::size_t chunk_ops = kStreamChunkOps;  // ops per buffer when streamed
  std::vector<ReplayOp> leftovers;  // a free for each block the trace never frees
  std::vector<CounterSample> counters;
  std::size_t slots = 0;   // peak number of live blocks
  std::size_t allocs = 0;
  std::size_t frees = 0;
  std::size_t threads = 0;  // 1 + the highest thread id
  std::uint64_t peak_requested_bytes = 0;  // the lower bound: the peak of live requested bytes
  std::uint64_t peak_op = 0;               // the op after which requested bytes first reach the peak
  std::uint64_t end_live_bytes = 0;

  // False only when the trace's metadata says `ends_empty=false` (inference weights, a server that
  // stops): blocks live at its end are then not leaks.
  bool meant_to_end_empty() const;
  bool streamed() const { return static_cast<bool>(emit); }
  // The id of counter `name`, or kNoTag when the trace has no such counter name.
  TagId counter_tag(std::string_view name) const;
};

// Decodes `source` (validated on the way: pump() runs the TraceValidator) into a FlatTrace. Throws
// InputError for an invalid trace, a thread id above 65535 or more than 2^32 live blocks.
FlatTrace flatten_trace(TraceSource& source);
// Generates workload `spec` straight into a FlatTrace (no intermediate event list).
FlatTrace flatten_workload(std::string_view spec);
// Flattens what `emit` emits, keeping the ops in memory while there are at most `max_ops_in_memory`
// of them; beyond that the trace is streamed (FlatTrace::emit = emit) in buffers of `chunk_ops`.
FlatTrace flatten_emitted(const TraceEmitter& emit, std::string name, std::uint64_t max_ops_in_memory,
                          std::size_t chunk_ops = kStreamChunkOps);

// Calls fn(ops, index of ops[0]) over every op in order: once for a trace in memory, once per
// buffer of at most chunk_ops ops for a streamed one (read again for each call of this
// function, chunk_ops at a time). fn returns false to stop early. Throws what reading the trace throws.
void for_each_chunk(const FlatTrace& trace, const std::function<bool(std::span<const ReplayOp>, std::uint64_t)>& fn);

// Live bytes by tag just after op `op_index`, largest first, at most `limit` tags.
std::vector<TagBytes> live_by_tag_after(const FlatTrace& trace, std::uint64_t op_index, std::size_t limit);
// The blocks the trace never frees, by tag, largest first, at most `limit` tags.
std::vector<TagBytes> leftovers_by_tag(const FlatTrace& trace, std::size_t limit);

// The offline planner's input: one buffer per alloc, in order, lifetimes as op indices; a block
// never freed lives to the last op. Needs the ops in memory: empty for a streamed trace.
std::vector<PlannedBuffer> planner_buffers(const FlatTrace& trace);

}  // namespace tiermark
