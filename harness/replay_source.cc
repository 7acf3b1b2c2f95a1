#include "harness/replay_source.h"

#include "common/input_error.h"
#include "harness/proc_files.h"
#include "harness/trace_files.h"
#include "workloads/workload_generator.h"

namespace tiermark {

namespace {

std::uint64_t default_max_ops() {
  const std::optional<std::uint64_t> available = available_memory_bytes();
  if (!available) return std::uint64_t{1} << 24;  // 16 Mi ops (384 MiB) when unknown
  return *available / 4 / sizeof(ReplayOp);
}

}  // namespace

FlatTrace load_flat_trace(const ReplaySource& source) {
  if (source.workload.empty() == source.trace_file.empty()) {
    throw InputError("give exactly one of --workload SPEC or --trace FILE");
  }
  const std::uint64_t max_ops = source.max_ops_in_memory != 0 ? source.max_ops_in_memory : default_max_ops();
  if (!source.workload.empty()) {
    const std::string spec = source.workload;
    return flatten_emitted([spec](TraceSink& sink) { generate_workload(spec, sink); }, spec, max_ops);
  }
  const std::string path = source.trace_file;
  const TraceFormat format = parse_trace_format(source.format);
  // The file is opened once here, so that a missing or malformed file fails before any pass; each
  // later reading (streamed traces only) opens it again.
  return flatten_emitted(
      [path, format](TraceSink& sink) {
        TraceFile file(path, format);
        pump(file.source(), sink);
      },
      path, max_ops);
}

}  // namespace tiermark
