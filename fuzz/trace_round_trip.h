// The trace readers' shared oracle: a trace that reads cleanly must survive being written again.
// check_round_trip<W, R> writes it with writer W, reads it back with reader R, and aborts (a finding)
// when the output does not read back or differs: metadata, events, tags compared by name
// (docs/trace-format.md promises that a trace read and written again is unchanged, and `trace
// convert` relies on both writers).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "common/input_error.h"
#include "workloads/trace_recorder.h"

namespace tiermark::fuzz {

// Prints "<fuzzer>: <what>" and aborts, which libFuzzer reports as a crash with the input kept.
[[noreturn]] inline void fail(const char* fuzzer, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", fuzzer, what.c_str());
  std::abort();
}

// "" when `a` and `b` are the same trace (tags by name), else the first difference.
inline std::string difference(const TraceRecorder& a, const TraceRecorder& b) {
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
void check_round_trip(const char* fuzzer, const TraceRecorder& trace, const char* format) {
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
    fail(fuzzer, std::string("a trace written as ") + format + " does not read back: " + e.what());
  }
  const std::string diff = difference(trace, again);
  if (!diff.empty()) fail(fuzzer, std::string("written as ") + format + " and read back: " + diff);
}

}  // namespace tiermark::fuzz
