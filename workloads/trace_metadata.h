// TraceMetadata: the key=value facts a trace carries about itself, in the order they were set:
// which generator and canonical spec made it, the seed, its source file, and whatever a later tool
// needs to interpret it (`kv.bytes_per_token`, `ends_empty`). Keys are words with dots; values are
// one line of text. Well-known keys are listed in docs/trace-format.md.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tiermark {

class TraceMetadata {
 public:
  // Adds or replaces `key`. Throws InputError for an empty key, a key with characters other than
  // letters, digits, `.`, `_` and `-`, or a value holding a line break.
  void set(std::string_view key, std::string_view value);
  std::optional<std::string> get(std::string_view key) const;
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }
  bool empty() const { return items_.empty(); }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace tiermark
