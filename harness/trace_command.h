// `tiermark trace gen|convert|stats`: generate a workload into a trace file, convert between
// formats (and import RMM logs), and describe what a trace holds.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

int trace_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
