// TraceRecorder: a sink that keeps a whole trace in memory (metadata, tag names, events), for tests,
// the statistics of small traces and, later, replay. Tag ids in events() index tag_names(); the
// names are copied at end(), so the recorder outlives the source that produced it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "workloads/trace_stream.h"

namespace tiermark {

class TraceRecorder final : public TraceSink {
 public:
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

}  // namespace tiermark
