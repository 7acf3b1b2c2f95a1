#include "harness/capacity_command.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "allocators/bits.h"
#include "allocators/offline_planner.h"
#include "common/input_error.h"
#include "common/size_units.h"
#include "common/spec.h"
#include "harness/allocator_list.h"
#include "harness/atomic_file.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/replay_results.h"
#include "harness/replay_source.h"
#include "harness/results_directory.h"
#include "harness/run_context.h"
#include "harness/trace_files.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// The search's resolution: capacities are whole MiB (cudaMalloc-sized devices are GiB; a MiB is finer
// than any decision a capacity answers).
constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
// Doubling gives up here: 1 PiB, far beyond any device, still inside the simulated address space.
constexpr std::uint64_t kGiveUpBytes = std::uint64_t{1} << 50;
// Extra probes strictly between the lower bound and the answer, besides answer - 1 MiB and + 1 MiB,
// that look for a capacity the bisection stepped over (docs/capacity.md, "Monotonicity").
constexpr std::uint64_t kSpotChecks = 3;
// Traces of the llm-serve concurrency search kept at once: each allocator's bisection visits mostly
// the same max_num_seqs values, and a default llm-serve trace is about 70 MB flattened.
constexpr std::size_t kCachedTraces = 4;
// The generator option the concurrency search sets (docs/workload-llm-serve.md: vLLM's max_num_seqs,
// the most requests running at once).
constexpr const char* kConcurrencyOption = "max_num_seqs";
constexpr const char* kLowerBoundRow = "lower_bound";

struct CapacityArgs {
  std::string workload, trace, format = "auto";
  std::string allocators, capacity;
  bool planner = true;
  std::string out_dir, json_path;
  std::vector<std::string> command;
};

// Whether `trace` replays with no failed request on a device of `capacity_bytes`.
using CleanAt = std::function<bool(const FlatTrace& trace, std::uint64_t capacity_bytes)>;

struct Probe {
  std::uint64_t value;  // a capacity in bytes, or a max_num_seqs
  bool clean;
};

json probes_json(const std::vector<Probe>& probes, const char* key) {
  json out = json::array();
  for (const Probe& p : probes) out.push_back({{key, p.value}, {"clean", p.clean}});
  return out;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- the capacity search ---------------------------------------------------------------------------

struct CapacitySearch {
  std::optional<std::uint64_t> min_bytes;  // nullopt: failed at every capacity up to kGiveUpBytes
  std::vector<Probe> probes;               // in the order made
  bool monotonic_checked = false;          // every probe below the answer failed, every one at or above it was clean
  std::vector<std::uint64_t> contradictions;  // capacities whose outcome breaks that
  double seconds = 0;
};

// Bisection over whole MiB. Invariant: `lo` failed and `hi` was clean. Nothing can be clean below the
// lower bound (every byte an allocator hands out comes from the device), so lo starts at the lower
// bound rounded down, probed rather than assumed, and hi doubles from the lower bound rounded up.
CapacitySearch search_min_capacity(std::uint64_t lower_bound, const std::function<bool(std::uint64_t)>& clean_at) {
  CapacitySearch s;
  const Clock::time_point t0 = Clock::now();
  std::map<std::uint64_t, bool> seen;  // MiB -> clean
  const auto probe = [&](std::uint64_t mib) {
    if (const auto it = seen.find(mib); it != seen.end()) return it->second;
    const bool clean = clean_at(mib * kMiB);
    seen.emplace(mib, clean);
    s.probes.push_back({mib * kMiB, clean});
    return clean;
  };
  constexpr std::uint64_t kMaxMiB = kGiveUpBytes / kMiB;
  const std::uint64_t floor_mib = std::max<std::uint64_t>(1, lower_bound / kMiB);
  std::uint64_t lo = floor_mib;
  std::uint64_t hi = floor_mib;
  if (!probe(lo)) {
    hi = std::max(lo + 1, (lower_bound + kMiB - 1) / kMiB);
    while (!probe(hi)) {
      lo = hi;
      if (hi >= kMaxMiB) {
        s.seconds = seconds_since(t0);
        return s;
      }
      hi = std::min(2 * hi, kMaxMiB);
    }
    while (hi - lo > 1) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      (probe(mid) ? hi : lo) = mid;
    }
  }
  s.min_bytes = hi * kMiB;
  // The bisection assumes clean(c) implies clean(c') for c' > c. Check it where a break would matter:
  // just below and above the answer, and a few capacities between the lower bound and the answer.
  if (hi > 1) probe(hi - 1);
  probe(hi + 1);
  for (std::uint64_t i = 1; i <= kSpotChecks && hi > floor_mib + 1; ++i) {
    probe(floor_mib + (hi - 1 - floor_mib) * i / (kSpotChecks + 1));
  }
  for (const auto& [mib, clean] : seen) {
    if ((mib >= hi) != clean) s.contradictions.push_back(mib * kMiB);
  }
  s.monotonic_checked = s.contradictions.empty();
  s.seconds = seconds_since(t0);
  return s;
}

