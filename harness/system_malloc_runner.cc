// The system.* rows (system_malloc_runner.h): the parent side, SystemMallocRunner, spawns one child
// per pass and rebuilds the pass's result from the child's JSON; the child side is
// replay_child_command. The child's stdout carries exactly one JSON object:
//
//   {"pass": "throughput"|"latency"|"memory", "malloc_library": "jemalloc", "malloc_object": "/usr/lib/...",
//    "ops": N, "rss_before_pass_bytes": B, "peak_rss_bytes": B, "page_faults": N,
//    "result": {...RepetitionResult...} | "memory": {...MemoryObservation...}}
//
// The child process itself, the library table and VmHWM (why not ru_maxrss) are malloc_child.h's.
#include "harness/system_malloc_runner.h"

#include <sys/resource.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "allocators/system_allocator.h"
#include "common/input_error.h"
#include "common/size_units.h"
#include "common/spec.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/malloc_child.h"
#include "harness/trace_files.h"
#include "harness/proc_files.h"

namespace tiermark {
namespace {

using json = nlohmann::json;

// --- JSON of the results a child sends (an exact round trip: integers stay integers, doubles are
// printed with enough digits to be read back unchanged). ---

json gauge_json(const Gauge& g) { return {{"current", g.current}, {"peak", g.peak}}; }
Gauge gauge_from(const json& j) { return {j.at("current").get<std::uint64_t>(), j.at("peak").get<std::uint64_t>()}; }

json stats_json(const AllocatorStats& s) {
  json j;
#define TIERMARK_GAUGE_JSON(name) j[#name] = gauge_json(s.name);
  TIERMARK_ALLOCATOR_GAUGES(TIERMARK_GAUGE_JSON)
#undef TIERMARK_GAUGE_JSON
#define TIERMARK_COUNTER_JSON(name) j[#name] = s.name;
  TIERMARK_ALLOCATOR_COUNTERS(TIERMARK_COUNTER_JSON)
#undef TIERMARK_COUNTER_JSON
  j["reserved_known"] = s.reserved_known;
  return j;
}

AllocatorStats stats_from(const json& j) {
  AllocatorStats s;
#define TIERMARK_GAUGE_FROM(name) s.name = gauge_from(j.at(#name));
  TIERMARK_ALLOCATOR_GAUGES(TIERMARK_GAUGE_FROM)
#undef TIERMARK_GAUGE_FROM
#define TIERMARK_COUNTER_FROM(name) s.name = j.at(#name).get<std::uint64_t>();
  TIERMARK_ALLOCATOR_COUNTERS(TIERMARK_COUNTER_FROM)
#undef TIERMARK_COUNTER_FROM
  s.reserved_known = j.at("reserved_known").get<bool>();
  return s;
}

json upstream_json(const UpstreamStats& u) {
  return {{"allocs", u.allocs}, {"frees", u.frees}, {"failed", u.failed}, {"bytes", gauge_json(u.bytes)},
          {"capacity", u.capacity}, {"modelled_cost_ns", u.modelled_cost_ns}};
}

UpstreamStats upstream_from(const json& j) {
  UpstreamStats u;
  u.allocs = j.at("allocs").get<std::uint64_t>();
  u.frees = j.at("frees").get<std::uint64_t>();
  u.failed = j.at("failed").get<std::uint64_t>();
  u.bytes = gauge_from(j.at("bytes"));
  u.capacity = j.at("capacity").get<std::uint64_t>();
  u.modelled_cost_ns = j.at("modelled_cost_ns").get<double>();
  return u;
}

// The non-empty buckets as [index, count] pairs, with the exact count and maximum.
json histogram_json(const LatencyHistogram& h) {
  json buckets = json::array();
  for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
    if (h.bucket_count(i) != 0) buckets.push_back({i, h.bucket_count(i)});
  }
  return {{"count", h.count()}, {"max", h.max()}, {"buckets", std::move(buckets)}};
}

LatencyHistogram histogram_from(const json& j) {
  LatencyHistogram h;
  const auto max = j.at("max").get<std::uint64_t>();
  for (const json& bucket : j.at("buckets")) {
    const auto index = bucket.at(0).get<std::size_t>();
    if (index >= LatencyHistogram::kBuckets) throw PassFailure("latency bucket " + std::to_string(index) + " out of range");
    h.add_bucket_count(index, bucket.at(1).get<std::uint64_t>(), max);
  }
  if (h.count() != j.at("count").get<std::uint64_t>() || h.max() != max) throw PassFailure("latency histogram counts disagree");
  return h;
}

json repetition_json(const RepetitionResult& r) {
  json j = {{"seconds", r.seconds}, {"ops_per_second", r.ops_per_second}, {"stats", stats_json(r.stats)},
            {"upstream", upstream_json(r.upstream)}, {"latency_measured", r.latency_measured}};
  if (r.latency_measured) {
    j["alloc_ns"] = histogram_json(r.alloc_ns);
    j["free_ns"] = histogram_json(r.free_ns);
  }
  return j;
}

RepetitionResult repetition_from(const json& j) {
  RepetitionResult r;
  r.seconds = j.at("seconds").get<double>();
  r.ops_per_second = j.at("ops_per_second").get<double>();
  r.stats = stats_from(j.at("stats"));
  r.upstream = upstream_from(j.at("upstream"));
  r.latency_measured = j.at("latency_measured").get<bool>();
  if (r.latency_measured) {
    r.alloc_ns = histogram_from(j.at("alloc_ns"));
    r.free_ns = histogram_from(j.at("free_ns"));
  }
  return r;
}

json memory_json(const MemoryObservation& m) {
  json timeline = json::array();
  for (const MemorySample& s : m.timeline) {
    timeline.push_back({s.op_index, s.requested_bytes, s.allocated_bytes, s.reserved_bytes, s.external_fragmentation});
  }
  return {{"timeline", std::move(timeline)},
          {"at_peak", stats_json(m.at_peak)},
          {"max_external_fragmentation", m.max_external_fragmentation},
          {"max_external_fragmentation_op", m.max_external_fragmentation_op},
          {"unreturnable_bytes_at_peak", m.unreturnable_bytes_at_peak},
          {"reserved_known", m.reserved_known},
          {"kv_token_time", m.kv_token_time},
          {"kv_committed_time", m.kv_committed_time},
          {"kv_reserved_time", m.kv_reserved_time},
          {"kv_counters", m.kv_counters}};
}

MemoryObservation memory_from(const json& j) {
  MemoryObservation m;
  for (const json& s : j.at("timeline")) {
    m.timeline.push_back({s.at(0).get<std::uint64_t>(), s.at(1).get<std::uint64_t>(), s.at(2).get<std::uint64_t>(),
                          s.at(3).get<std::uint64_t>(), s.at(4).get<double>()});
  }
  m.at_peak = stats_from(j.at("at_peak"));
  m.max_external_fragmentation = j.at("max_external_fragmentation").get<double>();
  m.max_external_fragmentation_op = j.at("max_external_fragmentation_op").get<std::uint64_t>();
  m.unreturnable_bytes_at_peak = j.at("unreturnable_bytes_at_peak").get<std::uint64_t>();
  m.reserved_known = j.at("reserved_known").get<bool>();
  m.kv_token_time = j.at("kv_token_time").get<double>();
  m.kv_committed_time = j.at("kv_committed_time").get<double>();
  m.kv_reserved_time = j.at("kv_reserved_time").get<double>();
  m.kv_counters = j.at("kv_counters").get<bool>();
  return m;
}

// --- The parent side. ---

class SystemMallocRunner final : public AllocatorRunner {
 public:
  SystemMallocRunner(SystemMalloc library, const ReplaySource& source, const FlatTrace& trace, const ReplaySettings& settings)
      : library_(std::move(library)), trace_(trace) {
    args_ = {"replay-child", "--malloc", library_.malloc};
    if (!source.workload.empty()) {
      args_.insert(args_.end(), {"--workload", source.workload});
    } else {
      args_.insert(args_.end(), {"--trace", source.trace_file, "--format", source.format});
    }
    args_.insert(args_.end(), {"--touch", std::string(touch_name(settings.touch)), "--sample-every",
                               std::to_string(settings.sample_every), "--threads", std::to_string(settings.threads)});
  }

