#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

// The hidden `tiermark replay-child` command a system.* row runs in its own process.
int replay_child_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
