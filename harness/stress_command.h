// `tiermark stress`: runs a stress kernel (stress/stress_kernel.h; churn by default) on several
// threads against each allocator of a list, with --verify checking every block's contents and that
// no two live blocks overlap, memory sampled over time for the soak's growth gate. tiermark's own
// allocators run in this process under a lock (harness/stress_targets.h); each system.* row runs in a
// child process of its own, `tiermark stress-child`, with its malloc preloaded (harness/malloc_child.h).
// Results: <out>/stress.json (schema tiermark/1, keys in docs/stress.md), stress.csv and a console
// table. Exit code 0 when every row is clean, 1 when a row had corruptions, failed the growth gate or
// could not finish, 2 for bad input (before anything runs or is written).
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

int stress_command(const std::vector<std::string>& args, std::ostream& out);

// The hidden `tiermark stress-child` command a system.* row runs in its own process.
int stress_child_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
