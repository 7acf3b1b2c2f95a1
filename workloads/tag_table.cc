#include "workloads/tag_table.h"

namespace tiermark {

TagTable::TagTable() { intern(""); }

TagId TagTable::intern(std::string_view name) {
  if (auto it = ids_.find(name); it != ids_.end()) return it->second;
  const auto id = static_cast<TagId>(names_.size());
  names_.emplace_back(name);
  ids_.emplace(names_.back(), id);
  return id;
}

TagId TagTable::find(std::string_view name) const {
  auto it = ids_.find(name);
  return it == ids_.end() ? size() : it->second;
}

}  // namespace tiermark
