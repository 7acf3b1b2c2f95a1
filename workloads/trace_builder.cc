#include "workloads/trace_builder.h"

#include <stdexcept>

namespace tiermark {

void TraceBuilder::set_metadata(std::string_view key, std::string_view value) {
  if (begun_) throw std::logic_error("trace metadata '" + std::string(key) + "' set after the first event");
  metadata_.set(key, value);
}

void TraceBuilder::emit(const TraceEvent& event) {
  if (!begun_) {
    sink_.begin(metadata_, tags_);
    begun_ = true;
  }
  sink_.event(event);
  ++events_;
}

SlotId TraceBuilder::allocate(std::uint64_t size, TagId tag) {
  const SlotId id = next_id_++;
  emit({EventKind::kAlloc, id, size, alignment_, stream_, thread_, tag});
  return id;
}

void TraceBuilder::deallocate(SlotId id) { emit({EventKind::kFree, id, 0, kDefaultAlignment, stream_, thread_, kNoTag}); }

void TraceBuilder::phase(std::string_view name) {
  emit({EventKind::kPhase, 0, 0, kDefaultAlignment, 0, 0, tags_.intern(name)});
}

void TraceBuilder::counter(TagId name, std::uint64_t value) {
  emit({EventKind::kCounter, 0, value, kDefaultAlignment, 0, 0, name});
}

void TraceBuilder::finish() {
  if (!begun_) {
    sink_.begin(metadata_, tags_);
    begun_ = true;
  }
  sink_.end();
}

}  // namespace tiermark
