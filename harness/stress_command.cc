// `tiermark stress` and its hidden child command (stress_command.h, docs/stress.md).
//
// Invariants: every input is checked before the first row runs (options, kernel, allocators, the
// output directory and the --json file are probed), so bad input exits 2 with nothing written; the
// results are saved after every row, each file written whole (atomic_file.h); a row's memory timeline
// has one column of times and one of bytes, of equal length, the last sample taken after the kernel
// freed everything.
#include "harness/stress_command.h"

#include <boost/program_options.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "allocators/registry.h"
#include "common/input_error.h"
#include "common/size_units.h"
#include "common/spec.h"
#include "harness/allocator_list.h"
#include "harness/atomic_file.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/malloc_child.h"
#include "harness/progress_line.h"
#include "harness/replay_results.h"
#include "harness/results_directory.h"
#include "harness/run_context.h"
#include "harness/stress_targets.h"
#include "harness/proc_files.h"
#include "replay/replay_runner.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;
using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// The soak's growth gate, as snmalloc's cross-thread memory growth test (src/test/perf/
// crossthread_memgrowth, snmalloc issue #814) does it: leave out the sample taken after the final
// drain, then the mean of the samples in the last quarter may be at most 1.5x the mean of those in
// the second quarter (the first quarter is warm-up); fewer than 8 samples are not evaluated.
constexpr double kGrowthLimit = 1.5;
constexpr std::size_t kMinGrowthSamples = 8;

// The counters of a kernel's result, in the order the JSON gives them (one list for the metrics,
// the child's report and its parsing).
#define TIERMARK_STRESS_COUNTERS(X) \
  X(allocs)                         \
  X(frees)                          \
  X(failed_allocs)                  \
  X(cross_thread_frees)             \
  X(verified_ops)                   \
  X(corruptions)                    \
  X(bytes_allocated)                \
  X(untimed_ops)

// The options of one run of a kernel, as given (text, validated by plan_of), shared by `stress` and
// `stress-child`.
struct KernelArgs {
  std::string kernel = "churn", threads = "2", seconds, ops, sizes = "log-uniform", min_size = "16", max_size = "1MiB", seed = "1",
              sample_interval = "1";
  bool verify = false;
};

struct StressArgs {
  KernelArgs k;
  std::string allocators, capacity, memory = "host", out_dir, json_path;
  std::vector<std::string> command;
};

void add_kernel_options(po::options_description& options, KernelArgs& k) {
  options.add_options()
      ("kernel", po::value(&k.kernel), "the stress kernel: churn (default), larson, xmalloc-test, cache-scratch, cache-thrash, glibc-thread, mstress, rptest")
      ("threads", po::value(&k.threads), "threads the kernel runs (default 2)")
      ("seconds", po::value(&k.seconds), "run each allocator for this long (give this or --ops)")
      ("ops", po::value(&k.ops), "run each allocator for this many allocations in total (give this or --seconds)")
      ("verify", po::bool_switch(&k.verify), "fill every block with a pattern, check it on free, and check that no two live blocks overlap")
      ("sizes", po::value(&k.sizes), "request sizes: uniform, log-uniform (default) or dl-mix (the built-in deep-learning workloads' size mix)")
      ("min-size", po::value(&k.min_size), "smallest request (default 16)")
      ("max-size", po::value(&k.max_size), "largest request (default 1MiB)")
      ("seed", po::value(&k.seed), "random seed (default 1)")
      ("sample-interval", po::value(&k.sample_interval), "seconds between memory samples (default 1, as snmalloc's memgrowth test)");
}

// A positive, finite decimal ("3", "0.5"); InputError otherwise.
double parse_seconds(std::string_view option, const std::string& text) {
  double value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(value) || !(value > 0)) {
    throw InputError("--" + std::string(option) + ": '" + text + "' is not a number of seconds above 0");
  }
  return value;
}

