// The report of `tiermark trace stats`: TraceStats as JSON (schema `tiermark-trace-stats/1`, keys
// documented in docs/trace-format.md) and as a short human summary made from the same numbers.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "workloads/trace_stats.h"

namespace tiermark {

inline constexpr const char* kTraceStatsSchema = "tiermark-trace-stats/1";

nlohmann::ordered_json trace_stats_json(const TraceStats& stats, const std::string& file, std::size_t top_tags);
void print_trace_stats(std::ostream& out, const nlohmann::ordered_json& report);

}  // namespace tiermark
