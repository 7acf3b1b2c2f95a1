#include "harness/capacity_command.h"

#include "common/input_error.h"

namespace tiermark {

int capacity_command(const std::vector<std::string>&, std::ostream&) { throw InputError("capacity: not written yet"); }

}  // namespace tiermark
