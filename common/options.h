// Options: the declared, typed settings of one component (an allocator, an upstream memory source,
// later a workload generator). A component declares its options once (name, type, default, help);
// the same declarations drive validation, `tiermark list` and the canonical configuration string
// that results record. Every check happens when the component is built, never on a hot path.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tiermark {

enum class OptionType {
  kSize,    // bytes with optional unit: 512, 64KiB, 80GiB
  kCount,   // a non-negative integer
  kNumber,  // a non-negative decimal
  kBool,    // true/false (also 1/0, yes/no, on/off)
  kChoice,  // one of a fixed list of words
  kText,    // any text, checked by the component itself (PyTorch's `[256:1,512:2,>:8]`, a list in brackets)
};

std::string_view option_type_name(OptionType type);

struct OptionSpec {
  std::string name;
  OptionType type;
  std::string default_value;  // empty means "unset" (only for options that may be absent)
  std::string description;
  std::vector<std::string> choices = {};  // kChoice only
};

class Options {
 public:
  // Validates every setting against `specs`; throws InputError naming `owner`, the key and the
  // problem for an unknown key or a value that does not parse as the declared type.
  Options(std::string owner, std::span<const OptionSpec> specs,
          const std::vector<std::pair<std::string, std::string>>& settings);

  std::uint64_t size(std::string_view key) const;
  std::uint64_t count(std::string_view key) const;
  double number(std::string_view key) const;
  bool flag(std::string_view key) const;
  const std::string& choice(std::string_view key) const;
  // True when the option has a value (given, or a non-empty default).
  bool has(std::string_view key) const;
  // The raw text of an option's value: a kText option's value, or any option's for error messages.
  const std::string& text(std::string_view key) const;

  // `owner:key=value,...` with every option, defaults included, in declaration order.
  std::string canonical() const;
  const std::string& owner() const { return owner_; }

  // Throws InputError "owner: option 'key'=value: <why>"; for range checks done by the component.
  [[noreturn]] void reject(std::string_view key, std::string_view why) const;

 private:
  struct Value {
    const OptionSpec* spec;
    std::string text;
  };
  const Value& find(std::string_view key, OptionType type) const;

  std::string owner_;
  std::vector<Value> values_;
};

}  // namespace tiermark
