// binary_trace_fuzzer: BinaryTraceReader (workloads/binary_trace.h, the `.tmt` format) on arbitrary
// bytes, through pump() and the TraceValidator as every trace that enters tiermark goes.
//
// Oracle: malformed input (bad magic, version or flags, truncation, corrupt records, varints or tag
// definitions, a wrong event count or checksum) must end in InputError, caught as the correct outcome;
// any other exception, crash or sanitizer report surfaces. A file that reads cleanly must read the
// same after BinaryTraceWriter writes it again, and after CsvTraceWriter does (tags are one line:
// the reader refuses a line feed in one, docs/fuzzing.md finding 3).
//
// The end record's CRC-32 would stop almost every mutated file at the last bytes, before the round
// trip is reached; so each input is also tried with its last four bytes replaced by the CRC-32 of the
// bytes before them, which makes any mutation of a well-formed file with the right event count valid.
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

constexpr const char* kFuzzer = "binary_trace_fuzzer";

// CRC-32 (IEEE, as zlib), what the end record carries (docs/trace-format.md).
std::uint32_t crc32(const std::string& bytes) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (const char c : bytes) {
    crc ^= static_cast<std::uint8_t>(c);
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void check_file(const std::string& bytes) {
  TraceRecorder trace;
  try {
    std::istringstream in(bytes);
    BinaryTraceReader reader(in, "fuzz.tmt");
    pump(reader, trace);
  } catch (const InputError&) {
    return;  // bad input, rejected with a message: the correct outcome
  }
  fuzz::check_round_trip<BinaryTraceWriter, BinaryTraceReader>(kFuzzer, trace, ".tmt");
  fuzz::check_round_trip<CsvTraceWriter, CsvTraceReader>(kFuzzer, trace, "CSV");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  check_file(bytes);
  if (size > 4) {
    std::string fixed = bytes;
    const std::uint32_t crc = crc32(fixed.substr(0, size - 4));
    for (int i = 0; i < 4; ++i) fixed[size - 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xFF);
    if (fixed != bytes) check_file(fixed);
  }
  return 0;
}
