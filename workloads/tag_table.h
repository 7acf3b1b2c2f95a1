// TagTable: interned event tags (`layer3.attn.scores`, `adam.exp_avg`, `kv.req42`). Each distinct
// string is stored once and named by a small TagId; id 0 is the empty tag. Ids are handed out in
// first-intern order and never change, so a table only grows and ids stay valid while it lives.
#pragma once

#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

#include "workloads/trace_event.h"

namespace tiermark {

class TagTable {
 public:
  TagTable();
  TagTable(const TagTable&) = delete;
  TagTable& operator=(const TagTable&) = delete;

  TagId intern(std::string_view name);
  // The name of `tag`; `tag` must be below size().
  std::string_view name(TagId tag) const { return names_[tag]; }
  // The id of `name`, or size() when it was never interned.
  TagId find(std::string_view name) const;
  TagId size() const { return static_cast<TagId>(names_.size()); }

 private:
  std::deque<std::string> names_;  // a deque keeps the strings (and the views below) in place
  std::unordered_map<std::string_view, TagId> ids_;
};

}  // namespace tiermark
