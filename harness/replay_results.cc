#include "harness/replay_results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/size_units.h"
#include "harness/atomic_file.h"

namespace tiermark {
namespace {

using json = nlohmann::ordered_json;

constexpr std::size_t kTopTags = 10;

json latency_json(const LatencyHistogram& h) {
  return json{{"p50", h.percentile(0.50)}, {"p90", h.percentile(0.90)}, {"p99", h.percentile(0.99)},
              {"p999", h.percentile(0.999)}, {"max", h.max()},          {"count", h.count()}};
}

json tags_json(const std::vector<TagBytes>& tags) {
  json out = json::array();
  for (const TagBytes& t : tags) out.push_back({{"tag", t.tag}, {"bytes", t.bytes}, {"blocks", t.blocks}});
  return out;
}

// Every numeric leaf of `j` under its dotted path (`latency_ns.alloc.p50`).
void numeric_leaves(const json& j, const std::string& prefix, std::vector<std::pair<std::string, double>>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object()) {
      numeric_leaves(*it, key, out);
    } else if (it->is_number()) {
      out.emplace_back(key, it->get<double>());
    }
  }
}

json::json_pointer pointer_of(const std::string& dotted) {
  std::string path;
  std::stringstream in(dotted);
  for (std::string part; std::getline(in, part, '.');) path += "/" + part;
  return json::json_pointer(path);
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Integers stay integers in the JSON when every value is whole (byte counts, counts).
json number(double value) {
  if (std::floor(value) == value && std::fabs(value) < 9.0e15) return static_cast<std::int64_t>(value);
  return value;
}

std::string format_rate(double ops_per_second) {
  char buffer[32];
  if (ops_per_second >= 1e9) {
    std::snprintf(buffer, sizeof buffer, "%.2f G", ops_per_second / 1e9);
  } else if (ops_per_second >= 1e6) {
    std::snprintf(buffer, sizeof buffer, "%.1f M", ops_per_second / 1e6);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.0f k", ops_per_second / 1e3);
  }
  return buffer;
}

std::string format_fixed(double value, int digits) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.*f", digits, value);
  return buffer;
}

std::string cell(const json& metrics, const std::string& dotted, int digits) {
  const json::json_pointer p = pointer_of(dotted);
  if (!metrics.contains(p) || !metrics[p].is_number()) return "-";
  return format_fixed(metrics[p].get<double>(), digits);
}

std::string bytes_cell(const json& metrics, const char* key) {
  if (!metrics.contains(key) || !metrics[key].is_number()) return "-";
  return format_size_approx(metrics[key].get<std::uint64_t>());
}

}  // namespace

json repetition_metrics(const RepetitionResult& r) {
  json m;
  m["ops_per_second"] = r.ops_per_second;
  m["seconds"] = r.seconds;
  m["peak_requested_bytes"] = r.stats.requested_bytes.peak;
  m["peak_allocated_bytes"] = r.stats.allocated_bytes.peak;
  if (r.stats.reserved_known) {
    m["peak_reserved_bytes"] = r.stats.reserved_bytes.peak;
    m["efficiency"] = r.stats.reserved_bytes.peak == 0 ? 0.0
                                                      : static_cast<double>(r.stats.requested_bytes.peak) /
                                                            static_cast<double>(r.stats.reserved_bytes.peak);
  }
  m["oom_count"] = r.stats.failed_requests;
  m["upstream_allocs"] = r.upstream.allocs;
  m["upstream_frees"] = r.upstream.frees;
  if (r.latency_measured) m["latency_ns"] = {{"alloc", latency_json(r.alloc_ns)}, {"free", latency_json(r.free_ns)}};
  for (const auto& [name, value] : r.extra_metrics) m[name] = number(value);
  return m;
}

