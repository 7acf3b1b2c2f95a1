#include "workloads/trace_event.h"

namespace tiermark {

std::string_view event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::kAlloc: return "alloc";
    case EventKind::kFree: return "free";
    case EventKind::kPhase: return "phase";
    case EventKind::kCounter: return "counter";
  }
  return "unknown";
}

}  // namespace tiermark
