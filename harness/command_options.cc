#include "harness/command_options.h"

#include <charconv>

#include "common/input_error.h"

namespace tiermark {

namespace po = boost::program_options;

po::variables_map parse_command_options(const std::string& command, const po::options_description& options,
                                        const std::vector<std::string>& args,
                                        const po::positional_options_description& positional) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help") == 0) po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(command + ": " + e.what());
  }
  return vm;
}

std::uint64_t parse_count_option(std::string_view option, const std::string& text, std::uint64_t minimum) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (!digits || ec != std::errc() || ptr != end || value < minimum) {
    throw InputError("--" + std::string(option) + ": '" + text + "' is not a whole number >= " + std::to_string(minimum));
  }
  return value;
}

}  // namespace tiermark
