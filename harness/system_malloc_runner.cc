// The system.* rows (system_malloc_runner.h): the parent side, SystemMallocRunner, spawns one child
// per pass and rebuilds the pass's result from the child's JSON; the child side is
// replay_child_command. The child's stdout carries exactly one JSON object:
//
//   {"pass": "throughput"|"latency"|"memory", "malloc_library": "jemalloc", "malloc_object": "/usr/lib/...",
//    "ops": N, "rss_before_pass_bytes": B, "peak_rss_bytes": B, "page_faults": N,
//    "result": {...RepetitionResult...} | "memory": {...MemoryObservation...}}
//
// Why VmHWM and not getrusage's ru_maxrss for the peak: on Linux a child's ru_maxrss starts at the
// high-water mark of the process it was spawned from (exec keeps the old address space's maximum in
// the signal struct), so a 1.5 MB child of a 500 MB parent reports 500 MB (measured on Debian 12,
// kernel 6.1, with posix_spawn). VmHWM in /proc/self/status is the child's own address space only,
// and writing "5" to /proc/self/clear_refs resets it to the current RSS (proc(5)), which the child
// does just before the pass so that the trace generator's transient memory is not counted.
#include "harness/system_malloc_runner.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "harness/trace_files.h"

extern char** environ;

namespace tiermark {
namespace {

using json = nlohmann::json;

struct MallocLibrary {
  std::string_view spec;     // system.jemalloc
  std::string_view malloc;   // what active_malloc_name() says when it serves the process
  std::string_view file;     // "" for glibc: nothing is preloaded
  std::string_view package;  // the Debian package with `file` (tools/install-deps.sh installs them)
};

// tcmalloc is gperftools' minimal build (no heap profiler), as tools/suite.sh preloads it.
constexpr MallocLibrary kLibraries[] = {
    {"system.glibc", "glibc", "", ""},
    {"system.jemalloc", "jemalloc", "libjemalloc.so.2", "libjemalloc2"},
    {"system.mimalloc", "mimalloc", "libmimalloc.so.2", "libmimalloc2.0"},
    {"system.tcmalloc", "tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"},
};

const MallocLibrary* library_of(std::string_view name) {
  for (const MallocLibrary& library : kLibraries) {
    if (library.spec == name) return &library;
  }
  return nullptr;
}

// The value of "<key>: <n> kB" in a /proc file (/proc/meminfo, /proc/self/status), in bytes.
std::optional<std::uint64_t> proc_kib_field(const char* path, std::string_view key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with(key) || line.size() <= key.size() || line[key.size()] != ':') continue;
    std::istringstream rest(line.substr(key.size() + 1));
    std::uint64_t kib = 0;
    std::string unit;
    if (rest >> kib >> unit && unit == "kB") return kib * 1024;
    return std::nullopt;
  }
  return std::nullopt;
}

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

// "exited with status 2", "was killed by signal 11 (Segmentation fault)".
std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    return "was killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

