// rmm_log_fuzzer: RmmLogReader (workloads/rmm_log.h, RAPIDS RMM logging_resource_adaptor CSV logs) on
// arbitrary bytes, through pump() and the TraceValidator as `trace convert --from rmm` does.
//
// Oracle: a malformed log (no RMM header, an unknown action, a bad pointer or size, a free of a pointer
// that is not live) must end in InputError, caught as the correct outcome; any other exception, crash
// or sanitizer report surfaces. A log that imports cleanly must give the same trace after being
// written as `.tmt` and as CSV and read back (the two files `trace convert` writes).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "common/input_error.h"
#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/rmm_log.h"
#include "workloads/trace_recorder.h"

namespace {

using namespace tiermark;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "rmm_log_fuzzer: %s\n", what.c_str());
  std::abort();
}

// "" when `a` and `b` are the same trace (tags by name), else the first difference.
std::string difference(const TraceRecorder& a, const TraceRecorder& b) {
  if (a.metadata().items() != b.metadata().items()) return "metadata differs";
  if (a.events().size() != b.events().size()) {
    return "event count " + std::to_string(a.events().size()) + " != " + std::to_string(b.events().size());
  }
  for (std::size_t i = 0; i < a.events().size(); ++i) {
    TraceEvent x = a.events()[i];
    TraceEvent y = b.events()[i];
    if (a.tag(x) != b.tag(y)) return "event " + std::to_string(i) + ": tag '" + std::string(a.tag(x)) + "' != '" + std::string(b.tag(y)) + "'";
    x.tag = y.tag = 0;
    if (!(x == y)) return "event " + std::to_string(i) + " differs";
  }
  return "";
}

// Writes `trace` with writer W and reads it back with reader R; an InputError here is a writer bug.
template <class W, class R>
void check_round_trip(const TraceRecorder& trace, const char* format) {
  std::ostringstream out;
  {
    RecordedTraceSource source(trace);
    W writer(out);
    pump(source, writer);
  }
  TraceRecorder again;
  try {
    std::istringstream in(out.str());
    R reader(in, "rewritten");
    pump(reader, again);
  } catch (const InputError& e) {
    fail(std::string("a trace written as ") + format + " does not read back: " + e.what());
  }
  const std::string diff = difference(trace, again);
  if (!diff.empty()) fail(std::string("written as ") + format + " and read back: " + diff);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  TraceRecorder trace;
  try {
    std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
    RmmLogReader reader(in, "fuzz-rmm.csv");
    pump(reader, trace);
  } catch (const InputError&) {
    return 0;  // bad input, rejected with a message: the correct outcome
  }
  check_round_trip<BinaryTraceWriter, BinaryTraceReader>(trace, ".tmt");
  check_round_trip<CsvTraceWriter, CsvTraceReader>(trace, "CSV");
  return 0;
}
