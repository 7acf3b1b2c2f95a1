#include "harness/replay_command.h"

#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <csignal>
#include <deque>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>

#include "allocators/bits.h"
#include "allocators/registry.h"
#include "common/input_error.h"
#include "common/size_units.h"
#include "common/spec.h"
#include "harness/allocator_list.h"
#include "harness/atomic_file.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/replay_results.h"
#include "harness/replay_source.h"
#include "harness/proc_files.h"
#include "harness/progress_line.h"
#include "harness/results_directory.h"
#include "harness/run_context.h"
#include "harness/system_malloc_runner.h"
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
  std::vector<std::string> workloads, traces;
  std::string format = "auto";
  std::string allocators;
  std::string device_capacity, memory = "simulated", touch = "none";
  std::string repetitions = "5", sample_every = "0", threads = "1", max_events_in_memory = "0";
  bool latency = false, planner = true;
  std::string out_dir, json_path;
  std::vector<std::string> command;
};

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
    const std::uint64_t available = available_memory_bytes().value_or(0);
    if (available != 0 && trace.peak_requested_bytes > available) {
      throw InputError("--memory host: " + trace.name + " needs " + format_size_approx(trace.peak_requested_bytes) +
                       " live at its peak, more than the " + format_size_approx(available) +
                       " this host has free; use --memory simulated");
    }
    return spec;
  }
  if (parse_spec(a.memory).name == "cuda") {
    // Real device memory: `cuda` or a full spec such as `cuda:device=1,async=true` (tiermark list).
    std::string spec = a.memory;
    if (!a.device_capacity.empty()) {
      const std::optional<std::uint64_t> parsed = parse_size(a.device_capacity);
      if (!parsed || *parsed == 0) throw InputError("--device-capacity: '" + a.device_capacity + "' is not a size above 0 (e.g. 8GiB)");
      spec += std::string(spec.find(':') == std::string::npos ? ":" : ",") + "capacity=" + format_size(*parsed);
    }
    return spec;
  }
  throw InputError("--memory: unknown value '" + a.memory + "' (known: simulated, host, cuda[:device=N,async=true])");
}

// The runner of one --allocator spec. A system.* row runs in child processes on host memory, whatever
// --memory says; `system`, this process's own malloc, ignores any upstream and is refused on a
// simulated device.
std::unique_ptr<AllocatorRunner> make_row_runner(const std::string& spec, const ReplayArgs& a, const ReplaySource& source,
                                                 const FlatTrace& trace, const ReplaySettings& settings) {
  if (is_system_malloc_spec(spec)) return make_system_malloc_runner(spec, source, trace, settings);
  if (parse_spec(spec).name == "system" && a.memory != "host") {
    throw InputError("system is this process's own malloc and cannot replay on a simulated device: use --memory host, or "
                     "system.glibc (glibc's malloc in a process of its own, with peak RSS and page faults)");
  }
  return make_runner(spec, trace, settings);
}

struct Row {
  std::unique_ptr<AllocatorRunner> runner;
  json run;
  std::vector<json> repetitions;
  bool failed = false;  // a pass threw PassFailure: no more passes, the note says why
};

void fail_row(Row& row, const std::string& pass, const PassFailure& e) {
  row.failed = true;
  row.run["failed"] = true;
  row.run["note"] = "failed in " + pass + ": " + e.what();
  std::cerr << "tiermark replay: " << row.runner->name() << " failed in " << pass << ": " << e.what() << "\n";
}

// One workload or trace of the run, with its rows. Runners keep references to the trace and the
// plan, so a Workload never moves once its rows exist (they live in a deque).
struct Workload {
  ReplaySource source;
  FlatTrace trace;
  std::string source_kind;
  ReplaySettings settings;
  std::vector<PlannedBuffer> buffers;
  MemoryPlan plan;
  std::optional<std::uint64_t> planner_bytes;
  double planner_seconds = 0;
  std::vector<Row> rows;
  json record;
};

