#include "harness/replay_command.h"

#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>

#include "allocators/bits.h"
#include "allocators/registry.h"
#include "common/input_error.h"
#include "common/size_units.h"
#include "common/spec.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/replay_results.h"
#include "harness/run_context.h"
#include "harness/trace_files.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;
using json = nlohmann::ordered_json;

// Set by SIGINT: the run stops at the next pass boundary and keeps every finished row.
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) {
  g_interrupted = 1;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
}

// An A100/H100-sized device (80 GiB): what the simulated device has unless the trace needs more.
constexpr std::uint64_t kDefaultDeviceBytes = std::uint64_t{80} << 30;
constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;

struct ReplayArgs {
  std::string workload, trace, format = "auto";
  std::string allocators;
  std::string device_capacity, memory = "simulated", touch = "none";
  std::string repetitions = "5", sample_every = "0", threads = "1";
  bool latency = false, planner = true;
  std::string out_dir, json_path;
  std::vector<std::string> command;
};

std::string utc_stamp(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, format, &tm);
  return buffer;
}

// Every registered allocator but `system` (the process's own malloc: it cannot sit on a simulated
// device, and the system.* rows measure malloc implementations in their own processes).
std::vector<std::string> all_allocators() {
  std::vector<std::string> out;
  for (const ComponentInfo& info : allocator_catalog()) {
    if (info.name != "system") out.emplace_back(info.name);
  }
  return out;
}

std::string upstream_spec(const ReplayArgs& a, const FlatTrace& trace) {
  if (a.memory == "simulated") {
    std::uint64_t capacity = std::max(kDefaultDeviceBytes, align_up(2 * trace.peak_requested_bytes, kGiB));
    if (!a.device_capacity.empty()) {
      const std::optional<std::uint64_t> parsed = parse_size(a.device_capacity);
      if (!parsed || *parsed == 0) throw InputError("--device-capacity: '" + a.device_capacity + "' is not a size above 0 (e.g. 80GiB, 512MiB)");
      capacity = *parsed;
    }
    return "simulated:capacity=" + format_size(capacity);
  }
  if (a.memory == "host") {
    std::string spec = "host";
    if (!a.device_capacity.empty()) {
      const std::optional<std::uint64_t> parsed = parse_size(a.device_capacity);
      if (!parsed || *parsed == 0) throw InputError("--device-capacity: '" + a.device_capacity + "' is not a size above 0 (e.g. 8GiB)");
      spec += ":capacity=" + format_size(*parsed);
    }
    const long pages = sysconf(_SC_AVPHYS_PAGES);
    const long page = sysconf(_SC_PAGESIZE);
    const std::uint64_t available = pages > 0 && page > 0 ? std::uint64_t(pages) * std::uint64_t(page) : 0;
    if (available != 0 && trace.peak_requested_bytes > available) {
      throw InputError("--memory host: " + trace.name + " needs " + format_size_approx(trace.peak_requested_bytes) +
                       " live at its peak, more than the " + format_size_approx(available) +
                       " this host has free; use --memory simulated");
    }
    return spec;
  }
  throw InputError("--memory: unknown value '" + a.memory + "' (known: simulated, host)");
}

class Progress {
 public:
  explicit Progress(std::uint64_t total) : total_(total), enabled_(isatty(STDERR_FILENO) == 1) {}
  void step(const std::string& what) {
    ++done_;
    if (!enabled_) return;
    std::cerr << "\r\033[K[" << done_ << "/" << total_ << "] " << what << std::flush;
  }
  ~Progress() {
    if (enabled_ && done_ != 0) std::cerr << "\r\033[K" << std::flush;
  }

 private:
  std::uint64_t total_, done_ = 0;
  bool enabled_;
};

struct Row {
  std::unique_ptr<AllocatorRunner> runner;
  json run;
  std::vector<json> repetitions;
};

