// TraceValidator: checks the invariants of trace_event.h one event at a time, keeping only the live
// ids (with their sizes) and the set of ids ever allocated as merged intervals (one interval for the
// sequential ids generators and importers hand out), so a trace of any length is checked in memory
// proportional to its live blocks. Every trace that enters tiermark passes through it (pump()).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

#include "workloads/trace_event.h"

namespace tiermark {

class TraceValidator {
 public:
  // Checks `event` against the trace so far and records it. Returns an empty string when it is valid,
  // else one line naming the problem ("free of id 42, which was never allocated"); an invalid event
  // is not recorded. `tag_count` is the size of the trace's tag table.
  std::string check(const TraceEvent& event, TagId tag_count);

  std::uint64_t events() const { return events_; }
  std::uint64_t live_blocks() const { return live_.size(); }
  std::uint64_t live_bytes() const { return live_bytes_; }
  // The size of live block `id`; 0 when it is not live.
  std::uint64_t live_size(SlotId id) const;

 private:
  // Adds `id` to allocated_, merging with neighbouring intervals.
  void note_allocated(SlotId id);
  bool was_allocated(SlotId id) const;

  std::unordered_map<SlotId, std::uint64_t> live_;  // id -> size
  std::map<SlotId, SlotId> allocated_;              // [first, last] intervals of ids ever allocated
  std::map<SlotId, SlotId>::iterator last_interval_ = allocated_.end();
  std::uint64_t live_bytes_ = 0;
  std::uint64_t events_ = 0;
};

}  // namespace tiermark
