#include "common/options.h"

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "common/input_error.h"
#include "common/size_units.h"

namespace tiermark {
namespace {

std::optional<bool> parse_bool(std::string_view text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  return std::nullopt;
}

std::optional<std::uint64_t> parse_count(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

std::optional<double> parse_number(std::string_view text) {
  if (text.empty() || text.front() == '-' || text.front() == '+') return std::nullopt;
  const std::string copy(text);
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || !(value >= 0) || value > 1e300) return std::nullopt;
  return value;
}

// Why `text` is not a valid value of `spec`, or empty when it is.
std::string invalid_reason(const OptionSpec& spec, std::string_view text) {
  switch (spec.type) {
    case OptionType::kSize:
      return parse_size(text) ? "" : "expected a size such as 512, 64KiB or 80GiB";
    case OptionType::kCount:
      return parse_count(text) ? "" : "expected a non-negative integer";
    case OptionType::kNumber:
      return parse_number(text) ? "" : "expected a non-negative number";
    case OptionType::kBool:
      return parse_bool(text) ? "" : "expected true or false";
    case OptionType::kChoice: {
      if (std::find(spec.choices.begin(), spec.choices.end(), text) != spec.choices.end()) return "";
      std::string why = "expected one of";
      for (const std::string& choice : spec.choices) why += " " + choice;
      return why;
    }
    case OptionType::kText:
      return "";
  }
  return "unknown option type";
}

}  // namespace

std::string_view option_type_name(OptionType type) {
  switch (type) {
    case OptionType::kSize: return "size";
    case OptionType::kCount: return "count";
    case OptionType::kNumber: return "number";
    case OptionType::kBool: return "bool";
    case OptionType::kChoice: return "choice";
    case OptionType::kText: return "text";
  }
  return "unknown";
}

Options::Options(std::string owner, std::span<const OptionSpec> specs,
                 const std::vector<std::pair<std::string, std::string>>& settings)
    : owner_(std::move(owner)) {
  for (const OptionSpec& spec : specs) values_.push_back({&spec, spec.default_value});
  for (const auto& setting : settings) {
    const std::string& key = setting.first;  // a named variable: clang 14 cannot capture a structured binding
    const std::string& text = setting.second;
    auto it = std::find_if(values_.begin(), values_.end(), [&](const Value& v) { return v.spec->name == key; });
    if (it == values_.end()) {
      std::string known;
      for (const OptionSpec& spec : specs) known += (known.empty() ? "" : ", ") + spec.name;
      throw InputError(owner_ + ": unknown option '" + key + "' (known: " + (known.empty() ? "none" : known) + ")");
    }
    if (std::string why = invalid_reason(*it->spec, text); !why.empty()) {
      throw InputError(owner_ + ": option " + key + "='" + text + "': " + why);
    }
    it->text = text;
  }
}

const Options::Value& Options::find(std::string_view key, OptionType type) const {
  for (const Value& value : values_) {
    if (value.spec->name == key) {
      if (value.spec->type != type) throw std::logic_error(owner_ + ": option '" + std::string(key) + "' read as the wrong type");
      if (value.text.empty()) throw std::logic_error(owner_ + ": option '" + std::string(key) + "' read while unset");
      return value;
    }
  }
  throw std::logic_error(owner_ + ": option '" + std::string(key) + "' was never declared");
}

std::uint64_t Options::size(std::string_view key) const { return *parse_size(find(key, OptionType::kSize).text); }
std::uint64_t Options::count(std::string_view key) const { return *parse_count(find(key, OptionType::kCount).text); }
double Options::number(std::string_view key) const { return *parse_number(find(key, OptionType::kNumber).text); }
bool Options::flag(std::string_view key) const { return *parse_bool(find(key, OptionType::kBool).text); }
const std::string& Options::choice(std::string_view key) const { return find(key, OptionType::kChoice).text; }

bool Options::has(std::string_view key) const {
  for (const Value& value : values_) {
    if (value.spec->name == key) return !value.text.empty();
  }
  return false;
}

const std::string& Options::text(std::string_view key) const {
  for (const Value& value : values_) {
    if (value.spec->name == key) return value.text;
  }
  throw std::logic_error(owner_ + ": option '" + std::string(key) + "' was never declared");
}

std::string Options::canonical() const {
  std::string out = owner_;
  char separator = ':';
  for (const Value& value : values_) {
    if (value.text.empty()) continue;
    out += separator + value.spec->name + "=" + value.text;
    separator = ',';
  }
  return out;
}

void Options::reject(std::string_view key, std::string_view why) const {
  throw InputError(owner_ + ": option " + std::string(key) + "='" + text(key) + "': " + std::string(why));
}

}  // namespace tiermark
