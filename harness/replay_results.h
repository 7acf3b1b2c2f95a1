// Results of `tiermark replay` and `tiermark capacity`: the JSON document (schema `tiermark/1`, the
// source of truth, documented in results/README.md), and what is made from it: the long-form CSV and
// the console table. Measurements become JSON here and nowhere else.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "replay/flat_trace.h"
#include "replay/replay_runner.h"

namespace tiermark {

inline constexpr const char* kResultsSchema = "tiermark/1";

// One repetition's metrics: ops_per_second, seconds, the peaks, efficiency, oom_count, upstream
// calls, when measured, latency_ns {alloc, free} x {p50, p90, p99, p999, max, count}, and the
// result's extra_metrics (system.* rows: peak_rss_bytes, page_faults, rss_before_pass_bytes).
nlohmann::ordered_json repetition_metrics(const RepetitionResult& result);

// `metrics` holds, per metric, the median over `repetitions` (each a repetition_metrics() object);
// `statistics` holds median, min, max and the coefficient of variation (stddev / mean) per metric.
struct Aggregate {
  nlohmann::ordered_json metrics = nlohmann::ordered_json::object();
  nlohmann::ordered_json statistics = nlohmann::ordered_json::object();
};
Aggregate aggregate_repetitions(const std::vector<nlohmann::ordered_json>& repetitions);

// The facts of a trace every run of it is measured against (the `workloads` items).
nlohmann::ordered_json workload_json(const FlatTrace& trace, const std::string& source_kind,
                                     std::optional<std::uint64_t> planner_bytes, double planner_seconds);

// Adds to `metrics` what the memory pass measured (fragmentation at peak, unreturnable bytes,
// KV utilisation, model_error for traces with reference.reserved_bytes counters) and the trace's
// own references (lower bound, planner); returns the sampled timeline as columns.
nlohmann::ordered_json add_memory_metrics(nlohmann::ordered_json& metrics, const MemoryObservation& memory,
                                          const FlatTrace& trace, std::optional<std::uint64_t> planner_bytes);

// Adds the locality pass's metrics: touch_bandwidth_bytes_per_second, touch_cache_resident_fraction,
// and the bandwidth of mostly-resident (hot) and mostly-not (cold) blocks.
void add_locality_metrics(nlohmann::ordered_json& metrics, const LocalityObservation& locality);

// <stem>.json and <stem>.csv in `dir` (each written to a temporary name and renamed), and the JSON
// also to `json_path` when not empty. Replay writes results.*, capacity capacity.*, so that one
// results directory holds both.
void write_results(const nlohmann::ordered_json& document, const std::string& dir, const std::string& json_path,
                   const std::string& stem = "results");
// The long-form CSV: workload,allocator,config,repetition,metric,value (repetition "median" for
// the aggregated value, 1..N for each repetition); nested metrics get dotted names.
void write_results_csv(const nlohmann::ordered_json& document, std::ostream& out);
// One table per workload, one row per run sorted by efficiency (best first), with the lower bound.
void print_results_table(const nlohmann::ordered_json& document, std::ostream& out);

}  // namespace tiermark
