#include "harness/system_malloc_runner.h"

#include "common/input_error.h"

namespace tiermark {

int replay_child_command(const std::vector<std::string>&, std::ostream&) { throw InputError("replay-child: not written yet"); }

}  // namespace tiermark
