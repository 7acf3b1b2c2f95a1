// TraceBuilder: the generator-facing way to write a trace. A generator allocates and frees named
// tensors; the builder hands out sequential slot ids, interns tags, carries the current stream,
// thread and alignment, and forwards events to a sink. Metadata may be added until the first event
// (the sink's begin() is called then, or at finish() for an empty trace).
#pragma once

#include <cstdint>
#include <string_view>

#include "workloads/tag_table.h"
#include "workloads/trace_metadata.h"
#include "workloads/trace_stream.h"

namespace tiermark {

class TraceBuilder {
 public:
  explicit TraceBuilder(TraceSink& sink) : sink_(sink) {}
  TraceBuilder(const TraceBuilder&) = delete;
  TraceBuilder& operator=(const TraceBuilder&) = delete;

  // Throws std::logic_error once events have been written.
  void set_metadata(std::string_view key, std::string_view value);

  TagId tag(std::string_view name) { return tags_.intern(name); }
  void set_stream(StreamId stream) { stream_ = stream; }
  void set_thread(ThreadId thread) { thread_ = thread; }
  void set_alignment(std::uint64_t alignment) { alignment_ = alignment; }

  SlotId allocate(std::uint64_t size, TagId tag);
  void deallocate(SlotId id);
  void phase(std::string_view name);
  void counter(TagId name, std::uint64_t value);
  // Ends the trace (calls begin() first if no event was written).
  void finish();

  std::uint64_t events() const { return events_; }

 private:
  void emit(const TraceEvent& event);

  TraceSink& sink_;
  TraceMetadata metadata_;
  TagTable tags_;
  bool begun_ = false;
  SlotId next_id_ = 0;
  StreamId stream_ = 0;
  ThreadId thread_ = 0;
  std::uint64_t alignment_ = kDefaultAlignment;
  std::uint64_t events_ = 0;
};

}  // namespace tiermark
