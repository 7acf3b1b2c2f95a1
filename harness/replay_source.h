// ReplaySource: what a replay reads, a generated workload or a trace file, and the one function that
// turns it into a FlatTrace. Shared by `tiermark replay`, `tiermark capacity` and the replay-child
// process of the system.* rows, which flattens the same source again in its own process.
#pragma once

#include <string>

#include "replay/flat_trace.h"

namespace tiermark {

struct ReplaySource {
  std::string workload;    // a workload spec, or empty
  std::string trace_file;  // a trace file, or empty (exactly one of the two is set)
  std::string format = "auto";  // the file's format name: auto, csv, tmt, rmm
  // Ops kept in memory at most; a longer trace is streamed (read again for every pass). 0: a quarter
  // of the memory available now, at 24 bytes per op.
  std::uint64_t max_ops_in_memory = 0;

  // "workload" or "trace", as the results' workloads[].source says.
  const char* kind() const { return workload.empty() ? "trace" : "workload"; }
};

// Generates or reads the source into a FlatTrace named by the spec or the file. Throws InputError
// for a bad spec, a missing or malformed file, or when both or neither of workload and trace_file are set.
FlatTrace load_flat_trace(const ReplaySource& source);

}  // namespace tiermark
