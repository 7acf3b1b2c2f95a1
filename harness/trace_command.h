// `tiermark trace gen|convert|stats|capture`: generate a workload into a trace file, convert between
// formats (and import RMM logs), describe what a trace holds, and record a real program's
// allocations through libtiermark_capture.so.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

int trace_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