Aggregate aggregate_repetitions(const std::vector<json>& repetitions) {
  Aggregate out;
  std::map<std::string, std::vector<double>> values;
  std::vector<std::string> order;
  for (const json& r : repetitions) {
    std::vector<std::pair<std::string, double>> leaves;
    numeric_leaves(r, "", leaves);
    for (const auto& [key, value] : leaves) {
      if (values[key].empty()) order.push_back(key);
      values[key].push_back(value);
    }
  }
  for (const std::string& key : order) {
    const std::vector<double>& v = values[key];
    const double median = median_of(v);
    out.metrics[pointer_of(key)] = number(median);
    double mean = 0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
    double variance = 0;
    for (double x : v) variance += (x - mean) * (x - mean);
    variance = v.size() > 1 ? variance / static_cast<double>(v.size() - 1) : 0;
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    out.statistics[key] = {{"median", number(median)}, {"min", number(*lo)}, {"max", number(*hi)},
                           {"cv", mean == 0 ? 0.0 : std::sqrt(variance) / mean}, {"n", v.size()}};
  }
  return out;
}

json workload_json(const FlatTrace& trace, const std::string& source_kind, std::optional<std::uint64_t> planner_bytes,
                   double planner_seconds) {
  json metadata = json::object();
  for (const auto& [key, value] : trace.metadata.items()) metadata[key] = value;
  json w;
  w["name"] = trace.name;
  w["source"] = source_kind;
  w["events"] = trace.events;
  w["streamed"] = trace.streamed();
  w["allocs"] = trace.allocs;
  w["frees"] = trace.frees;
  w["threads"] = trace.threads;
  w["lower_bound_bytes"] = trace.peak_requested_bytes;
  w["peak_op"] = trace.peak_op;
  w["planner_bytes"] = planner_bytes ? json(*planner_bytes) : json(nullptr);
  w["planner_seconds"] = planner_seconds;
  w["end_live_bytes"] = trace.end_live_bytes;
  w["meant_to_end_empty"] = trace.meant_to_end_empty();
  w["top_consumers"] = tags_json(live_by_tag_after(trace, trace.peak_op, kTopTags));
  w["leaks"] = trace.meant_to_end_empty() ? tags_json(leftovers_by_tag(trace, kTopTags)) : json::array();
  w["metadata"] = metadata;
  return w;
}

json add_memory_metrics(json& m, const MemoryObservation& memory, const FlatTrace& trace,
                        std::optional<std::uint64_t> planner_bytes) {
  const AllocatorStats& peak = memory.at_peak;
  m["lower_bound_bytes"] = trace.peak_requested_bytes;
  m["planner_bytes"] = planner_bytes ? json(*planner_bytes) : json(nullptr);
  m["requested_bytes_at_peak"] = peak.requested_bytes.current;
  m["allocated_bytes_at_peak"] = peak.allocated_bytes.current;
  m["internal_fragmentation_at_peak"] =
      peak.allocated_bytes.current == 0
          ? 0.0
          : 1.0 - static_cast<double>(peak.requested_bytes.current) / static_cast<double>(peak.allocated_bytes.current);
  if (memory.reserved_known) {
    m["reserved_bytes_at_peak"] = peak.reserved_bytes.current;
    m["external_fragmentation_at_peak"] = peak.external_fragmentation();
    m["external_fragmentation_max"] = memory.max_external_fragmentation;
    m["unreturnable_bytes_at_peak"] = memory.unreturnable_bytes_at_peak;
  }
  m["leaked_bytes"] = trace.meant_to_end_empty() ? trace.end_live_bytes : 0;
  if (memory.kv_counters && memory.kv_committed_time > 0) {
    m["kv_utilisation"] = memory.kv_token_time / memory.kv_committed_time;
    if (memory.reserved_known && memory.kv_reserved_time > 0) {
      m["kv_utilisation_of_reserved"] = memory.kv_token_time / memory.kv_reserved_time;
    }
  }
  // Imported PyTorch snapshots carry PyTorch's own reserved bytes as a counter: model_error compares
  // the model with them at the op where requested bytes peak.
  if (const TagId recorded = trace.counter_tag("reference.reserved_bytes"); recorded != kNoTag && memory.reserved_known) {
    std::optional<std::uint64_t> value;
    for (const CounterSample& c : trace.counters) {
      if (c.op_index > trace.peak_op) break;
      if (c.tag == recorded) value = c.value;
    }
    if (value && *value != 0) {
      m["recorded_reserved_bytes"] = *value;
      m["model_error"] = (static_cast<double>(peak.reserved_bytes.current) - static_cast<double>(*value)) /
                         static_cast<double>(*value);
    }
  }
  // Columns of equal length: the reserved-based two only when reserved memory is known.
  json timeline = {{"op_index", json::array()}, {"requested_bytes", json::array()}, {"allocated_bytes", json::array()}};
  if (memory.reserved_known) {
    timeline["reserved_bytes"] = json::array();
    timeline["external_fragmentation"] = json::array();
  }
  for (const MemorySample& s : memory.timeline) {
    timeline["op_index"].push_back(s.op_index);
    timeline["requested_bytes"].push_back(s.requested_bytes);
    timeline["allocated_bytes"].push_back(s.allocated_bytes);
    if (memory.reserved_known) {
      timeline["reserved_bytes"].push_back(s.reserved_bytes);
      timeline["external_fragmentation"].push_back(s.external_fragmentation);
    }
  }
  return timeline;
}