int run_replay(const ReplayArgs& a, std::ostream& out) {
  if (a.workload.empty() == a.trace.empty()) throw InputError("replay: give exactly one of --workload SPEC or --trace FILE");
  if (a.allocators.empty()) throw InputError("replay: --allocator LIST is required (a comma list of allocator specs, or 'all')");
  const std::uint64_t repetitions = parse_count_option("repetitions", a.repetitions, 1);
  const std::uint64_t threads = parse_count_option("threads", a.threads, 1);
  if (threads > 1) throw InputError("--threads: multi-thread replay is not available yet (issue 8 adds thread-safe allocators)");
  ReplaySettings settings;
  settings.touch = parse_touch(a.touch);
  settings.sample_every = parse_count_option("sample-every", a.sample_every, 0);

  // Everything that can be wrong with the input is found before the first pass.
  FlatTrace trace;
  std::string source_kind;
  if (!a.workload.empty()) {
    trace = flatten_workload(a.workload);
    source_kind = "workload";
  } else {
    TraceFile file(a.trace, parse_trace_format(a.format));
    trace = flatten_trace(file.source());
    trace.name = a.trace;
    source_kind = "trace";
  }
  settings.upstream_spec = upstream_spec(a, trace);
  if (settings.touch != Touch::kNone && a.memory != "host") {
    throw InputError("--touch " + a.touch + " writes into blocks: it needs --memory host");
  }

  std::vector<std::string> specs;
  std::vector<std::string> notes;
  const bool all = a.allocators == "all";
  for (const std::string& spec : all ? all_allocators() : split_spec_list(a.allocators)) specs.push_back(spec);
  std::vector<Row> rows;
  for (const std::string& spec : specs) {
    try {
      rows.push_back({make_runner(spec, trace, settings), json::object(), {}});
    } catch (const InputError& e) {
      if (!all) throw;
      notes.push_back(spec + " skipped: " + e.what());
    }
  }

  const std::filesystem::path dir =
      a.out_dir.empty() ? std::filesystem::path("results") / (utc_stamp("%Y-%m-%d") + "_" + host_name() + "_" + git_commit())
                        : std::filesystem::path(a.out_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) throw InputError("--out " + dir.string() + ": cannot create the directory: " + ec.message());

  // The offline references: the plan is made once, untimed by the replay.
  std::vector<PlannedBuffer> buffers;
  MemoryPlan plan;
  std::optional<std::uint64_t> planner_bytes;
  double planner_seconds = 0;
  if (a.planner && trace.allocs != 0) {
    const auto t0 = std::chrono::steady_clock::now();
    buffers = planner_buffers(trace);
    plan = plan_greedy_by_size(buffers);
    planner_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    planner_bytes = plan.arena_bytes;
    rows.push_back({make_planner_runner(trace, buffers, plan, settings), json::object(), {}});
  }

  json context = run_context();
  context["command"] = a.command;
  context["memory"] = a.memory;
  context["upstream"] = settings.upstream_spec;
  context["touch"] = a.touch;
  context["repetitions"] = repetitions;
  context["latency"] = a.latency;
  json document = {{"schema", kResultsSchema}, {"context", context}, {"workloads", json::array()}, {"runs", json::array()},
                   {"notes", notes}, {"interrupted", false}};
  document["workloads"].push_back(workload_json(trace, source_kind, planner_bytes, planner_seconds));

  const auto save = [&]() {
    document["runs"] = json::array();
    for (const Row& row : rows) {
      if (row.run.empty()) continue;
      json run = row.run;
      if (!row.repetitions.empty()) {
        Aggregate aggregate = aggregate_repetitions(row.repetitions);
        for (auto& [key, value] : run["metrics"].items()) aggregate.metrics[key] = value;
        run["metrics"] = aggregate.metrics;
        run["statistics"] = aggregate.statistics;
        run["repetitions"] = row.repetitions;
      }
      document["runs"].push_back(run);
    }
    write_results(document, dir.string(), a.json_path);
  };

  std::signal(SIGINT, on_interrupt);
  Progress progress(rows.size() * (1 + repetitions));
  // The memory pass first: it also shows at once whether an allocator can serve the trace.
  for (Row& row : rows) {
    if (g_interrupted) break;
    progress.step(std::string(row.runner->name()) + ": memory pass");
    const MemoryObservation memory = row.runner->observe_memory();
    row.run = {{"workload", trace.name}, {"allocator", row.runner->name()}, {"config", row.runner->config()},
               {"memory", a.memory}, {"upstream", settings.upstream_spec}, {"metrics", json::object()}};
    json timeline = add_memory_metrics(row.run["metrics"], memory, trace, planner_bytes);
    row.run["top_consumers"] = document["workloads"][0]["top_consumers"];
    row.run["leaks"] = document["workloads"][0]["leaks"];
    row.run["timeline"] = std::move(timeline);
  }
  // Repetitions interleave the allocators, so that drift on a shared machine touches them alike.
  for (std::uint64_t rep = 0; rep < repetitions && !g_interrupted; ++rep) {
    for (Row& row : rows) {
      if (g_interrupted) break;
      progress.step(std::string(row.runner->name()) + ": repetition " + std::to_string(rep + 1));
      const RepetitionResult result = row.runner->repetition(a.latency);
      row.repetitions.push_back(repetition_metrics(result));
      if (result.stats.failed_requests != 0) {
        row.run["note"] = std::to_string(result.stats.failed_requests) + " failed requests";
      }
    }
    save();  // every finished repetition is on disk
  }
  if (g_interrupted) {
    document["interrupted"] = true;
    save();
    std::signal(SIGINT, SIG_DFL);
    std::cerr << "tiermark replay: interrupted; finished rows are in " << dir.string() << "/results.json\n";
    return 130;
  }
  std::signal(SIGINT, SIG_DFL);
  save();
  print_results_table(document, out);
  for (const std::string& note : notes) out << "note: " << note << "\n";
  out << "\nresults: " << (dir / "results.json").string() << "\n";
  return kExitOk;
}

}  // namespace

