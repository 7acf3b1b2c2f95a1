// `tiermark capacity`: the smallest simulated device capacity, to 1 MiB, at which a workload or trace
// replays against each allocator with no failed request (min_capacity_bytes), found by bisection
// between the trace's lower bound and a capacity found by doubling; beside the allocators, the
// offline planner (searched the same way: its answer is its arena rounded up to 1 MiB) and the lower
// bound. With --capacity SIZE and an llm-serve workload, also the largest max_num_seqs (the server's
// concurrency limit) that replays on a SIZE device with no failed request. Results: results.json
// (schema tiermark/1) and a console table; docs/capacity.md describes the method and what the
// bisection assumes.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

int capacity_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
