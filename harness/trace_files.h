// Trace files by name: opening one for reading in whichever format it is in, and writing one in the
// format its extension names (`.csv` text, `.tmt` binary), atomically. The only place that maps file
// names to trace formats, so `trace gen`, `trace convert`, `trace stats` and replay agree.
#pragma once

#include <fstream>
#include <memory>
#include <string>
#include <string_view>

#include "harness/atomic_file.h"
#include "workloads/trace_stream.h"

namespace tiermark {

enum class TraceFormat { kAuto, kCsv, kBinary, kRmm };

// Throws InputError for an unknown name (known: auto, csv, tmt, rmm).
TraceFormat parse_trace_format(std::string_view name);

// An open trace file: the stream and the reader over it.
class TraceFile {
 public:
  // Opens `path`. kAuto picks the binary format by its magic number, an RMM log by its header line
  // and CSV otherwise. Throws InputError for a missing or unreadable file or a malformed header.
  explicit TraceFile(const std::string& path, TraceFormat format = TraceFormat::kAuto);
  TraceSource& source() { return *source_; }
  TraceFormat format() const { return format_; }

 private:
  std::ifstream in_;
  TraceFormat format_;
  std::unique_ptr<TraceSource> source_;
};

// A sink that writes a trace file in the format of `path`'s extension, committed at end().
class TraceFileWriter final : public TraceSink {
 public:
  // Throws InputError for an extension other than .csv or .tmt, or an uncreatable file.
  explicit TraceFileWriter(const std::string& path);
  ~TraceFileWriter() override;

  void begin(const TraceMetadata& metadata, const TagTable& tags) override { writer_->begin(metadata, tags); }
  void event(const TraceEvent& event) override { writer_->event(event); }
  void end() override;

  const std::string& path() const { return file_.path(); }
  std::uint64_t bytes_written() const { return bytes_; }

 private:
  AtomicFile file_;
  std::unique_ptr<TraceSink> writer_;
  std::uint64_t bytes_ = 0;
};

}  // namespace tiermark