// ---- the llm-serve concurrency search --------------------------------------------------------------

std::string spec_text(const Spec& spec) {
  std::string out = spec.name;
  if (!spec.preset.empty()) out += "/" + spec.preset;
  for (std::size_t i = 0; i < spec.settings.size(); ++i) {
    out += (i == 0 ? ":" : ",") + spec.settings[i].first + "=" + spec.settings[i].second;
  }
  return out;
}

// The llm-serve spec with each max_num_seqs, generated on demand; a spec the generator refuses (no room
// for the KV cache once the activation peak of that many sequences is set aside) is remembered as such.
class ConcurrencyTraces {
 public:
  ConcurrencyTraces(Spec base, std::uint64_t capacity_bytes) : base_(std::move(base)) {
    // The simulated server sizes its KV cache from the device it runs on, as vLLM's profiling run does,
    // unless the spec says otherwise.
    const bool has_gpu_memory = std::any_of(base_.settings.begin(), base_.settings.end(),
                                            [](const auto& kv) { return kv.first == "gpu_memory"; });
    if (!has_gpu_memory) base_.settings.emplace_back("gpu_memory", format_size(capacity_bytes));
  }

  std::string spec(std::uint64_t max_num_seqs) const {
    Spec s = base_;
    s.settings.emplace_back(kConcurrencyOption, std::to_string(max_num_seqs));
    return spec_text(s);
  }

  // The trace, or nullptr with `why` set when the generator refuses the spec.
  std::shared_ptr<const FlatTrace> get(std::uint64_t max_num_seqs, std::string* why) {
    if (const auto it = refused_.find(max_num_seqs); it != refused_.end()) {
      *why = it->second;
      return nullptr;
    }
    for (const auto& [n, trace] : traces_) {
      if (n == max_num_seqs) return trace;
    }
    std::shared_ptr<const FlatTrace> trace;
    try {
      trace = std::make_shared<const FlatTrace>(flatten_workload(spec(max_num_seqs)));
    } catch (const InputError& e) {
      refused_.emplace(max_num_seqs, e.what());
      *why = e.what();
      return nullptr;
    }
    traces_.emplace_back(max_num_seqs, trace);
    if (traces_.size() > kCachedTraces) traces_.pop_front();
    return trace;
  }

 private:
  Spec base_;
  std::deque<std::pair<std::uint64_t, std::shared_ptr<const FlatTrace>>> traces_;
  std::map<std::uint64_t, std::string> refused_;
};

// The largest value of counter `name` in the trace (0 without one).
std::uint64_t counter_peak(const FlatTrace& trace, std::string_view name) {
  const TagId tag = trace.counter_tag(name);
  std::uint64_t peak = 0;
  if (tag == kNoTag) return peak;
  for (const CounterSample& c : trace.counters) {
    if (c.tag == tag) peak = std::max(peak, c.value);
  }
  return peak;
}

struct ConcurrencySearch {
  std::optional<std::uint64_t> max_num_seqs;  // nullopt: not even one request at a time fits
  std::uint64_t peak_running = 0;             // sched.running's peak in the answer's trace
  std::vector<Probe> probes;
  std::string note;
  double seconds = 0;
};