// Loads the trace and builds every row: everything that can be wrong with the input is found here,
// before the first pass of any workload.
void prepare(Workload& w, const ReplayArgs& a, const ReplaySettings& common, std::vector<std::string>& notes) {
  w.trace = load_flat_trace(w.source);
  w.source_kind = w.source.kind();
  w.settings = common;
  w.settings.upstream_spec = upstream_spec(a, w.trace);

  std::vector<std::string> specs = allocator_specs(a.allocators);
  const bool all = a.allocators == "all";
  if (all) {
    for (std::string& spec : system_malloc_specs()) specs.push_back(std::move(spec));  // in processes of their own
  }
  for (const std::string& spec : specs) {
    try {
      w.rows.push_back({make_row_runner(spec, a, w.source, w.trace, w.settings), json::object(), {}});
    } catch (const MallocLibraryMissing& e) {
      notes.push_back(w.trace.name + ": " + spec + " skipped: " + e.what());
    } catch (const InputError& e) {
      if (!all) throw;
      notes.push_back(w.trace.name + ": " + spec + " skipped: " + e.what());
    }
  }
  // The offline references: the plan is made once, untimed by the replay.
  if (a.planner && w.settings.threads > 1) {
    notes.push_back(w.trace.name + ": no planner row: the planner serves requests in trace order, which threads do not keep");
  } else if (a.planner && w.trace.streamed()) {
    notes.push_back(w.trace.name + ": no planner row: the trace is streamed, and a plan needs every buffer in memory");
  } else if (a.planner && w.trace.allocs != 0) {
    const auto t0 = std::chrono::steady_clock::now();
    w.buffers = planner_buffers(w.trace);
    w.plan = plan_greedy_by_size(w.buffers);
    w.planner_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    w.planner_bytes = w.plan.arena_bytes;
    w.rows.push_back({make_planner_runner(w.trace, w.buffers, w.plan, w.settings), json::object(), {}});
  }
  w.record = workload_json(w.trace, w.source_kind, w.planner_bytes, w.planner_seconds);
}

json finished_run(const Row& row) {
  json run = row.run;
  if (!row.repetitions.empty()) {
    Aggregate aggregate = aggregate_repetitions(row.repetitions);
    for (auto& [key, value] : run["metrics"].items()) aggregate.metrics[key] = value;
    run["metrics"] = aggregate.metrics;
    run["statistics"] = aggregate.statistics;
    run["repetitions"] = row.repetitions;
  }
  return run;
}

