#include "workloads/trace_metadata.h"

#include <algorithm>

#include "common/input_error.h"

namespace tiermark {
namespace {

bool is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

}  // namespace

void TraceMetadata::set(std::string_view key, std::string_view value) {
  if (key.empty() || !std::all_of(key.begin(), key.end(), is_key_char)) {
    throw InputError("metadata key '" + std::string(key) + "': expected letters, digits, '.', '_' or '-'");
  }
  if (value.find_first_of("\r\n") != std::string_view::npos) {
    throw InputError("metadata " + std::string(key) + ": the value holds a line break");
  }
  for (auto& [k, v] : items_) {
    if (k == key) {
      v = value;
      return;
    }
  }
  items_.emplace_back(key, value);
}

std::optional<std::string> TraceMetadata::get(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return v;
  }
  return std::nullopt;
}

}  // namespace tiermark