std::uint64_t parse_positive_size(std::string_view option, const std::string& text) {
  const std::optional<std::uint64_t> value = parse_size(text);
  if (!value || *value == 0) throw InputError("--" + std::string(option) + ": '" + text + "' is not a size above 0 (e.g. 64, 4KiB, 1MiB)");
  return *value;
}

constexpr std::pair<std::string_view, SizeDistribution> kDistributions[] = {
    {"uniform", SizeDistribution::kUniform}, {"log-uniform", SizeDistribution::kLogUniform}, {"dl-mix", SizeDistribution::kDlMix}};

struct StressPlan {
  const StressKernel* kernel = nullptr;
  StressSettings settings;  // without `sample`
};

StressPlan plan_of(const KernelArgs& k) {
  StressPlan plan;
  plan.kernel = find_stress_kernel(k.kernel);
  if (plan.kernel == nullptr) {
    std::string known;
    for (const StressKernel& kernel : stress_kernels()) known += (known.empty() ? "" : ", ") + std::string(kernel.name);
    throw InputError("--kernel: unknown kernel '" + k.kernel + "' (known: " + known + ")");
  }
  StressSettings& s = plan.settings;
  const std::uint64_t threads = parse_count_option("threads", k.threads, 1);
  if (threads > 1024) throw InputError("--threads: '" + k.threads + "' is more than 1024");
  s.threads = static_cast<int>(threads);
  if (k.seconds.empty() == k.ops.empty()) throw InputError("stress: give exactly one of --seconds S or --ops N");
  if (!k.seconds.empty()) s.seconds = parse_seconds("seconds", k.seconds);
  if (!k.ops.empty()) s.ops = parse_count_option("ops", k.ops, 1);
  s.verify = k.verify;
  const auto distribution = std::find_if(std::begin(kDistributions), std::end(kDistributions), [&](const auto& d) { return d.first == k.sizes; });
  if (distribution == std::end(kDistributions)) throw InputError("--sizes: unknown distribution '" + k.sizes + "' (known: uniform, log-uniform, dl-mix)");
  s.sizes = distribution->second;
  s.min_size = parse_positive_size("min-size", k.min_size);
  s.max_size = parse_positive_size("max-size", k.max_size);
  if (s.min_size > s.max_size) throw InputError("--min-size " + k.min_size + " is above --max-size " + k.max_size);
  s.seed = parse_count_option("seed", k.seed, 0);
  s.sample_interval_seconds = parse_seconds("sample-interval", k.sample_interval);
  return plan;
}

// Memory over a run: seconds since the kernel started, and bytes (reserved, or resident).
struct Timeline {
  std::vector<double> seconds;
  std::vector<std::uint64_t> bytes;
};

struct Growth {
  std::optional<double> ratio;
  std::string gate;  // "pass", "fail" or "not evaluated"
};

Growth growth_gate(const std::vector<std::uint64_t>& bytes) {
  if (bytes.size() < kMinGrowthSamples) return {std::nullopt, "not evaluated"};
  const std::size_t n = bytes.size() - 1;  // the last sample follows the final drain
  const auto mean = [&](std::size_t lo, std::size_t hi) {
    double sum = 0;
    for (std::size_t i = lo; i <= hi; ++i) sum += static_cast<double>(bytes[i]);
    return sum / static_cast<double>(hi - lo + 1);
  };
  const double second = mean(n / 4, n / 2);
  const double last = mean(3 * n / 4, n - 1);
  if (second == 0) return last == 0 ? Growth{1.0, "pass"} : Growth{std::nullopt, "fail"};
  const double ratio = last / second;
  return {ratio, ratio <= kGrowthLimit ? "pass" : "fail"};
}

// Runs `plan` against `target`, sampling `bytes()` into `timeline`.
StressResult run_kernel(const StressPlan& plan, StressTarget& target, const std::function<std::uint64_t()>& bytes, Timeline& timeline) {
  StressSettings settings = plan.settings;
  const Clock::time_point start = Clock::now();
  settings.sample = [&] {
    timeline.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    timeline.bytes.push_back(bytes());
  };
  return plan.kernel->run(target, settings);
}

