// Command-line parsing shared by every `tiermark` command: one place that turns boost's parse errors
// and malformed numbers into the one-line InputError (exit code 2) the CLI contract promises.
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tiermark {

// Parses `args` against `options` with `positional` names (none: stray words are errors, not
// ignored). Required options are not enforced when --help is given.
boost::program_options::variables_map parse_command_options(
    const std::string& command, const boost::program_options::options_description& options,
    const std::vector<std::string>& args,
    const boost::program_options::positional_options_description& positional = {});

// A whole number >= `minimum` written in decimal digits only; throws InputError
// "--<option>: '<text>' is not a whole number >= <minimum>" otherwise (boost would wrap "-1").
std::uint64_t parse_count_option(std::string_view option, const std::string& text, std::uint64_t minimum);

}  // namespace tiermark
