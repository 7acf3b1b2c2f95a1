#include "harness/trace_stats_report.h"

#include "common/size_units.h"

namespace tiermark {

nlohmann::ordered_json trace_stats_json(const TraceStats& stats, const std::string& file, std::size_t top_tags) {
  using Json = nlohmann::ordered_json;
  Json report;
  report["schema"] = kTraceStatsSchema;
  report["file"] = file;
  report["events"] = stats.events;
  report["allocs"] = stats.allocs;
  report["frees"] = stats.frees;
  report["phases"] = stats.phases;
  report["counters"] = stats.counters;
  report["allocated_bytes_total"] = stats.allocated_bytes_total;
  report["distinct_sizes"] = Json::array();
  for (const auto& [size, count] : stats.distinct_sizes) report["distinct_sizes"].push_back({size, count});
  report["peak_live_bytes"] = stats.peak_live_bytes;
  report["peak_live_blocks"] = stats.peak_live_blocks;
  report["peak_event"] = stats.peak_event;
  report["end_live_blocks"] = stats.end_live_blocks;
  report["end_live_bytes"] = stats.end_live_bytes;
  report["threads"] = stats.threads;
  report["streams"] = stats.streams;
  Json lifetime = {{"unit", "events"}, {"freed_blocks", stats.freed_blocks()}};
  for (const auto& [name, p] : {std::pair{"p50", 50.0}, {"p90", 90.0}, {"p99", 99.0}, {"max", 100.0}}) {
    const auto value = stats.lifetime_percentile(p);
    lifetime[name] = value ? Json(*value) : Json(nullptr);
  }
  report["lifetime"] = lifetime;
  report["size_histogram"] = Json::array();
  for (const SizeBucket& bucket : stats.size_histogram) {
    report["size_histogram"].push_back(
        {{"lower_bytes", bucket.lower}, {"upper_bytes", bucket.lower * 2}, {"allocs", bucket.allocs}, {"bytes", bucket.bytes}});
  }
  report["top_tags"] = Json::array();
  for (const TagUsage& usage : stats.top_tags(top_tags)) {
    report["top_tags"].push_back({{"tag", usage.tag}, {"allocs", usage.allocs}, {"bytes", usage.bytes}});
  }
  report["counter_values"] = Json::array();
  for (const CounterSummary& c : stats.counter_summaries()) {
    report["counter_values"].push_back({{"name", c.name}, {"updates", c.updates}, {"first", c.first}, {"last", c.last}, {"max", c.max}});
  }
  report["metadata"] = Json::object();
  for (const auto& [key, value] : stats.metadata.items()) report["metadata"][key] = value;
  return report;
}

void print_trace_stats(std::ostream& out, const nlohmann::ordered_json& report) {
  auto bytes = [](const nlohmann::ordered_json& v) { return format_size_approx(v.get<std::uint64_t>()); };
  out << report["file"].get<std::string>() << "\n";
  for (const auto& [key, value] : report["metadata"].items()) out << "  " << key << ": " << value.get<std::string>() << "\n";
  out << "  events " << report["events"] << " (" << report["allocs"] << " allocs, " << report["frees"] << " frees, "
      << report["phases"] << " phase markers, " << report["counters"] << " counter updates)\n";
  out << "  peak live " << bytes(report["peak_live_bytes"]) << " in " << report["peak_live_blocks"] << " blocks at event "
      << report["peak_event"] << "; live at end " << bytes(report["end_live_bytes"]) << " in " << report["end_live_blocks"]
      << " blocks\n";
  out << "  threads " << report["threads"] << ", streams " << report["streams"] << ", distinct sizes "
      << report["distinct_sizes"].size() << "\n";
  const auto& lifetime = report["lifetime"];
  if (!lifetime["p50"].is_null()) {
    out << "  lifetime in events: p50 " << lifetime["p50"] << ", p90 " << lifetime["p90"] << ", p99 " << lifetime["p99"]
        << ", max " << lifetime["max"] << "\n";
  }
  out << "  sizes (power-of-two buckets):\n";
  for (const auto& bucket : report["size_histogram"]) {
    out << "    [" << bytes(bucket["lower_bytes"]) << ", " << bytes(bucket["upper_bytes"]) << ")  " << bucket["allocs"]
        << " allocs, " << bytes(bucket["bytes"]) << "\n";
  }
  out << "  top tags by bytes allocated:\n";
  for (const auto& tag : report["top_tags"]) {
    const std::string name = tag["tag"].get<std::string>();
    out << "    " << (name.empty() ? "(no tag)" : name) << "  " << bytes(tag["bytes"]) << " in " << tag["allocs"] << " allocs\n";
  }
  for (const auto& c : report["counter_values"]) {
    out << "  counter " << c["name"].get<std::string>() << ": " << c["updates"] << " updates, last " << c["last"] << ", max "
        << c["max"] << "\n";
  }
}

}  // namespace tiermark