int run_replay(const ReplayArgs& a, std::ostream& out) {
  if (a.workloads.empty() && a.traces.empty()) throw InputError("replay: give --workload SPEC or --trace FILE (either may be repeated)");
  if (a.allocators.empty()) throw InputError("replay: --allocator LIST is required (a comma list of allocator specs, or 'all')");
  const std::uint64_t repetitions = parse_count_option("repetitions", a.repetitions, 1);
  const std::uint64_t threads = parse_count_option("threads", a.threads, 1);
  ReplaySettings common;
  common.touch = parse_touch(a.touch);
  common.sample_every = parse_count_option("sample-every", a.sample_every, 0);
  common.threads = threads;
  // The context is read first: its last-level cache sizes the locality pass's cache model.
  json context = run_context();
  for (const json& cache : context.value("caches", json::array())) {
    if (cache.value("type", "") != "instruction" && cache["size_bytes"].is_number()) {
      common.cache_bytes = std::max<std::uint64_t>(common.cache_bytes, cache["size_bytes"].get<std::uint64_t>());
    }
  }
  if (common.touch != Touch::kNone && a.memory != "host") {
    throw InputError("--touch " + a.touch + " writes into blocks: it needs --memory host");
  }

  std::vector<std::string> notes;
  std::deque<Workload> workloads;
  const std::uint64_t max_ops = parse_count_option("max-events-in-memory", a.max_events_in_memory, 0);
  for (const std::string& spec : a.workloads) workloads.emplace_back().source = {spec, "", a.format, max_ops};
  for (const std::string& file : a.traces) workloads.emplace_back().source = {"", file, a.format, max_ops};
  for (Workload& w : workloads) prepare(w, a, common, notes);
  check_output_file(a.json_path, "--json");
  const std::filesystem::path dir = results_directory(a.out_dir);

  context["command"] = a.command;
  context["memory"] = a.memory;
  context["touch"] = a.touch;
  context["repetitions"] = repetitions;
  context["latency"] = a.latency;
  context["threads"] = threads;
  json document = {{"schema", kResultsSchema}, {"context", context}, {"workloads", json::array()}, {"runs", json::array()},
                   {"notes", notes}, {"interrupted", false}};
  for (const Workload& w : workloads) document["workloads"].push_back(w.record);

  const auto save = [&]() {
    document["runs"] = json::array();
    for (const Workload& w : workloads) {
      for (const Row& row : w.rows) {
        if (!row.run.empty()) document["runs"].push_back(finished_run(row));
      }
    }
    write_results(document, dir.string(), a.json_path);
  };

  std::size_t passes = 0;
  for (const Workload& w : workloads) passes += w.rows.size() * (1 + repetitions);
  std::signal(SIGINT, on_interrupt);
  ProgressLine progress(passes);
  // The memory pass first: it also shows at once whether an allocator can serve the trace.
  for (Workload& w : workloads) {
    for (Row& row : w.rows) {
      if (g_interrupted) break;
      progress.step(w.trace.name + " " + std::string(row.runner->name()) + ": memory pass");
      row.run = {{"workload", w.trace.name}, {"allocator", row.runner->name()}, {"config", row.runner->config()},
                 {"memory", a.memory}, {"upstream", w.settings.upstream_spec}, {"metrics", json::object()}};
      try {
        const MemoryObservation memory = row.runner->observe_memory();
        json timeline = add_memory_metrics(row.run["metrics"], memory, w.trace, w.planner_bytes);
        row.run["top_consumers"] = w.record["top_consumers"];
        row.run["leaks"] = w.record["leaks"];
        row.run["timeline"] = std::move(timeline);
        if (const std::optional<LocalityObservation> locality = row.runner->observe_locality()) {
          add_locality_metrics(row.run["metrics"], *locality);
        }
      } catch (const PassFailure& e) {
        fail_row(row, "the memory pass", e);
      }
      for (const auto& [key, value] : row.runner->facts()) row.run[key] = value;
    }
  }
  // Repetitions interleave the allocators (and workloads), so that drift on a shared machine
  // touches them alike.
  for (std::uint64_t rep = 0; rep < repetitions && !g_interrupted; ++rep) {
    for (Workload& w : workloads) {
      for (Row& row : w.rows) {
        if (g_interrupted) break;
        if (row.failed) continue;
        progress.step(w.trace.name + " " + std::string(row.runner->name()) + ": repetition " + std::to_string(rep + 1));
        try {
          const RepetitionResult result = row.runner->repetition(a.latency);
          row.repetitions.push_back(repetition_metrics(result));
          if (result.stats.failed_requests != 0) {
            row.run["note"] = std::to_string(result.stats.failed_requests) + " failed requests";
          }
        } catch (const PassFailure& e) {
          fail_row(row, "repetition " + std::to_string(rep + 1), e);
        }
      }
    }
    save();  // every finished repetition is on disk
  }
  std::signal(SIGINT, SIG_DFL);
  if (g_interrupted) {
    document["interrupted"] = true;
    save();
    std::cerr << "tiermark replay: interrupted; finished rows are in " << dir.string() << "/results.json\n";
    return 130;
  }
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
      ("workload", po::value(&a.workloads), "a generated workload spec, e.g. transformer/gpt2-small:b=8 (repeatable)")
      ("trace", po::value(&a.traces), "a trace file: .csv, .tmt, or an RMM log (repeatable)")
      ("format", po::value(&a.format), "the trace file's format: auto (default), csv, tmt, rmm")
      ("allocator", po::value(&a.allocators), "comma list of allocator specs (buddy:min_block=256,caching.pytorch), or all")
      ("device-capacity", po::value(&a.device_capacity), "simulated device size (default 80GiB, or 2x the trace's peak if larger); with --memory host, a cap")
      ("memory", po::value(&a.memory), "simulated (default: addresses only, never touched), host (real memory) or cuda[:device=N,async=true] (real GPU memory)")
      ("touch", po::value(&a.touch), "none (default), first (a byte per 4 KiB page) or full (every byte) of each block; host only")
      ("repetitions", po::value(&a.repetitions), "throughput repetitions per allocator, interleaved (default 5)")
      ("latency", po::bool_switch(&a.latency), "also time every operation (a separate pass per repetition)")
      ("sample-every", po::value(&a.sample_every), "memory timeline: one sample per N ops (default: about 1000 samples)")
      ("threads", po::value(&a.threads), "replay threads: trace thread t runs on thread t % N, cross-thread frees in trace order (default 1)")
      ("no-planner", "skip the offline planner row")
      ("max-events-in-memory", po::value(&a.max_events_in_memory), "stream a trace with more alloc/free events than this, reading it again for each pass (default 0: a quarter of free memory's worth)")
      ("out", po::value(&a.out_dir), "results directory (default results/<date>_<host>_<commit>/)")
      ("json", po::value(&a.json_path), "also write the JSON results to this file")
      ("help,h", "show this help");
  const po::variables_map vm = parse_command_options("replay", options, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark replay (--workload SPEC | --trace FILE)... --allocator LIST|all [options]\n" << options;
    return kExitOk;
  }
  a.planner = vm.count("no-planner") == 0;
  return run_replay(a, out);
}

}  // namespace tiermark
