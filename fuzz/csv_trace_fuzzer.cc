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
#include "fuzz/trace_round_trip.h"
#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/trace_recorder.h"

namespace {

using namespace tiermark;

constexpr const char* kFuzzer = "csv_trace_fuzzer";

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
  fuzz::check_round_trip<CsvTraceWriter, CsvTraceReader>(kFuzzer, trace, "CSV");
  fuzz::check_round_trip<BinaryTraceWriter, BinaryTraceReader>(kFuzzer, trace, ".tmt");
  return 0;
}
