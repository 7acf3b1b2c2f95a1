// The two ends of a trace pipeline. A TraceSource produces events (a file reader, an importer); a
// TraceSink consumes them (a file writer, the statistics, later the replay engine). Generators
// push into a sink; readers are pulled. pump() joins a source to a sink through the validator, so
// every trace that enters tiermark is checked once, with the position of the first bad event.
//
// Protocol: begin() once, then event() for each event, then end(). Events' tag ids index the
// TagTable given to begin(), which may grow between events but never changes an existing id.
#pragma once

#include <cstdint>
#include <string>

#include "workloads/tag_table.h"
#include "workloads/trace_event.h"
#include "workloads/trace_metadata.h"

namespace tiermark {

class TraceSink {
 public:
  virtual ~TraceSink() = default;
  virtual void begin(const TraceMetadata& metadata, const TagTable& tags) = 0;
  virtual void event(const TraceEvent& event) = 0;
  virtual void end() = 0;
};

class TraceSource {
 public:
  virtual ~TraceSource() = default;
  // Available from construction: readers parse their header before the first event.
  virtual const TraceMetadata& metadata() const = 0;
  virtual const TagTable& tags() const = 0;
  // The next event, or false at the end. Throws InputError naming position() on malformed input.
  virtual bool next(TraceEvent& event) = 0;
  // Where the event just returned came from, for messages: "line 17", "byte 4096".
  virtual std::string position() const = 0;
  // The file or stream name used in messages.
  virtual const std::string& source_name() const = 0;
};

// Reads every event of `source`, validates it and passes it to `sink`. Throws InputError
// "<source>: <position>: <problem>" at the first invalid event. Returns the number of events.
std::uint64_t pump(TraceSource& source, TraceSink& sink);

// Forwards every call to two sinks (for example a file writer and the statistics).
class TeeSink final : public TraceSink {
 public:
  TeeSink(TraceSink& first, TraceSink& second) : first_(first), second_(second) {}
  void begin(const TraceMetadata& metadata, const TagTable& tags) override {
    first_.begin(metadata, tags);
    second_.begin(metadata, tags);
  }
  void event(const TraceEvent& event) override {
    first_.event(event);
    second_.event(event);
  }
  void end() override {
    first_.end();
    second_.end();
  }

 private:
  TraceSink& first_;
  TraceSink& second_;
};

}  // namespace tiermark
