#include "common/size_units.h"

#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

namespace tiermark {
namespace {

struct Unit {
  std::string_view suffix;
  std::uint64_t multiplier;
};

constexpr std::uint64_t kKi = 1024;
constexpr std::array<Unit, 18> kUnits{{
    {"B", 1},
    {"K", kKi},
    {"KiB", kKi},
    {"KB", 1000},
    {"M", kKi * kKi},
    {"MiB", kKi * kKi},
    {"MB", 1000 * 1000},
    {"G", kKi * kKi * kKi},
    {"GiB", kKi * kKi * kKi},
    {"GB", 1000ull * 1000 * 1000},
    {"T", kKi * kKi * kKi * kKi},
    {"TiB", kKi * kKi * kKi * kKi},
    {"TB", 1000ull * 1000 * 1000 * 1000},
    {"P", kKi * kKi * kKi * kKi * kKi},
    {"PiB", kKi * kKi * kKi * kKi * kKi},
    {"PB", 1000ull * 1000 * 1000 * 1000 * 1000},
    {"k", kKi},
    {"", 1},
}};

}  // namespace

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t end = 0;
  while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.')) {
    ++end;
  }
  const std::string_view number = text.substr(0, end);
  const std::string_view suffix = text.substr(end);
  if (number.empty() || number.front() == '.' || number.back() == '.') return std::nullopt;
  std::uint64_t multiplier = 0;
  for (const Unit& unit : kUnits) {
    if (unit.suffix == suffix) {
      multiplier = unit.multiplier;
      break;
    }
  }
  if (multiplier == 0) return std::nullopt;

  const std::size_t dot = number.find('.');
  if (dot == std::string_view::npos) {
    std::uint64_t value = 0;
    for (char c : number) {
      const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
      if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
      value = value * 10 + digit;
    }
    if (value > std::numeric_limits<std::uint64_t>::max() / multiplier) return std::nullopt;
    return value * multiplier;
  }
  if (number.find('.', dot + 1) != std::string_view::npos) return std::nullopt;
  // A fractional size ("1.5GiB") must come out a whole number of bytes.
  const long double value = std::stold(std::string(number)) * static_cast<long double>(multiplier);
  if (!(value < 18446744073709551615.0L)) return std::nullopt;
  const long double whole = std::floor(value);
  if (whole != value) return std::nullopt;
  return static_cast<std::uint64_t>(whole);
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 5> kBinary{{
      {"PiB", kKi * kKi * kKi * kKi * kKi},
      {"TiB", kKi * kKi * kKi * kKi},
      {"GiB", kKi * kKi * kKi},
      {"MiB", kKi * kKi},
      {"KiB", kKi},
  }};
  if (bytes != 0) {
    for (const auto& [suffix, multiplier] : kBinary) {
      if (bytes % multiplier == 0) return std::to_string(bytes / multiplier) + std::string(suffix);
    }
  }
  return std::to_string(bytes) + "B";
}

std::string format_size_approx(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 6) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, value >= 100 ? "%.0f %s" : value >= 10 ? "%.1f %s" : "%.2f %s", value, kUnits[unit]);
  }
  return text;
}

}  // namespace tiermark
