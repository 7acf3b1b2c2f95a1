#include "workloads/trace_validator.h"

#include <bit>
#include <iterator>

namespace tiermark {

std::uint64_t TraceValidator::live_size(SlotId id) const {
  auto it = live_.find(id);
  return it == live_.end() ? 0 : it->second;
}

void TraceValidator::note_allocated(SlotId id) {
  // The common case: the next sequential id extends the interval the previous one did.
  if (last_interval_ != allocated_.end() && last_interval_->second + 1 == id && id != 0) {
    last_interval_->second = id;
    auto next = std::next(last_interval_);
    if (next != allocated_.end() && next->first == id + 1) {
      last_interval_->second = next->second;
      allocated_.erase(next);
    }
    return;
  }
  if (was_allocated(id)) return;
  auto next = allocated_.upper_bound(id);
  auto it = next;
  if (next != allocated_.begin() && std::prev(next)->second + 1 == id && id != 0) {
    it = std::prev(next);
    it->second = id;
  } else {
    it = allocated_.emplace_hint(next, id, id);
  }
  if (next != allocated_.end() && next->first == id + 1 && id != UINT64_MAX) {
    it->second = next->second;
    allocated_.erase(next);
  }
  last_interval_ = it;
}

bool TraceValidator::was_allocated(SlotId id) const {
  auto next = allocated_.upper_bound(id);
  return next != allocated_.begin() && std::prev(next)->second >= id;
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
      note_allocated(event.id);
      live_bytes_ += event.size;
      break;
    }
    case EventKind::kFree: {
      auto it = live_.find(event.id);
      if (it == live_.end()) {
        if (was_allocated(event.id)) return "double free of id " + id + " (it is no longer live)";
        return "free of id " + id + ", which was never allocated";
      }
      if (event.size != 0 && event.size != it->second) {
        return "free of id " + id + " says size " + std::to_string(event.size) + " but it was allocated with " +
               std::to_string(it->second);
      }
      live_bytes_ -= it->second;
      live_.erase(it);
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
