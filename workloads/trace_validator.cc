#include "workloads/trace_validator.h"

#include <bit>

namespace tiermark {

std::uint64_t TraceValidator::live_size(SlotId id) const {
  auto it = live_.find(id);
  return it == live_.end() ? 0 : it->second;
}

std::string TraceValidator::check(const TraceEvent& event, TagId tag_count) {
  if (event.tag >= tag_count) return "tag " + std::to_string(event.tag) + " is not in the tag table";
  const std::string id = std::to_string(event.id);
  switch (event.kind) {
    case EventKind::kAlloc: {
      if (event.size == 0) return "alloc of id " + id + " has size 0";
      if (event.size > kMaxTraceSize) {
        return "alloc of id " + id + " has size " + std::to_string(event.size) + ", above the largest accepted (2^56)";
      }
      if (!std::has_single_bit(event.alignment) || event.alignment > kMaxTraceAlignment) {
        return "alloc of id " + id + " has alignment " + std::to_string(event.alignment) +
               ", not a power of two up to 1GiB";
      }
      if (live_.contains(event.id)) return "id " + id + " is allocated again while live";
      if (live_bytes_ + event.size < live_bytes_) return "live bytes overflow 64 bits at id " + id;
      live_.emplace(event.id, event.size);
      freed_.erase(event.id);
      live_bytes_ += event.size;
      break;
    }
    case EventKind::kFree: {
      auto it = live_.find(event.id);
      if (it == live_.end()) {
        auto freed = freed_.find(event.id);
        if (freed != freed_.end()) {
          return "double free of id " + id + " (already freed by event " + std::to_string(freed->second + 1) + ")";
        }
        return "free of id " + id + ", which was never allocated";
      }
      if (event.size != 0 && event.size != it->second) {
        return "free of id " + id + " says size " + std::to_string(event.size) + " but it was allocated with " +
               std::to_string(it->second);
      }
      live_bytes_ -= it->second;
      live_.erase(it);
      freed_.emplace(event.id, events_);
      break;
    }
    case EventKind::kPhase:
      if (event.tag == kNoTag) return "phase marker without a name";
      break;
    case EventKind::kCounter:
      if (event.tag == kNoTag) return "counter without a name";
      break;
  }
  ++events_;
  return {};
}

}  // namespace tiermark