int replay_command(const std::vector<std::string>& args, std::ostream& out) {
  ReplayArgs a;
  a.command = args;
  a.command.insert(a.command.begin(), {"tiermark", "replay"});
  po::options_description options("tiermark replay");
  options.add_options()
      ("workload", po::value(&a.workload), "a generated workload spec, e.g. transformer/gpt2-small:b=8")
      ("trace", po::value(&a.trace), "a trace file (.csv, .tmt, or an RMM log)")
      ("format", po::value(&a.format), "the trace file's format: auto (default), csv, tmt, rmm")
      ("allocator", po::value(&a.allocators), "comma list of allocator specs (buddy:min_block=256,caching.pytorch), or all")
      ("device-capacity", po::value(&a.device_capacity), "simulated device size (default 80GiB, or 2x the trace's peak if larger); with --memory host, a cap")
      ("memory", po::value(&a.memory), "simulated (default: addresses only, never touched) or host (real memory)")
      ("touch", po::value(&a.touch), "none (default), first (a byte per 4 KiB page) or full (every byte) of each block; host only")
      ("repetitions", po::value(&a.repetitions), "throughput repetitions per allocator, interleaved (default 5)")
      ("latency", po::bool_switch(&a.latency), "also time every operation (a separate pass per repetition)")
      ("sample-every", po::value(&a.sample_every), "memory timeline: one sample per N ops (default: about 1000 samples)")
      ("threads", po::value(&a.threads), "replay threads (1; multi-thread traces come with issue 8)")
      ("no-planner", "skip the offline planner row")
      ("out", po::value(&a.out_dir), "results directory (default results/<date>_<host>_<commit>/)")
      ("json", po::value(&a.json_path), "also write the JSON results to this file")
      ("help,h", "show this help");
  const po::variables_map vm = parse_command_options("replay", options, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark replay (--workload SPEC | --trace FILE) --allocator LIST|all [options]\n" << options;
    return kExitOk;
  }
  a.planner = vm.count("no-planner") == 0;
  return run_replay(a, out);
}

}  // namespace tiermark