// Runs `args` as `/proc/self/exe args...` with LD_PRELOAD = `preload` (unset when empty) and returns
// what it printed on stdout; stderr is this process's. Throws PassFailure unless it exits with 0.
std::string run_child(const std::vector<std::string>& args, const std::string& preload) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("LD_PRELOAD=")) env.emplace_back(*e);
  }
  if (!preload.empty()) env.push_back("LD_PRELOAD=" + preload);
  std::vector<char*> envp, argv;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string argv0 = "tiermark";
  argv.push_back(argv0.data());
  std::vector<std::string> owned = args;
  for (std::string& a : owned) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw PassFailure(std::string("cannot create a pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);  // dup2 clears close-on-exec
  pid_t pid = 0;
  // /proc/self/exe rather than its resolved path: the very binary running now, even if rebuilt since.
  const int spawn_error = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (spawn_error != 0) {
    close(fds[0]);
    throw PassFailure(std::string("cannot start the child process: ") + std::strerror(spawn_error));
  }
  std::string output;
  char buffer[65536];
  for (;;) {
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n > 0) {
      output.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw PassFailure(std::string("cannot wait for the child process: ") + std::strerror(errno));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw PassFailure("child process " + describe_status(status));
  return output;
}

class SystemMallocRunner final : public AllocatorRunner {
 public:
  SystemMallocRunner(const MallocLibrary& library, std::string preload, const ReplaySource& source,
                     const FlatTrace& trace, const ReplaySettings& settings)
      : library_(library), preload_(std::move(preload)), trace_(trace) {
    args_ = {"replay-child", "--malloc", std::string(library.malloc)};
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
            {"library", preload_.empty() ? malloc_object_ : preload_},
            {"malloc", std::string(library_.malloc)}};
  }

 private:
  json run_pass(const std::string& pass) {
    std::vector<std::string> args = args_;
    args.insert(args.end(), {"--pass", pass});
    const std::string output = run_child(args, preload_);
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

  const MallocLibrary& library_;
  std::string preload_;  // the library file, "" for glibc
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

// The object that defines the malloc this process calls, as the dynamic linker found it.
std::string malloc_object() {
  Dl_info info{};
  void* symbol = dlsym(RTLD_DEFAULT, "malloc");
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  return info.dli_fname;
}

int run_child_pass(const ChildArgs& a, std::ostream& out) {
  if (a.pass != "throughput" && a.pass != "latency" && a.pass != "memory") {
    throw InputError("replay-child: --pass must be throughput, latency or memory, not '" + a.pass + "'");
  }
  // Before anything is replayed: a library that was not preloaded must not be measured as itself.
  const std::string active = active_malloc_name();
  if (active != a.malloc) {
    throw InputError("replay-child: malloc here is " + active + ", not " + a.malloc + " (LD_PRELOAD='" +
                     (std::getenv("LD_PRELOAD") != nullptr ? std::getenv("LD_PRELOAD") : "") + "')");
  }
  const FlatTrace trace = load_flat_trace({a.workload, a.trace, a.format});
  ReplaySettings settings;
  settings.upstream_spec = "host";
  settings.touch = parse_touch(a.touch);
  settings.sample_every = parse_count_option("sample-every", a.sample_every, 0);
  settings.threads = parse_count_option("threads", a.threads, 1);
  std::unique_ptr<AllocatorRunner> runner = make_runner("system", trace, settings);

  // The flattened trace and the runner's slot table stay in this process during the pass: they are
  // rss_before_pass_bytes, and part of peak_rss_bytes.
  const bool peak_reset = [] {
    std::ofstream clear("/proc/self/clear_refs");
    return static_cast<bool>(clear << "5" << std::flush);
  }();
  const std::optional<std::uint64_t> rss_before = proc_kib_field("/proc/self/status", "VmRSS");
  json j = {{"pass", a.pass}, {"malloc_library", active}, {"malloc_object", malloc_object()}, {"ops", trace.events}};
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

std::vector<std::string> system_malloc_specs() {
  std::vector<std::string> out;
  for (const MallocLibrary& library : kLibraries) out.emplace_back(library.spec);
  return out;
}

bool is_system_malloc_spec(std::string_view spec) { return spec.starts_with("system."); }

std::optional<std::string> find_malloc_library(std::string_view file_name) {
  std::vector<std::string> dirs;
  if (const char* override_dirs = std::getenv("TIERMARK_MALLOC_LIBRARY_DIRS"); override_dirs != nullptr) {
    std::istringstream in(override_dirs);
    for (std::string dir; std::getline(in, dir, ':');) {
      if (!dir.empty()) dirs.push_back(dir);
    }
  } else {
    // CMake's CMAKE_LIBRARY_ARCHITECTURE, the multiarch tuple (x86_64-linux-gnu) on Debian.
    const std::string arch = TIERMARK_LIBRARY_ARCHITECTURE;
    if (!arch.empty()) dirs = {"/usr/lib/" + arch, "/lib/" + arch};
    dirs.insert(dirs.end(), {"/usr/local/lib", "/usr/lib", "/lib", "/usr/lib64", "/lib64"});
  }
  for (const std::string& dir : dirs) {
    const std::filesystem::path path = std::filesystem::path(dir) / file_name;
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec) && access(path.c_str(), R_OK) == 0) return path.string();
  }
  return std::nullopt;
}

std::unique_ptr<AllocatorRunner> make_system_malloc_runner(std::string_view spec, const ReplaySource& source,
                                                           const FlatTrace& trace, const ReplaySettings& settings) {
  const Spec parsed = parse_spec(spec);
  const MallocLibrary* library = library_of(parsed.name);
  if (library == nullptr) {
    std::string known;
    for (const MallocLibrary& l : kLibraries) known += (known.empty() ? "" : ", ") + std::string(l.spec);
    throw InputError("unknown system allocator '" + parsed.name + "' (known: " + known + ")");
  }
  if (!parsed.preset.empty() || !parsed.settings.empty()) {
    throw InputError(parsed.name + " takes no options: '" + std::string(spec) + "'");
  }
  std::string preload;
  if (!library->file.empty()) {
    const std::optional<std::string> path = find_malloc_library(library->file);
    if (!path) {
      throw MallocLibraryMissing(std::string(library->file) + " not found (apt-get install " +
                                 std::string(library->package) + ")");
    }
    preload = *path;
  }
  // The child replays on real memory whatever --memory says; half of MemAvailable leaves room for the
  // child's own copy of the trace, this process and the allocator's overhead.
  if (const std::optional<std::uint64_t> available = proc_kib_field("/proc/meminfo", "MemAvailable");
      available && trace.peak_requested_bytes > *available / 2) {
    throw InputError(parsed.name + " replays on host memory: " + trace.name + " needs " +
                     format_size_approx(trace.peak_requested_bytes) + " live at its peak, more than half of the " +
                     format_size_approx(*available) + " this host has available");
  }
  return std::make_unique<SystemMallocRunner>(*library, std::move(preload), source, trace, settings);
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