// Bisection over max_num_seqs in [1, limit]; invariant: lo clean, hi failed (or refused).
ConcurrencySearch search_max_concurrency(ConcurrencyTraces& traces, std::uint64_t limit, std::uint64_t capacity_bytes,
                                         const CleanAt& clean_at) {
  ConcurrencySearch s;
  const Clock::time_point t0 = Clock::now();
  std::string last_refusal;
  const auto probe = [&](std::uint64_t n) {
    std::string why;
    const std::shared_ptr<const FlatTrace> trace = traces.get(n, &why);
    const bool clean = trace != nullptr && clean_at(*trace, capacity_bytes);
    if (trace == nullptr) last_refusal = why;
    s.probes.push_back({n, clean});
    return clean;
  };
  std::uint64_t answer = 0;
  if (!probe(1)) {
    s.note = last_refusal.empty() ? "fails with one request at a time" : last_refusal;
  } else if (probe(limit)) {
    answer = limit;
    s.note = "every request fits (max_num_seqs = requests)";
  } else {
    std::uint64_t lo = 1, hi = limit;
    while (hi - lo > 1) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      (probe(mid) ? lo : hi) = mid;
    }
    answer = lo;
  }
  if (answer != 0) {
    s.max_num_seqs = answer;
    std::string why;
    if (const auto trace = traces.get(answer, &why)) s.peak_running = counter_peak(*trace, "sched.running");
  }
  s.seconds = seconds_since(t0);
  return s;
}

// ---- rows ------------------------------------------------------------------------------------------

struct Row {
  std::string allocator, config;
  CleanAt clean_at;  // empty for the lower bound row
  json run;
};

bool allocator_clean_at(const std::string& spec, const FlatTrace& trace, std::uint64_t capacity_bytes) {
  ReplaySettings settings;
  settings.upstream_spec = "simulated:capacity=" + format_size(capacity_bytes);
  std::unique_ptr<AllocatorRunner> runner;
  try {
    runner = make_runner(spec, trace, settings);
  } catch (const InputError&) {
    // The spec was built once at kGiveUpBytes, so what fails here is this capacity (an allocator that
    // takes a fixed first chunk or region when it is built, larger than the device).
    return false;
  }
  return runner->repetition(false).stats.failed_requests == 0;
}

// The offline plan of the last trace asked for (the min-capacity search asks for one trace many times).
class PlannerProbe {
 public:
  bool clean_at(const FlatTrace& trace, std::uint64_t capacity_bytes) {
    if (&trace != trace_) {
      buffers_ = planner_buffers(trace);
      plan_ = plan_greedy_by_size(buffers_);
      trace_ = &trace;
    }
    ReplaySettings settings;
    settings.upstream_spec = "simulated:capacity=" + format_size(capacity_bytes);
    std::unique_ptr<AllocatorRunner> runner;
    try {
      runner = make_planner_runner(trace, buffers_, plan_, settings);
    } catch (const InputError&) {
      return false;
    }
    return runner->repetition(false).stats.failed_requests == 0;
  }

 private:
  const FlatTrace* trace_ = nullptr;
  std::vector<PlannedBuffer> buffers_;
  MemoryPlan plan_;
};

std::string mib_cell(const json& value) {
  if (!value.is_number()) return "-";
  const std::uint64_t bytes = value.get<std::uint64_t>();
  if (bytes % kMiB == 0) return std::to_string(bytes / kMiB) + " MiB";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f MiB", double(bytes) / double(kMiB));
  return buffer;
}

