// `tiermark replay`: replays a workload or a trace file against a list of allocators and measures
// throughput, latency and memory (shared/REFERENCE.md section 6), with the offline planner and the
// lower bound beside every allocator. Results: results.json (schema tiermark/1), results.csv and a
// console table (harness/replay_results.h); docs/replay.md describes the method.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

int replay_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