void add_locality_metrics(json& m, const LocalityObservation& l) {
  const auto rate = [](std::uint64_t bytes, double seconds) { return seconds > 0 ? json(double(bytes) / seconds) : json(nullptr); };
  m["touch_cache_bytes"] = l.cache_bytes;
  m["touched_bytes"] = l.touched_bytes;
  m["touch_bandwidth_bytes_per_second"] = rate(l.touched_bytes, l.touch_seconds);
  m["touch_cache_resident_fraction"] = l.touched_bytes == 0 ? 0.0 : double(l.resident_bytes) / double(l.touched_bytes);
  m["touch_hot_bandwidth_bytes_per_second"] = rate(l.hot_bytes, l.hot_seconds);
  m["touch_cold_bandwidth_bytes_per_second"] = rate(l.cold_bytes, l.cold_seconds);
}

void write_results_csv(const json& document, std::ostream& out) {
  out << "workload,allocator,config,repetition,metric,value\n";
  const auto quote = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  const auto rows = [&](const json& run, const std::string& repetition, const json& metrics) {
    std::vector<std::pair<std::string, double>> leaves;
    numeric_leaves(metrics, "", leaves);
    for (const auto& [key, value] : leaves) {
      char buffer[40];
      std::snprintf(buffer, sizeof buffer, "%.17g", value);
      out << quote(run["workload"].get<std::string>()) << "," << quote(run["allocator"].get<std::string>()) << ","
          << quote(run["config"].get<std::string>()) << "," << repetition << "," << key << "," << buffer << "\n";
    }
  };
  for (const json& run : document["runs"]) {
    if (!run.contains("metrics")) continue;
    rows(run, "median", run["metrics"]);
    std::size_t i = 0;
    for (const json& r : run.value("repetitions", json::array())) rows(run, std::to_string(++i), r);
  }
}

void write_results(const json& document, const std::string& dir, const std::string& json_path, const std::string& stem) {
  const std::string text = document.dump(1) + "\n";
  if (!dir.empty()) {
    AtomicFile json_file((std::filesystem::path(dir) / (stem + ".json")).string());
    json_file.stream() << text;
    json_file.commit();
    AtomicFile csv_file((std::filesystem::path(dir) / (stem + ".csv")).string());
    write_results_csv(document, csv_file.stream());
    csv_file.commit();
  }
  if (!json_path.empty()) {
    AtomicFile file(json_path);
    file.stream() << text;
    file.commit();
  }
}

