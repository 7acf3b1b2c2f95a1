// Spill conversion: turns the raw records of one captured process (chunks of a spill file, each
// ascending in seq) into a tiermark trace. A k-way merge restores the global call order, reading
// each chunk through a small window, so memory is bounded by the chunks open at one point of the
// order (about one per thread that was recording then), never by the spill's length.
//
// Address-to-id rules, applied in seq order: every allocation gets the next slot id; a free names
// the id live at its address; free(NULL) and frees of addresses never seen (allocated before the
// library loaded, or inside the runtime while recording was off) are skipped and counted. An
// allocation at an address that is still live means its free was not recorded: a free of the old
// id (tag `capture.missed_free`) is inserted first, so the trace stays valid. Blocks live at the end
// stay live. Threads are numbered 0, 1, 2... in order of their first event in the trace.
#pragma once

#include <cstdint>
#include <vector>

#include "capture/capture_record.h"
#include "workloads/trace_metadata.h"
#include "workloads/trace_stream.h"

namespace tiermark::capture {

struct ConversionSummary {
  std::uint64_t records = 0;          // raw records read from the spill
  std::uint64_t events = 0;           // trace events written
  std::uint64_t allocs = 0;
  std::uint64_t frees = 0;            // including the inserted ones
  std::uint64_t unmatched_frees = 0;  // frees of an address with no live block
  std::uint64_t null_frees = 0;       // free(NULL), delete of a null pointer
  std::uint64_t missed_frees = 0;     // frees inserted before an allocation at a live address
  std::uint64_t live_blocks = 0;      // at the end of the trace
  std::uint64_t live_bytes = 0;
  std::uint64_t threads = 0;          // distinct threads in the trace
};

// The tag of the inserted frees.
inline constexpr std::string_view kMissedFreeTag = "capture.missed_free";

// Reads `chunks` of the spill file open as `fd` (twice: once to count, once to write), and writes
// the trace to `sink`: `metadata`, plus `capture.*` counts and `ends_empty`, then the events. Throws
// std::runtime_error when the spill cannot be read.
ConversionSummary convert_spill(int fd, std::vector<SpillChunk> chunks, TraceMetadata metadata, TraceSink& sink);

}  // namespace tiermark::capture