json result_json(const StressResult& r) {
  json j;
#define TIERMARK_COUNTER_JSON(name) j[#name] = r.counters.name;
  TIERMARK_STRESS_COUNTERS(TIERMARK_COUNTER_JSON)
#undef TIERMARK_COUNTER_JSON
  j["seconds"] = r.seconds;
  j["first_corruption"] = r.first_corruption;
  return j;
}

StressResult result_from(const json& j) {
  StressResult r;
#define TIERMARK_COUNTER_FROM(name) r.counters.name = j.at(#name).get<std::uint64_t>();
  TIERMARK_STRESS_COUNTERS(TIERMARK_COUNTER_FROM)
#undef TIERMARK_COUNTER_FROM
  r.seconds = j.at("seconds").get<double>();
  r.first_corruption = j.at("first_corruption").get<std::string>();
  return r;
}

// What one row measured, in whichever process it ran.
struct Measured {
  StressResult result;
  Timeline timeline;
  std::string memory_column;  // "reserved_bytes" or "rss_bytes"
  std::string peak_key;       // "peak_reserved_bytes" or "peak_rss_bytes"
  std::optional<std::uint64_t> peak_bytes;
  std::vector<std::string> problems;  // what makes the row fail besides corruptions and growth
};

// The run's metrics, growth gate, timeline and notes; true when the row is clean.
bool add_measured(json& run, const Measured& m) {
  const StressResult& r = m.result;
  json metrics;
  // Operations of the timed phase only: setup outside it (larson's warm-up) has no time to go with.
  const std::uint64_t timed_ops = r.counters.allocs + r.counters.frees - r.counters.untimed_ops;
  metrics["ops_per_second"] = r.seconds > 0 ? double(timed_ops) / r.seconds : 0.0;
  metrics["seconds"] = r.seconds;
#define TIERMARK_COUNTER_METRIC(name) metrics[#name] = r.counters.name;
  TIERMARK_STRESS_COUNTERS(TIERMARK_COUNTER_METRIC)
#undef TIERMARK_COUNTER_METRIC
  if (m.peak_bytes) metrics[m.peak_key] = *m.peak_bytes;
  const Growth growth = growth_gate(m.timeline.bytes);
  metrics["memory_growth"] = growth.ratio ? json(*growth.ratio) : json(nullptr);
  run["metrics"] = std::move(metrics);
  run["growth_gate"] = growth.gate;
  run["timeline"] = {{"seconds", m.timeline.seconds}, {m.memory_column, m.timeline.bytes}};
  if (!r.first_corruption.empty()) run["first_corruption"] = r.first_corruption;
  std::vector<std::string> notes = m.problems;
  if (r.counters.failed_allocs != 0) notes.push_back(std::to_string(r.counters.failed_allocs) + " failed allocations");
  if (!notes.empty()) {
    std::string note;
    for (const std::string& n : notes) note += (note.empty() ? "" : "; ") + n;
    run["note"] = note;
  }
  if (!m.problems.empty()) run["failed"] = true;
  return r.counters.corruptions == 0 && growth.gate != "fail" && m.problems.empty();
}

// ---- rows -------------------------------------------------------------------------------------------

struct Row {
  std::string spec;
  std::optional<SystemMalloc> malloc;                               // system.* rows
  std::function<std::unique_ptr<LockedAllocatorTarget>()> make_target;  // the others
};

std::unique_ptr<LockedAllocatorTarget> make_locked_target(const std::string& spec, const std::string& upstream_spec) {
  std::unique_ptr<Upstream> upstream = make_upstream(upstream_spec);
  std::unique_ptr<Allocator> allocator = make_allocator(spec, *upstream);
  return std::make_unique<LockedAllocatorTarget>(std::move(upstream), std::move(allocator));
}

