// The CSV trace format (docs/trace-format.md): `#meta key=value` lines, then a header whose first
// three columns are `op,id,size`, optionally followed by `align`, `stream`, `thread` and `tag` in any
// order, then one event per line. Text fields may be quoted as RFC 4180 says ("a,b" and "" for ").
// Other lines starting with `#` are comments; empty lines are skipped.
#pragma once

#include <array>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include "workloads/trace_stream.h"

namespace tiermark {

// Reads a CSV trace from `in`, one line at a time. The constructor reads the metadata and header and
// throws InputError "<name>: line N: <problem>" for a bad one; next() does the same for a bad row.
class CsvTraceReader final : public TraceSource {
 public:
  CsvTraceReader(std::istream& in, std::string name);

  const TraceMetadata& metadata() const override { return metadata_; }
  const TagTable& tags() const override { return tags_; }
  bool next(TraceEvent& event) override;
  std::string position() const override { return "line " + std::to_string(line_number_); }
  const std::string& source_name() const override { return name_; }

 private:
  enum Column : int { kOp, kId, kSize, kAlign, kStream, kThread, kTag, kColumnCount };

  bool read_line();  // the next line that is not empty or a comment; false at the end
  [[noreturn]] void fail(const std::string& problem) const;
  void parse_header();

  std::istream& in_;
  std::string name_;
  TraceMetadata metadata_;
  TagTable tags_;
  std::string line_;
  std::vector<std::string> fields_;  // the current row's fields, kept to reuse their storage
  std::uint64_t line_number_ = 0;
  std::array<int, kColumnCount> column_of_{};  // file column index per Column, -1 when absent
  int columns_ = 0;
};

// Writes events as CSV with every column; defaults (alignment 16, stream 0, thread 0, no tag, a
// free's implied size) are written as empty fields, so a file read and written again is unchanged.
class CsvTraceWriter final : public TraceSink {
 public:
  explicit CsvTraceWriter(std::ostream& out) : out_(out) {}
  void begin(const TraceMetadata& metadata, const TagTable& tags) override;
  void event(const TraceEvent& event) override;
  void end() override;

 private:
  std::ostream& out_;
  const TagTable* tags_ = nullptr;
  std::string row_;
};

}  // namespace tiermark
