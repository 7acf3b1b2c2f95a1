// TraceRecorder: a sink that keeps a whole trace in memory (metadata, tag names, events), for tests,
// benchmarks of the formats and, later, replay; RecordedTraceSource plays one back as a source. Tag
// ids in events() index tag_names(); the names are copied at end(), so the recorder outlives the
// source that produced it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "workloads/trace_stream.h"

namespace tiermark {

class TraceRecorder final : public TraceSink {
 public:
  TraceRecorder() = default;
  // A trace made by hand: tag_names[0] must be "" (kNoTag); events' tags index tag_names.
  TraceRecorder(TraceMetadata metadata, std::vector<std::string> tag_names, std::vector<TraceEvent> events)
      : metadata_(std::move(metadata)), events_(std::move(events)), tag_names_(std::move(tag_names)) {}

  void begin(const TraceMetadata& metadata, const TagTable& tags) override {
    metadata_ = metadata;
    tags_ = &tags;
    events_.clear();
  }
  void event(const TraceEvent& event) override { events_.push_back(event); }
  void end() override {
    tag_names_.clear();
    for (TagId tag = 0; tag < tags_->size(); ++tag) tag_names_.emplace_back(tags_->name(tag));
    tags_ = nullptr;
  }

  const TraceMetadata& metadata() const { return metadata_; }
  const std::vector<TraceEvent>& events() const { return events_; }
  const std::vector<std::string>& tag_names() const { return tag_names_; }
  std::string_view tag(const TraceEvent& event) const { return tag_names_.at(event.tag); }

 private:
  TraceMetadata metadata_;
  const TagTable* tags_ = nullptr;
  std::vector<TraceEvent> events_;
  std::vector<std::string> tag_names_;
};

// Plays a recorded trace back: the tag table is rebuilt from the names, so tag ids are unchanged.
class RecordedTraceSource final : public TraceSource {
 public:
  explicit RecordedTraceSource(const TraceRecorder& trace, std::string name = "recorded trace")
      : trace_(trace), name_(std::move(name)) {
    for (std::size_t i = 1; i < trace.tag_names().size(); ++i) tags_.intern(trace.tag_names()[i]);
  }
  const TraceMetadata& metadata() const override { return trace_.metadata(); }
  const TagTable& tags() const override { return tags_; }
  bool next(TraceEvent& event) override {
    if (index_ == trace_.events().size()) return false;
    event = trace_.events()[index_++];
    return true;
  }
  std::string position() const override { return "event " + std::to_string(index_); }
  const std::string& source_name() const override { return name_; }

 private:
  const TraceRecorder& trace_;
  std::string name_;
  TagTable tags_;
  std::size_t index_ = 0;
};

}  // namespace tiermark
