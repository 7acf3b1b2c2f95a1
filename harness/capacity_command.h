#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

int capacity_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
