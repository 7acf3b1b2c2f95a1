#include "harness/replay_source.h"

#include "common/input_error.h"
#include "harness/trace_files.h"

namespace tiermark {

FlatTrace load_flat_trace(const ReplaySource& source) {
  if (source.workload.empty() == source.trace_file.empty()) {
    throw InputError("give exactly one of --workload SPEC or --trace FILE");
  }
  if (!source.workload.empty()) return flatten_workload(source.workload);
  TraceFile file(source.trace_file, parse_trace_format(source.format));
  FlatTrace trace = flatten_trace(file.source());
  trace.name = source.trace_file;
  return trace;
}

}  // namespace tiermark
