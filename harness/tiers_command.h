// `tiermark tiers`: bandwidth and latency of each memory tier (L1, L2, L3, DRAM, NUMA nodes) on this
// machine, measured with tiers/ (kernels, pointer chase, pinned threads) over a sweep of working-set
// sizes. Results: tiers.json (schema tiermark-tiers/1) in the results directory, optionally --json
// FILE, and a console table per tier; docs/tiers.md describes the method and the schema.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tiermark {

inline constexpr const char* kTiersSchema = "tiermark-tiers/1";

int tiers_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