// One of tiermark's allocators, in this process under a lock.
Measured measure_allocator(const StressPlan& plan, LockedAllocatorTarget& target) {
  Measured m;
  const bool reserved_known = target.stats().reserved_known;
  m.memory_column = reserved_known ? "reserved_bytes" : "rss_bytes";
  m.peak_key = reserved_known ? "peak_reserved_bytes" : "peak_rss_bytes";
  const bool reset = !reserved_known && reset_peak_rss();
  m.result = run_kernel(plan, target, [&]() -> std::uint64_t { return reserved_known ? target.stats().reserved_bytes.current : current_rss_bytes(); },
                        m.timeline);
  const AllocatorStats stats = target.stats();
  if (reserved_known) {
    m.peak_bytes = stats.reserved_bytes.peak;
  } else if (reset) {
    m.peak_bytes = proc_kib_field("/proc/self/status", "VmHWM");
  }
  if (const std::string broken = target.check_invariants(); !broken.empty()) m.problems.push_back("invariant broken after the run: " + broken);
  if (stats.allocs != stats.frees || stats.allocated_bytes.current != 0) {
    m.problems.push_back(std::to_string(stats.allocs - stats.frees) + " blocks (" + std::to_string(stats.allocated_bytes.current) +
                         " bytes) still allocated after the kernel");
  }
  return m;
}

std::vector<std::string> child_args(const KernelArgs& k, const std::string& malloc) {
  std::vector<std::string> args = {"stress-child", "--malloc", malloc, "--kernel", k.kernel, "--threads", k.threads,
                                   "--sizes", k.sizes, "--min-size", k.min_size, "--max-size", k.max_size,
                                   "--seed", k.seed, "--sample-interval", k.sample_interval};
  if (!k.seconds.empty()) args.insert(args.end(), {"--seconds", k.seconds});
  if (!k.ops.empty()) args.insert(args.end(), {"--ops", k.ops});
  if (k.verify) args.push_back("--verify");
  return args;
}

// A system.* row: the kernel in a child process with the row's malloc preloaded. Throws PassFailure
// when the child fails or says something unexpected.
Measured measure_system_malloc(const KernelArgs& k, const SystemMalloc& malloc, json& run) {
  const std::string output = run_malloc_child(child_args(k, malloc.malloc), malloc.preload);
  Measured m;
  try {
    const json j = json::parse(output);
    m.result = result_from(j.at("result"));
    m.memory_column = "rss_bytes";
    m.peak_key = "peak_rss_bytes";
    m.timeline.seconds = j.at("timeline").at("seconds").get<std::vector<double>>();
    m.timeline.bytes = j.at("timeline").at("rss_bytes").get<std::vector<std::uint64_t>>();
    if (m.timeline.seconds.size() != m.timeline.bytes.size()) throw PassFailure("the child's timeline columns differ in length");
    m.peak_bytes = j.at("peak_rss_bytes").get<std::uint64_t>();
    run["library"] = malloc.preload.empty() ? j.at("malloc_object").get<std::string>() : malloc.preload;
    run["malloc"] = malloc.malloc;
  } catch (const json::exception& e) {
    throw PassFailure(std::string("the child's output is not the expected JSON: ") + e.what());
  }
  return m;
}

// ---- output -----------------------------------------------------------------------------------------