  std::string_view name() const override { return library_.spec; }
  const std::string& config() const override { return config_; }

  RepetitionResult repetition(bool latency) override {
    const json throughput = run_pass("throughput");
    RepetitionResult out = repetition_from(throughput.at("result"));
    for (const char* metric : {"peak_rss_bytes", "page_faults", "rss_before_pass_bytes"}) {
      out.extra_metrics.emplace_back(metric, throughput.at(metric).get<double>());
    }
    if (latency) {
      // A child of its own, so that the throughput child's RSS and page faults are the throughput
      // pass's alone.
      const RepetitionResult timed = repetition_from(run_pass("latency").at("result"));
      out.alloc_ns = timed.alloc_ns;
      out.free_ns = timed.free_ns;
      out.latency_measured = timed.latency_measured;
    }
    return out;
  }

  MemoryObservation observe_memory() override { return memory_from(run_pass("memory").at("memory")); }

  std::vector<std::pair<std::string, std::string>> facts() const override {
    return {{"memory", "host"},
            {"upstream", "host"},
            {"library", library_.preload.empty() ? malloc_object_ : library_.preload},
            {"malloc", library_.malloc}};
  }

 private:
  json run_pass(const std::string& pass) {
    std::vector<std::string> args = args_;
    args.insert(args.end(), {"--pass", pass});
    const std::string output = run_malloc_child(args, library_.preload);
    try {
      json j = json::parse(output);
      if (j.at("pass").get<std::string>() != pass) throw PassFailure("the child ran another pass");
      if (j.at("ops").get<std::uint64_t>() != trace_.events) {
        throw PassFailure("the child's trace has " + std::to_string(j.at("ops").get<std::uint64_t>()) + " ops, not " +
                          std::to_string(trace_.events));
      }
      malloc_object_ = j.at("malloc_object").get<std::string>();
      return j;
    } catch (const json::exception& e) {
      throw PassFailure(std::string("the child's output is not the expected JSON: ") + e.what());
    }
  }

