// csv_trace_fuzzer: CsvTraceReader (workloads/csv_trace.h) on arbitrary bytes, through pump() and
// the TraceValidator as every trace that enters tiermark goes.
//
// Oracle: malformed input must end in InputError (caught: the correct outcome); any other exception,
// crash or sanitizer report surfaces. A trace that reads cleanly must also survive being written
// again: through CsvTraceWriter and through BinaryTraceWriter, each output read back must give the
// same metadata and the same events, tags compared by name (docs/trace-format.md promises that a
// CSV trace read and written again is unchanged, and `trace convert` relies on both writers).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "common/input_error.h"
#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/trace_recorder.h"

namespace {

using namespace tiermark;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "csv_trace_fuzzer: %s\n", what.c_str());
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
    CsvTraceReader reader(in, "fuzz.csv");
    pump(reader, trace);
  } catch (const InputError&) {
    return 0;  // bad input, rejected with a message: the correct outcome
  }
  check_round_trip<CsvTraceWriter, CsvTraceReader>(trace, "CSV");
  check_round_trip<BinaryTraceWriter, BinaryTraceReader>(trace, ".tmt");
  return 0;
}
