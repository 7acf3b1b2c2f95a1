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
#include "fuzz/trace_round_trip.h"
#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/rmm_log.h"
#include "workloads/trace_recorder.h"

namespace {

using namespace tiermark;

constexpr const char* kFuzzer = "rmm_log_fuzzer";

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
  fuzz::check_round_trip<BinaryTraceWriter, BinaryTraceReader>(kFuzzer, trace, ".tmt");
  fuzz::check_round_trip<CsvTraceWriter, CsvTraceReader>(kFuzzer, trace, "CSV");
  return 0;
}