std::string fixed_text(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

std::string count_cell(const json& metrics, const char* key) {
  return metrics.contains(key) ? std::to_string(metrics[key].get<std::uint64_t>()) : "-";
}

void print_stress_table(const json& document, std::ostream& out) {
  const json& c = document["context"];
  out << "\n" << document["workloads"][0]["name"].get<std::string>() << "   " << c["threads"].get<int>() << " threads, "
      << (c["seconds"].is_number() ? fixed_text(c["seconds"].get<double>(), 1) + " s" : std::to_string(c["ops"].get<std::uint64_t>()) + " allocations")
      << (c["verify"].get<bool>() ? ", verified" : ", not verified");
  // Only the churn kernel draws from --sizes; the peer kernels keep their originals' sizes.
  if (document["workloads"][0]["name"] == "stress/churn") {
    out << ", " << c["sizes"].get<std::string>() << " sizes " << format_size_approx(c["min_size_bytes"].get<std::uint64_t>())
        << " to " << format_size_approx(c["max_size_bytes"].get<std::uint64_t>());
  } else {
    out << ", the kernel's own sizes (docs/stress-kernels.md)";
  }
  out << ", " << c["memory"].get<std::string>() << " memory\n";
  char line[400];
  const char* format = "  %-18s %-9s %11s %10s %9s %9s %10s %7s %13s %7s %-13s  %s\n";
  std::snprintf(line, sizeof line, format, "allocator", "result", "ops/s", "allocs", "failed", "x-thread", "verified", "corrupt",
                "peak memory", "growth", "gate", "note");
  out << line;
  for (const json& run : document["runs"]) {
    const json metrics = run.value("metrics", json::object());
    const bool failed = run.value("failed", false);
    const bool corrupt = metrics.value("corruptions", std::uint64_t{0}) != 0;
    const std::string gate = run.value("growth_gate", std::string("-"));
    const char* result = failed ? "FAILED" : corrupt ? "CORRUPT" : gate == "fail" ? "GROWTH" : "ok";
    std::string peak = "-";
    if (metrics.contains("peak_reserved_bytes")) peak = format_size_approx(metrics["peak_reserved_bytes"].get<std::uint64_t>());
    if (metrics.contains("peak_rss_bytes")) peak = format_size_approx(metrics["peak_rss_bytes"].get<std::uint64_t>()) + " RSS";
    const std::string growth = metrics.contains("memory_growth") && metrics["memory_growth"].is_number()
                                   ? fixed_text(metrics["memory_growth"].get<double>(), 2) : "-";
    const std::string ops = metrics.contains("ops_per_second") ? fixed_text(metrics["ops_per_second"].get<double>(), 0) : "-";
    std::string note = run.value("note", std::string());
    if (run.contains("first_corruption")) note += (note.empty() ? "" : "; ") + std::string("first: ") + run["first_corruption"].get<std::string>();
    std::snprintf(line, sizeof line, format, run["allocator"].get<std::string>().c_str(), result, ops.c_str(),
                  count_cell(metrics, "allocs").c_str(), count_cell(metrics, "failed_allocs").c_str(),
                  count_cell(metrics, "cross_thread_frees").c_str(), count_cell(metrics, "verified_ops").c_str(),
                  count_cell(metrics, "corruptions").c_str(), peak.c_str(), growth.c_str(), gate.c_str(), note.c_str());
    out << line;
  }
}

// Throws InputError now, before anything runs, when `path` cannot be written later.
void probe_writable(const std::string& option, const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw InputError("--" + option + " " + path.string() + ": is a directory");
  try {
    AtomicFile probe(path.string());  // a temporary next to it, removed unused
  } catch (const InputError& e) {
    throw InputError("--" + option + " " + e.what());
  }
}

int run_stress(const StressArgs& a, std::ostream& out) {
  if (a.allocators.empty()) throw InputError("stress: --allocator LIST is required (a comma list of allocator specs, or 'all')");
  const StressPlan plan = plan_of(a.k);
  if (a.memory != "host" && a.memory != "simulated") throw InputError("--memory: unknown value '" + a.memory + "' (known: host, simulated)");
  std::string upstream_spec = a.memory;
  std::optional<std::uint64_t> capacity;
  if (!a.capacity.empty()) {
    capacity = parse_positive_size("capacity", a.capacity);
    upstream_spec += ":capacity=" + format_size(*capacity);
  }
  make_upstream(upstream_spec);  // a capacity the memory source refuses is bad input

  // Every row is built once here, so that a bad spec is bad input before anything runs.
  const bool all = a.allocators == "all";
  std::vector<std::string> specs = allocator_specs(a.allocators);
  if (all) {
    for (std::string& spec : system_malloc_specs()) specs.push_back(std::move(spec));
  }
  std::vector<Row> rows;
  std::vector<std::string> notes;
  for (const std::string& spec : specs) {
    try {
      if (is_system_malloc_spec(spec)) {
        rows.push_back({spec, resolve_system_malloc(spec), {}});
        continue;
      }
      if (parse_spec(spec).name == "system" && a.memory != "host") {
        throw InputError("system is this process's own malloc and cannot run on a simulated device: use --memory host, or system.glibc");
      }
      make_locked_target(spec, upstream_spec);
      rows.push_back({spec, std::nullopt, [spec, upstream_spec] { return make_locked_target(spec, upstream_spec); }});
    } catch (const MallocLibraryMissing& e) {
      notes.push_back(spec + " skipped: " + e.what());
    } catch (const InputError& e) {
      if (!all) throw;
      notes.push_back(spec + " skipped: " + e.what());
    }
  }
  // A kernel refuses settings it cannot honour (std::invalid_argument) before it starts a thread: a
  // short run on this process's malloc, one allocation per thread, turns that into bad input now.
  {
    StressSettings probe = plan.settings;
    probe.seconds = 0;
    probe.ops = static_cast<std::uint64_t>(probe.threads);
    probe.verify = false;
    MallocTarget target;
    try {
      plan.kernel->run(target, probe);
    } catch (const std::invalid_argument& e) {
      throw InputError(std::string("stress: ") + e.what());
    } catch (const std::exception&) {
      // Any other failure is the kernel's, reported on each row.
    }
  }
  const std::filesystem::path dir = results_directory(a.out_dir);
  probe_writable("out", dir / "stress.json");
  probe_writable("out", dir / "stress.csv");
  if (!a.json_path.empty()) probe_writable("json", a.json_path);
  const bool system_rows = std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.malloc.has_value(); });
  if (system_rows && (capacity || a.memory != "host")) {
    notes.push_back("system.* rows run on the host's memory with no capacity: --memory and --capacity apply to tiermark's allocators only");
  }

  json context = run_context();
  context["command"] = a.command;
  context["memory"] = a.memory;
  context["kernel"] = std::string(plan.kernel->name);
  context["threads"] = plan.settings.threads;
  context["seconds"] = plan.settings.seconds > 0 ? json(plan.settings.seconds) : json(nullptr);
  context["ops"] = plan.settings.ops > 0 ? json(plan.settings.ops) : json(nullptr);
  context["verify"] = plan.settings.verify;
  context["sizes"] = a.k.sizes;
  context["min_size_bytes"] = plan.settings.min_size;
  context["max_size_bytes"] = plan.settings.max_size;
  context["capacity_bytes"] = capacity ? json(*capacity) : json(nullptr);
  context["seed"] = plan.settings.seed;
  context["sample_interval_seconds"] = plan.settings.sample_interval_seconds;
  const std::string workload = "stress/" + std::string(plan.kernel->name);
  json document = {{"schema", kResultsSchema},
                   {"context", context},
                   {"workloads", json::array({{{"name", workload}, {"source", "stress"}, {"description", std::string(plan.kernel->description)}}})},
                   {"runs", json::array()},
                   {"notes", notes},
                   {"interrupted", false}};

  bool clean = true;
  ProgressLine progress(rows.size());
  for (const Row& row : rows) {
    progress.step(workload + " " + row.spec);
    json run = {{"workload", workload}, {"allocator", row.spec}, {"config", ""}, {"memory", "host"}, {"upstream", "host"}};
    try {
      if (row.malloc) {
        run["allocator"] = row.malloc->spec;
        const Measured m = measure_system_malloc(a.k, *row.malloc, run);
        clean = add_measured(run, m) && clean;
      } else {
        const std::unique_ptr<LockedAllocatorTarget> target = row.make_target();
        run["allocator"] = std::string(target->allocator().name());
        run["config"] = target->allocator().config();
        run["memory"] = a.memory;
        run["upstream"] = target->allocator().upstream().config();
        const Measured m = measure_allocator(plan, *target);
        clean = add_measured(run, m) && clean;
      }
    } catch (const std::exception& e) {
      // A kernel that threw, or a child that crashed: the row failed, the others still run.
      run["failed"] = true;
      run["note"] = std::string("failed: ") + e.what();
      clean = false;
      std::cerr << "tiermark stress: " << row.spec << " failed: " << e.what() << "\n";
    }
    document["runs"].push_back(std::move(run));
    write_results(document, dir.string(), a.json_path, "stress");  // every finished row is on disk
  }
  print_stress_table(document, out);
  for (const std::string& note : notes) out << "note: " << note << "\n";
  out << "\nresults: " << (dir / "stress.json").string() << "\n";
  return clean ? kExitOk : kExitFailure;
}

}  // namespace