namespace {

// Allocator locality (--memory host --touch full): the first touch of every block each allocator
// handed out, and the share of those bytes the LLC model still held. Only rows that measured it.
void print_locality(const std::vector<const json*>& runs, std::ostream& out) {
  const auto gbps = [](const json& m, const char* key) {
    return m.contains(key) && m[key].is_number() ? format_fixed(m[key].get<double>() / 1e9, 1) : std::string("-");
  };
  bool header = false;
  char line[200];
  const char* format = "  %-18s %12s %14s %9s %9s\n";
  for (const json* run : runs) {
    const json m = run->value("metrics", json::object());
    if (!m.contains("touch_bandwidth_bytes_per_second")) continue;
    if (!header) {
      out << "  first touch of each block (" << format_size_approx(m["touch_cache_bytes"].get<std::uint64_t>())
          << " LLC model): GB/s overall, hot and cold blocks, and the share of touched bytes still cached\n";
      std::snprintf(line, sizeof line, format, "allocator", "touch GB/s", "cache-resident", "hot", "cold");
      out << line;
      header = true;
    }
    const std::string resident = format_fixed(100 * m["touch_cache_resident_fraction"].get<double>(), 1) + "%";
    std::snprintf(line, sizeof line, format, run->value("allocator", std::string()).c_str(),
                  gbps(m, "touch_bandwidth_bytes_per_second").c_str(), resident.c_str(),
                  gbps(m, "touch_hot_bandwidth_bytes_per_second").c_str(),
                  gbps(m, "touch_cold_bandwidth_bytes_per_second").c_str());
    out << line;
  }
}

}  // namespace

void print_results_table(const json& document, std::ostream& out) {
  for (const json& workload : document["workloads"]) {
    const std::string name = workload["name"];
    std::vector<const json*> runs;
    for (const json& run : document["runs"]) {
      if (run["workload"] == name) runs.push_back(&run);
    }
    const auto efficiency = [](const json* run) {
      const json& m = run->value("metrics", json::object());
      return m.contains("efficiency") ? m["efficiency"].get<double>() : -1.0;
    };
    std::stable_sort(runs.begin(), runs.end(), [&](const json* a, const json* b) { return efficiency(a) > efficiency(b); });

    out << "\n" << name << "   lower bound " << format_size_approx(workload["lower_bound_bytes"].get<std::uint64_t>());
    if (workload["planner_bytes"].is_number()) out << ", planner " << format_size_approx(workload["planner_bytes"].get<std::uint64_t>());
    out << ", " << workload["events"].get<std::uint64_t>() << " events\n";
    const auto planner = workload["planner_bytes"].is_number() ? workload["planner_bytes"].get<double>() : 0.0;
    char line[320];
    const char* format = "  %-18s %10s %14s %14s %12s %10s %9s %9s %7s %10s  %s\n";
    std::snprintf(line, sizeof line, format, "allocator", "ops/s", "alloc p50/p99", "free p50/p99", "peak reserv.",
                  "efficiency", "x planner", "max ext.", "OOMs", "peak RSS", "note");
    out << line;
    // The theoretical optimum first: no allocator can hold less than the peak of live bytes.
    std::snprintf(line, sizeof line, format, "(lower bound)", "", "", "", format_size_approx(workload["lower_bound_bytes"].get<std::uint64_t>()).c_str(),
                  "1.000", planner > 0 ? format_fixed(workload["lower_bound_bytes"].get<double>() / planner, 3).c_str() : "-", "", "", "", "");
    out << line;
    for (const json* run : runs) {
      const json m = run->value("metrics", json::object());
      const std::string alloc = cell(m, "latency_ns.alloc.p50", 0) + "/" + cell(m, "latency_ns.alloc.p99", 0);
      const std::string free = cell(m, "latency_ns.free.p50", 0) + "/" + cell(m, "latency_ns.free.p99", 0);
      const std::string over_planner = planner > 0 && m.contains("peak_reserved_bytes") && m["peak_reserved_bytes"].is_number()
                                           ? format_fixed(m["peak_reserved_bytes"].get<double>() / planner, 3)
                                           : "-";
      std::snprintf(line, sizeof line, format, run->value("allocator", std::string()).c_str(),
                    m.contains("ops_per_second") ? format_rate(m["ops_per_second"].get<double>()).c_str() : "-",
                    alloc == "-/-" ? "-" : alloc.c_str(), free == "-/-" ? "-" : free.c_str(),
                    bytes_cell(m, "peak_reserved_bytes").c_str(), cell(m, "efficiency", 3).c_str(), over_planner.c_str(),
                    cell(m, "external_fragmentation_max", 3).c_str(), cell(m, "oom_count", 0).c_str(),
                    bytes_cell(m, "peak_rss_bytes").c_str(), run->value("note", std::string()).c_str());
      out << line;
    }
    print_locality(runs, out);
  }
}

}  // namespace tiermark
