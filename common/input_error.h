// InputError: the one exception type for bad input from a user (a malformed spec, an unknown
// option, an impossible size, later a malformed trace). Its message is a single line that names
// the problem and where it is; the CLI prints it and exits with code 2. Never thrown on a hot path.
#pragma once

#include <stdexcept>
#include <string>

namespace tiermark {

class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace tiermark