void print_capacity_table(const json& document, bool concurrency, std::ostream& out) {
  const json& workload = document["workloads"][0];
  std::vector<const json*> runs;
  for (const json& run : document["runs"]) runs.push_back(&run);
  // Smallest capacity first; rows that failed at every capacity last.
  const auto key = [](const json* run) {
    const json& v = (*run)["metrics"]["min_capacity_bytes"];
    return v.is_number() ? v.get<std::uint64_t>() : ~std::uint64_t{0};
  };
  std::stable_sort(runs.begin(), runs.end(), [&](const json* a, const json* b) { return key(a) < key(b); });

  out << "\n" << workload["name"].get<std::string>() << "   lower bound "
      << format_size_approx(workload["lower_bound_bytes"].get<std::uint64_t>());
  if (workload["planner_bytes"].is_number()) out << ", planner arena " << format_size_approx(workload["planner_bytes"].get<std::uint64_t>());
  out << ", " << workload["events"].get<std::uint64_t>() << " events\n";
  if (concurrency) out << "  max concurrency on a " << format_size(document["context"]["capacity_bytes"].get<std::uint64_t>()) << " device\n";
  char line[512];
  if (concurrency) {
    std::snprintf(line, sizeof line, "  %-18s %14s %9s %7s %8s %10s %8s %7s  %s\n", "allocator", "min capacity", "x lower",
                  "probes", "seconds", "max_seqs", "running", "probes", "note");
  } else {
    std::snprintf(line, sizeof line, "  %-18s %14s %9s %7s %8s  %s\n", "allocator", "min capacity", "x lower", "probes",
                  "seconds", "note");
  }
  out << line;
  for (const json* run : runs) {
    const json& m = (*run)["metrics"];
    char ratio[32] = "-";
    if (m["capacity_over_lower_bound"].is_number()) std::snprintf(ratio, sizeof ratio, "%.3f", m["capacity_over_lower_bound"].get<double>());
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.2f", m["seconds"].get<double>());
    const std::string note = run->value("note", std::string());
    if (concurrency) {
      const std::string seqs = m["max_num_seqs"].is_number() ? std::to_string(m["max_num_seqs"].get<std::uint64_t>()) : "-";
      const std::string running = m["max_concurrent_requests"].is_number() ? std::to_string(m["max_concurrent_requests"].get<std::uint64_t>()) : "-";
      std::snprintf(line, sizeof line, "  %-18s %14s %9s %7llu %8s %10s %8s %7llu  %s\n", (*run)["allocator"].get<std::string>().c_str(),
                    mib_cell(m["min_capacity_bytes"]).c_str(), ratio, static_cast<unsigned long long>(m["probes"].get<std::uint64_t>()),
                    seconds, seqs.c_str(), running.c_str(),
                    static_cast<unsigned long long>(m["concurrency_probes"].get<std::uint64_t>()), note.c_str());
    } else {
      std::snprintf(line, sizeof line, "  %-18s %14s %9s %7llu %8s  %s\n", (*run)["allocator"].get<std::string>().c_str(),
                    mib_cell(m["min_capacity_bytes"]).c_str(), ratio, static_cast<unsigned long long>(m["probes"].get<std::uint64_t>()),
                    seconds, note.c_str());
    }
    out << line;
  }
}

