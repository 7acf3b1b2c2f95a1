// Reader for RAPIDS RMM `logging_resource_adaptor` CSV logs (header `Thread,Time,Action,Pointer,
// Size,Stream`; actions `allocate`, `allocate failure`, and `free` or, in newer RMM, `deallocate`).
// It turns the log into a trace: each allocation gets a fresh slot id, a free names the id live at
// its pointer, RMM's thread ids and stream pointers become small integers in order of first
// appearance (the null stream stays 0), and a failed allocation becomes a `rmm.allocate_failure`
// counter holding its size (the real run got no block, so a replay must not hold one either).
#pragma once

#include <istream>
#include <string>
#include <unordered_map>

#include "workloads/trace_stream.h"

namespace tiermark {

class RmmLogReader final : public TraceSource {
 public:
  // Reads the header; throws InputError "<name>: line 1: ..." when it is not an RMM log header.
  RmmLogReader(std::istream& in, std::string name);

  const TraceMetadata& metadata() const override { return metadata_; }
  const TagTable& tags() const override { return tags_; }
  bool next(TraceEvent& event) override;
  std::string position() const override { return "line " + std::to_string(line_number_); }
  const std::string& source_name() const override { return name_; }

 private:
  enum Column : int { kThread, kAction, kPointer, kSize, kStream, kColumnCount };
  [[noreturn]] void fail(const std::string& problem) const;

  std::istream& in_;
  std::string name_;
  TraceMetadata metadata_;
  TagTable tags_;
  TagId failure_tag_ = kNoTag;
  std::string line_;
  std::uint64_t line_number_ = 0;
  int columns_ = 0;
  int column_of_[kColumnCount] = {-1, -1, -1, -1, -1};
  std::unordered_map<std::uint64_t, SlotId> live_;  // pointer -> slot id
  std::unordered_map<std::string, ThreadId> threads_;
  std::unordered_map<std::uint64_t, StreamId> streams_;
  SlotId next_id_ = 0;
};

}  // namespace tiermark
