#include "common/spec.h"

#include <algorithm>

#include "common/input_error.h"

namespace tiermark {
namespace {

bool valid_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

}  // namespace

std::vector<std::string_view> split_top_level(std::string_view text) {
  std::vector<std::string_view> pieces;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '[') ++depth;
    if (text[i] == ']' && depth > 0) --depth;
    if (text[i] == ',' && depth == 0) {
      pieces.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  pieces.push_back(text.substr(start));
  return pieces;
}


Spec parse_spec(std::string_view text) {
  const std::string quoted = "'" + std::string(text) + "'";
  Spec spec;
  const std::size_t colon = text.find(':');
  std::string_view head = text.substr(0, colon);
  const std::size_t slash = head.find('/');
  spec.name = std::string(head.substr(0, slash));
  if (slash != std::string_view::npos) {
    spec.preset = std::string(head.substr(slash + 1));
    if (!valid_name(spec.preset)) throw InputError("spec " + quoted + ": empty or invalid preset after '/'");
  }
  if (!valid_name(spec.name)) {
    throw InputError("spec " + quoted + ": expected NAME[/PRESET][:key=value,...] with a name of letters, digits, '.', '_' or '-'");
  }
  if (colon == std::string_view::npos) return spec;
  const std::string_view body = text.substr(colon + 1);
  if (body.empty()) throw InputError("spec " + quoted + ": nothing after ':'");
  for (std::string_view piece : split_top_level(body)) {
    const std::size_t eq = piece.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      throw InputError("spec " + quoted + ": '" + std::string(piece) + "' is not key=value");
    }
    std::string key(piece.substr(0, eq));
    if (!valid_name(key)) throw InputError("spec " + quoted + ": invalid key '" + key + "'");
    for (const auto& [existing, value] : spec.settings) {
      if (existing == key) throw InputError("spec " + quoted + ": key '" + key + "' given twice");
    }
    spec.settings.emplace_back(std::move(key), std::string(piece.substr(eq + 1)));
  }
  return spec;
}

std::vector<std::string> split_spec_list(std::string_view text) {
  std::vector<std::string> specs;
  for (std::string_view piece : split_top_level(text)) {
    const bool continues = !specs.empty() && piece.find('=') != std::string_view::npos &&
                           piece.find(':') == std::string_view::npos;
    if (continues) {
      specs.back() += ",";
      specs.back() += piece;
    } else {
      specs.emplace_back(piece);
    }
  }
  return specs;
}

}  // namespace tiermark