int run_capacity(const CapacityArgs& a, std::ostream& out) {
  if (a.workload.empty() == a.trace.empty()) throw InputError("capacity: give exactly one of --workload SPEC or --trace FILE");
  if (a.allocators.empty()) throw InputError("capacity: --allocator LIST is required (a comma list of allocator specs, or 'all')");

  // Everything that can be wrong with the input is found before the first probe.
  std::optional<std::uint64_t> device_bytes;
  std::optional<Spec> serve_spec;
  if (!a.capacity.empty()) {
    device_bytes = parse_size(a.capacity);
    if (!device_bytes || *device_bytes == 0) throw InputError("--capacity: '" + a.capacity + "' is not a size above 0 (e.g. 40GiB, 512MiB)");
    if (*device_bytes > kGiveUpBytes) throw InputError("--capacity: '" + a.capacity + "' is above 1PiB");
    if (a.workload.empty()) throw InputError("--capacity: the concurrency search regenerates the workload: it needs --workload llm-serve...");
    serve_spec = parse_spec(a.workload);
    if (serve_spec->name != "llm-serve") {
      throw InputError("--capacity: the concurrency search is for llm-serve workloads, not '" + serve_spec->name + "'");
    }
    for (const auto& [key, value] : serve_spec->settings) {
      if (key == kConcurrencyOption) {
        throw InputError(std::string("--capacity: the search sets ") + kConcurrencyOption + "; leave it out of the spec");
      }
    }
  }
  const ReplaySource source{a.workload, a.trace, a.format};
  const FlatTrace trace = load_flat_trace(source);
  const std::string source_kind = source.kind();
  std::uint64_t concurrency_limit = 0;
  if (serve_spec) {
    // The canonical spec in the metadata holds every option with its value, `requests` among them.
    const std::optional<std::string> canonical = trace.metadata.get("spec");
    if (canonical) {
      for (const auto& [key, value] : parse_spec(*canonical).settings) {
        if (key == "requests") concurrency_limit = std::stoull(value);
      }
    }
    if (concurrency_limit == 0) throw InputError("--capacity: " + a.workload + ": the generated trace does not say how many requests it has");
  }

  std::vector<Row> rows;
  std::vector<std::string> notes;
  const bool all = a.allocators == "all";
  ReplaySettings widest;
  widest.upstream_spec = "simulated:capacity=" + format_size(kGiveUpBytes);
  for (const std::string& spec : allocator_specs(a.allocators)) {
    try {
      if (spec.rfind("system", 0) == 0) {
        throw InputError("capacity: '" + spec + "' is the process's own malloc, which ignores the device capacity");
      }
      // Built once on the widest device the search probes: a bad spec is bad input here, and a probe's
      // failure to build one later is that capacity's failure.
      const std::unique_ptr<AllocatorRunner> runner = make_runner(spec, trace, widest);
      rows.push_back({std::string(runner->name()), runner->config(),
                      [spec](const FlatTrace& t, std::uint64_t bytes) { return allocator_clean_at(spec, t, bytes); }, json::object()});
    } catch (const InputError& e) {
      if (!all) throw;
      notes.push_back(spec + " skipped: " + e.what());
    }
  }
  check_output_file(a.json_path, "--json");
  const std::filesystem::path dir = results_directory(a.out_dir);

  std::optional<std::uint64_t> planner_bytes;
  double planner_seconds = 0;
  if (a.planner && trace.allocs != 0) {
    const Clock::time_point t0 = Clock::now();
    planner_bytes = plan_greedy_by_size(planner_buffers(trace)).arena_bytes;
    planner_seconds = seconds_since(t0);
    auto planner = std::make_shared<PlannerProbe>();
    rows.push_back({std::string(PlannedAllocator::kName), std::string(PlannedAllocator::kName),
                    [planner](const FlatTrace& t, std::uint64_t bytes) { return planner->clean_at(t, bytes); }, json::object()});
  }
  rows.push_back({kLowerBoundRow, "", nullptr, json::object()});

  json context = run_context();
  context["command"] = a.command;
  context["memory"] = "simulated";
  context["resolution_bytes"] = kMiB;
  if (device_bytes) {
    context["capacity_bytes"] = *device_bytes;
    context["concurrency_option"] = kConcurrencyOption;
  }
  json document = {{"schema", kResultsSchema}, {"context", context}, {"workloads", json::array()}, {"runs", json::array()}, {"notes", notes}};
  document["workloads"].push_back(workload_json(trace, source_kind, planner_bytes, planner_seconds));

  const std::uint64_t lower_bound = trace.peak_requested_bytes;
  std::optional<ConcurrencyTraces> serve_traces;
  if (serve_spec) serve_traces.emplace(*serve_spec, *device_bytes);
  for (Row& row : rows) {
    json metrics = json::object();
    std::string note;
    if (!row.clean_at) {
      metrics["min_capacity_bytes"] = lower_bound;
      metrics["lower_bound_bytes"] = lower_bound;
      metrics["capacity_over_lower_bound"] = 1.0;
      metrics["probes"] = 0;
      metrics["seconds"] = 0.0;
      note = "live requested bytes at the trace's peak";
    } else {
      const CapacitySearch s = search_min_capacity(lower_bound, [&](std::uint64_t bytes) { return row.clean_at(trace, bytes); });
      metrics["min_capacity_bytes"] = s.min_bytes ? json(*s.min_bytes) : json(nullptr);
      metrics["lower_bound_bytes"] = lower_bound;
      metrics["capacity_over_lower_bound"] =
          s.min_bytes && lower_bound != 0 ? json(double(*s.min_bytes) / double(lower_bound)) : json(nullptr);
      metrics["probes"] = s.probes.size();
      metrics["seconds"] = s.seconds;
      metrics["monotonic_checked"] = s.monotonic_checked;
      row.run["capacity_probes"] = probes_json(s.probes, "capacity_bytes");
      if (!s.min_bytes) {
        note = "fails at every capacity";
      } else if (!s.monotonic_checked) {
        note = "not monotonic: the outcome at";
        for (const std::uint64_t c : s.contradictions) note += " " + std::to_string(c / kMiB);
        note += " MiB disagrees with the answer";
      }
    }
    if (row.allocator == PlannedAllocator::kName) metrics["planner_bytes"] = planner_bytes ? json(*planner_bytes) : json(nullptr);
    if (serve_traces) {
      const CleanAt clean_at = row.clean_at ? row.clean_at : CleanAt([](const FlatTrace& t, std::uint64_t bytes) {
        return t.peak_requested_bytes <= bytes;
      });
      const ConcurrencySearch c = search_max_concurrency(*serve_traces, concurrency_limit, *device_bytes, clean_at);
      // max_num_seqs is the server's limit; max_concurrent_requests what actually ran at once under it
      // (the KV budget the server derives from the device may bind first).
      metrics["max_num_seqs"] = c.max_num_seqs ? json(*c.max_num_seqs) : json(nullptr);
      metrics["max_concurrent_requests"] = c.max_num_seqs ? json(c.peak_running) : json(nullptr);
      metrics["concurrency_probes"] = c.probes.size();
      metrics["concurrency_seconds"] = c.seconds;
      row.run["concurrency_spec"] = c.max_num_seqs ? json(serve_traces->spec(*c.max_num_seqs)) : json(nullptr);
      row.run["concurrency_probes"] = probes_json(c.probes, kConcurrencyOption);
      if (!c.note.empty()) note += (note.empty() ? "" : "; ") + c.note;
    }
    json run = {{"workload", trace.name}, {"allocator", row.allocator}, {"config", row.config}, {"memory", "simulated"},
                {"metrics", metrics}};
    for (auto& [key, value] : row.run.items()) run[key] = value;
    if (!note.empty()) run["note"] = note;
    row.run = std::move(run);
    document["runs"].push_back(row.run);
    write_results(document, dir.string(), a.json_path, "capacity");  // every finished row is on disk
  }
  write_results(document, dir.string(), a.json_path, "capacity");
  print_capacity_table(document, serve_traces.has_value(), out);
  for (const std::string& note : notes) out << "note: " << note << "\n";
  out << "\nresults: " << (dir / "capacity.json").string() << "\n";
  return kExitOk;
}

}  // namespace