int stress_command(const std::vector<std::string>& args, std::ostream& out) {
  StressArgs a;
  a.command = args;
  a.command.insert(a.command.begin(), {"tiermark", "stress"});
  po::options_description options("tiermark stress");
  options.add_options()
      ("allocator", po::value(&a.allocators), "comma list of allocator specs, or all (every allocator and the system.* rows; never broken.*)");
  add_kernel_options(options, a.k);
  options.add_options()
      ("memory", po::value(&a.memory), "host (default: real memory, blocks written when verified) or simulated (addresses only: --verify checks overlap only)")
      ("capacity", po::value(&a.capacity), "the memory source's capacity, e.g. 64MiB, to provoke out-of-memory storms (failures are counted)")
      ("out", po::value(&a.out_dir), "results directory (default results/<date>_<host>_<commit>/): stress.json, stress.csv")
      ("json", po::value(&a.json_path), "also write the JSON results to this file")
      ("help,h", "show this help");
  const po::variables_map vm = parse_command_options("stress", options, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark stress --allocator LIST|all [--threads N] (--seconds S | --ops N) [--verify] [--kernel NAME] [options]\n" << options;
    return kExitOk;
  }
  // The peer kernels keep their originals' sizes (docs/stress-kernels.md): a size option with one of
  // them would be silently ignored, so it is refused.
  for (const char* option : {"sizes", "min-size", "max-size"}) {
    if (vm.count(option) != 0 && a.k.kernel != "churn") {
      throw InputError("--" + std::string(option) + ": only the churn kernel draws sizes; " + a.k.kernel +
                       " keeps its original's (docs/stress-kernels.md)");
    }
  }
  return run_stress(a, out);
}

int stress_child_command(const std::vector<std::string>& args, std::ostream& out) {
  KernelArgs k;
  std::string malloc;
  po::options_description options("tiermark stress-child (internal: run by a system.* stress row)");
  options.add_options()("malloc", po::value(&malloc)->required(), "the malloc that must be serving this process (glibc, jemalloc, ...)");
  add_kernel_options(options, k);
  parse_command_options("stress-child", options, args);
  const StressPlan plan = plan_of(k);
  require_active_malloc("stress-child", malloc);
  MallocTarget target;
  Timeline timeline;
  const bool reset = reset_peak_rss();
  const StressResult result = run_kernel(plan, target, current_rss_bytes, timeline);
  const json j = {{"malloc_library", malloc},
                  {"malloc_object", malloc_object()},
                  {"result", result_json(result)},
                  {"timeline", {{"seconds", timeline.seconds}, {"rss_bytes", timeline.bytes}}},
                  {"peak_rss_bytes", proc_kib_field("/proc/self/status", "VmHWM").value_or(0)},
                  {"peak_rss_reset", reset}};
  out << j.dump() << "\n" << std::flush;
  return kExitOk;
}

}  // namespace tiermark