  const SystemMalloc library_;
  const FlatTrace& trace_;
  std::vector<std::string> args_;
  std::string config_;  // the rows take no options
  std::string malloc_object_;
};

// --- The child side. ---

struct ChildArgs {
  std::string pass, malloc, workload, trace, format = "auto", touch = "none", sample_every = "0", threads = "1";
};

std::uint64_t page_faults_so_far() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_minflt) + static_cast<std::uint64_t>(usage.ru_majflt);
}

int run_child_pass(const ChildArgs& a, std::ostream& out) {
  if (a.pass != "throughput" && a.pass != "latency" && a.pass != "memory") {
    throw InputError("replay-child: --pass must be throughput, latency or memory, not '" + a.pass + "'");
  }
  // Before anything is replayed: a library that was not preloaded must not be measured as itself.
  require_active_malloc("replay-child", a.malloc);
  const FlatTrace trace = load_flat_trace({a.workload, a.trace, a.format});
  ReplaySettings settings;
  settings.upstream_spec = "host";
  settings.touch = parse_touch(a.touch);
  settings.sample_every = parse_count_option("sample-every", a.sample_every, 0);
  settings.threads = parse_count_option("threads", a.threads, 1);
  std::unique_ptr<AllocatorRunner> runner = make_runner("system", trace, settings);

  // The flattened trace and the runner's slot table stay in this process during the pass: they are
  // rss_before_pass_bytes, and part of peak_rss_bytes.
  const bool peak_reset = reset_peak_rss();
  const std::optional<std::uint64_t> rss_before = proc_kib_field("/proc/self/status", "VmRSS");
  json j = {{"pass", a.pass}, {"malloc_library", a.malloc}, {"malloc_object", malloc_object()}, {"ops", trace.events}};
  const std::uint64_t faults_before = page_faults_so_far();
  if (a.pass == "memory") {
    j["memory"] = memory_json(runner->observe_memory());
  } else {
    j["result"] = repetition_json(runner->repetition(a.pass == "latency"));
  }
  j["page_faults"] = page_faults_so_far() - faults_before;
  j["rss_before_pass_bytes"] = rss_before.value_or(0);
  // Without the reset (a kernel without clear_refs) the peak includes the trace generator's.
  j["peak_rss_bytes"] = proc_kib_field("/proc/self/status", "VmHWM").value_or(0);
  j["peak_rss_reset"] = peak_reset;
  out << j.dump() << "\n" << std::flush;
  return kExitOk;
}

}  // namespace

std::unique_ptr<AllocatorRunner> make_system_malloc_runner(std::string_view spec, const ReplaySource& source,
                                                           const FlatTrace& trace, const ReplaySettings& settings) {
  SystemMalloc library = resolve_system_malloc(spec);
  // The child replays on real memory whatever --memory says; half of MemAvailable leaves room for the
  // child's own copy of the trace, this process and the allocator's overhead.
  if (const std::optional<std::uint64_t> available = available_memory_bytes();
      available && trace.peak_requested_bytes > *available / 2) {
    throw InputError(library.spec + " replays on host memory: " + trace.name + " needs " +
                     format_size_approx(trace.peak_requested_bytes) + " live at its peak, more than half of the " +
                     format_size_approx(*available) + " this host has available");
  }
  return std::make_unique<SystemMallocRunner>(std::move(library), source, trace, settings);
}

int replay_child_command(const std::vector<std::string>& args, std::ostream& out) {
  namespace po = boost::program_options;
  ChildArgs a;
  po::options_description options("tiermark replay-child (internal: run by a system.* replay row)");
  options.add_options()
      ("pass", po::value(&a.pass)->required(), "throughput, latency or memory")
      ("malloc", po::value(&a.malloc)->required(), "the malloc that must be serving this process (glibc, jemalloc, ...)")
      ("workload", po::value(&a.workload), "a generated workload spec")
      ("trace", po::value(&a.trace), "a trace file")
      ("format", po::value(&a.format), "the trace file's format")
      ("touch", po::value(&a.touch), "none, first or full")
      ("sample-every", po::value(&a.sample_every), "memory timeline: one sample per N ops (0: about 1000)")
      ("threads", po::value(&a.threads), "replay threads (as tiermark replay --threads)");
  parse_command_options("replay-child", options, args);
  return run_child_pass(a, out);
}

}  // namespace tiermark