int capacity_command(const std::vector<std::string>& args, std::ostream& out) {
  CapacityArgs a;
  a.command = args;
  a.command.insert(a.command.begin(), {"tiermark", "capacity"});
  po::options_description options("tiermark capacity");
  options.add_options()
      ("workload", po::value(&a.workload), "a generated workload spec, e.g. transformer/gpt2-small:steps=2")
      ("trace", po::value(&a.trace), "a trace file (.csv, .tmt, or an RMM log)")
      ("format", po::value(&a.format), "the trace file's format: auto (default), csv, tmt, rmm")
      ("allocator", po::value(&a.allocators), "comma list of allocator specs (buddy:arena=64MiB,caching.pytorch), or all")
      ("capacity", po::value(&a.capacity), "llm-serve only: also find the largest max_num_seqs that replays on a device of this size (e.g. 40GiB)")
      ("no-planner", "skip the offline planner row")
      ("out", po::value(&a.out_dir), "results directory (default results/<date>_<host>_<commit>/)")
      ("json", po::value(&a.json_path), "also write the JSON results to this file")
      ("help,h", "show this help");
  const po::variables_map vm = parse_command_options("capacity", options, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark capacity (--workload SPEC | --trace FILE) --allocator LIST|all [--capacity SIZE] [options]\n" << options;
    return kExitOk;
  }
  a.planner = vm.count("no-planner") == 0;
  return run_capacity(a, out);
}

}  // namespace tiermark
