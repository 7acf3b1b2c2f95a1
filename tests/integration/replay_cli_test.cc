// The `tiermark replay` contract, through the real binary: the tiermark/1 JSON schema (results/README.md)
// and the long-form CSV made from it; `--allocator all` runs every registered allocator and reports a
// pool.fixed row's failed requests instead of crashing; SIGINT keeps the finished rows (exit 130);
// bad arguments and bad traces give one line on stderr, exit 2, and leave no half-written file.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cuda/cuda_runtime.h"
#include "tests/integration/cli_runner.h"

namespace {

using json = nlohmann::json;
using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;

// A transformer cut down to 356 events and a 68 MiB peak, with blocks above 1 MiB (the embedding),
// so pool.fixed's default 1 MiB blocks fail some requests. Runs in well under a second.
const std::string kSmallWorkload = "transformer/gpt2-small:steps=1,L=1,b=1,s=128,h=256,a=4,f=1024,V=8192";

bool sanitized() { return std::string(TIERMARK_SANITIZER).size() != 0; }

// A directory of each test's own (ctest runs tests in parallel), empty at the start and removed at
// the end unless the test failed (then it is kept for a look).
class ScratchDir {
 public:
  ScratchDir()
      : path_(std::filesystem::path(::testing::TempDir()) /
              ("replay_cli_test." + std::to_string(::getpid()) + "." +
               ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    if (!::testing::Test::HasFailure()) {
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
    }
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Files an interrupted or failed write would leave: AtomicFile writes `<name>.tmp.<pid>` first.
std::vector<std::string> temporary_files(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp") != std::string::npos) out.push_back(entry.path().string());
  }
  return out;
}

// RFC 4180 fields of one line (no line breaks inside fields in results.csv).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

// Every numeric leaf under its dotted name, as results.csv names them.
void numeric_leaves(const json& j, const std::string& prefix, std::map<std::string, double>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object()) {
      numeric_leaves(*it, key, out);
    } else if (it->is_number()) {
      out[key] = it->get<double>();
    }
  }
}

void expect_keys(const json& object, const std::vector<std::string>& keys, const std::string& where) {
  for (const std::string& key : keys) EXPECT_TRUE(object.contains(key)) << where << " lacks '" << key << "'";
}

const std::vector<std::string> kLatencyKeys = {"p50", "p90", "p99", "p999", "max", "count"};
const std::vector<std::string> kRunMetrics = {
    "ops_per_second", "peak_requested_bytes", "peak_allocated_bytes", "peak_reserved_bytes", "efficiency",
    "internal_fragmentation_at_peak", "external_fragmentation_max", "external_fragmentation_at_peak",
    "unreturnable_bytes_at_peak", "oom_count", "upstream_allocs", "upstream_frees", "leaked_bytes",
    "lower_bound_bytes", "planner_bytes"};

TEST(ReplayCli, JsonSchemaCsvAndCopies) {
  const ScratchDir scratch;
  const std::filesystem::path& dir = scratch.path();
  const std::filesystem::path out = dir / "out";
  const std::filesystem::path copy = dir / "copy.json";
  const Result r = run("replay --workload " + kSmallWorkload + " --allocator buddy,caching.pytorch,pool.fixed --latency --repetitions 3 --json " +
                       copy.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("results: " + (out / "results.json").string()), std::string::npos) << r.out;

  const std::string text = slurp(out / "results.json");
  EXPECT_EQ(text, slurp(copy));  // --json writes the same document
  const json d = json::parse(text);
  EXPECT_EQ(d["schema"], "tiermark/1");
  EXPECT_EQ(d["interrupted"], false);
  EXPECT_TRUE(d["notes"].is_array());

  const json& context = d["context"];
  expect_keys(context, {"date", "host", "cpu", "cores", "caches", "memory_bytes", "kernel", "compiler", "build_type",
                        "sanitizer", "git_commit", "library_versions", "transparent_hugepage", "command", "memory",
                        "touch", "repetitions", "latency"},
              "context");
  EXPECT_TRUE(context["caches"].is_array());
  EXPECT_TRUE(context["library_versions"].is_object());
  ASSERT_TRUE(context["command"].is_array());
  EXPECT_EQ(context["command"][0], "tiermark");
  EXPECT_EQ(context["command"][1], "replay");
  EXPECT_EQ(context["repetitions"], 3);
  EXPECT_EQ(context["latency"], true);
  EXPECT_EQ(context["memory"], "simulated");
  EXPECT_EQ(context["sanitizer"], TIERMARK_SANITIZER);

  ASSERT_EQ(d["workloads"].size(), 1u);
  const json& w = d["workloads"][0];
  expect_keys(w, {"name", "source", "events", "allocs", "frees", "threads", "lower_bound_bytes", "peak_op", "planner_bytes",
                  "planner_seconds", "end_live_bytes", "meant_to_end_empty", "top_consumers", "leaks", "metadata"},
              "workloads[0]");
  EXPECT_EQ(w["name"], kSmallWorkload);
  EXPECT_EQ(w["source"], "workload");
  EXPECT_EQ(w["events"].get<std::uint64_t>(), w["allocs"].get<std::uint64_t>() + w["frees"].get<std::uint64_t>());
  EXPECT_GT(w["lower_bound_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_GE(w["planner_bytes"].get<std::uint64_t>(), w["lower_bound_bytes"].get<std::uint64_t>());
  EXPECT_FALSE(w["top_consumers"].empty());
  for (const json& t : w["top_consumers"]) expect_keys(t, {"tag", "bytes", "blocks"}, "top_consumers item");

  std::set<std::string> allocators;
  for (const json& run : d["runs"]) {
    const std::string name = run["allocator"];
    allocators.insert(name);
    expect_keys(run, {"workload", "allocator", "config", "memory", "upstream", "metrics", "top_consumers", "leaks",
                      "timeline", "statistics", "repetitions"},
                name);
    EXPECT_EQ(run["workload"], kSmallWorkload);
    const json& m = run["metrics"];
    expect_keys(m, kRunMetrics, name + " metrics");
    for (const char* op : {"alloc", "free"}) expect_keys(m["latency_ns"][op], kLatencyKeys, name + " latency_ns." + op);
    EXPECT_EQ(m["lower_bound_bytes"], w["lower_bound_bytes"]);
    EXPECT_EQ(m["planner_bytes"], w["planner_bytes"]);
    EXPECT_LE(m["peak_requested_bytes"].get<std::uint64_t>(), m["peak_allocated_bytes"].get<std::uint64_t>()) << name;
    EXPECT_LE(m["peak_allocated_bytes"].get<std::uint64_t>(), m["peak_reserved_bytes"].get<std::uint64_t>()) << name;
    EXPECT_EQ(m["leaked_bytes"], 0) << name;  // a training step ends empty
    if (name != "pool.fixed") {
      EXPECT_EQ(m["peak_requested_bytes"], w["lower_bound_bytes"]) << name;  // every request served
      EXPECT_EQ(m["oom_count"], 0) << name;
    }

    ASSERT_EQ(run["repetitions"].size(), 3u) << name;
    for (const json& rep : run["repetitions"]) {
      expect_keys(rep, {"ops_per_second", "seconds", "peak_requested_bytes", "peak_reserved_bytes", "oom_count"}, name + " repetition");
      expect_keys(rep["latency_ns"]["alloc"], kLatencyKeys, name + " repetition latency");
    }
    ASSERT_FALSE(run["statistics"].empty()) << name;
    for (const auto& [metric, s] : run["statistics"].items()) {
      expect_keys(s, {"median", "min", "max", "cv", "n"}, name + " statistics." + metric);
      EXPECT_EQ(s["n"], 3) << metric;
      EXPECT_LE(s["min"].get<double>(), s["median"].get<double>()) << metric;
      EXPECT_LE(s["median"].get<double>(), s["max"].get<double>()) << metric;
      EXPECT_GE(s["cv"].get<double>(), 0.0) << metric;
    }
    EXPECT_TRUE(run["statistics"].contains("ops_per_second"));
    EXPECT_TRUE(run["statistics"].contains("latency_ns.alloc.p50"));

    const json& timeline = run["timeline"];
    expect_keys(timeline, {"op_index", "requested_bytes", "allocated_bytes", "reserved_bytes", "external_fragmentation"},
                name + " timeline");
    const std::size_t length = timeline["op_index"].size();
    EXPECT_GT(length, 0u);
    for (const auto& [column, values] : timeline.items()) EXPECT_EQ(values.size(), length) << name << " " << column;
    EXPECT_EQ(timeline["op_index"].back().get<std::uint64_t>() + 1, w["events"].get<std::uint64_t>());  // the last op
  }
  EXPECT_EQ(allocators, (std::set<std::string>{"buddy", "caching.pytorch", "pool.fixed", "planner"}));
  for (const json& run : d["runs"]) {
    if (run["allocator"] == "planner") {
      EXPECT_EQ(run["metrics"]["peak_reserved_bytes"], w["planner_bytes"]);
    }
    if (run["allocator"] == "pool.fixed") {
      EXPECT_GT(run["metrics"]["oom_count"].get<std::uint64_t>(), 0u);
    }
  }

  // results.csv: the header, then every numeric leaf of every run's metrics ("median") and of each
  // repetition (1..3), values as in the JSON.
  std::istringstream csv(slurp(out / "results.csv"));
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "workload,allocator,config,repetition,metric,value");
  std::map<std::string, std::map<std::string, std::map<std::string, double>>> rows;  // allocator, repetition, metric
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = csv_fields(line);
    ASSERT_EQ(f.size(), 6u) << line;
    EXPECT_EQ(f[0], kSmallWorkload);
    rows[f[1]][f[3]][f[4]] = std::stod(f[5]);
  }
  for (const json& run : d["runs"]) {
    const std::string name = run["allocator"];
    std::map<std::string, double> expected;
    numeric_leaves(run["metrics"], "", expected);
    EXPECT_EQ(rows[name]["median"], expected) << name;
    for (int i = 1; i <= 3; ++i) {
      std::map<std::string, double> rep;
      numeric_leaves(run["repetitions"][i - 1], "", rep);
      EXPECT_EQ(rows[name][std::to_string(i)], rep) << name << " repetition " << i;
    }
  }
  EXPECT_EQ(rows.size(), d["runs"].size());
  // A config holding commas is quoted, and reads back whole.
  EXPECT_NE(slurp(out / "results.csv").find(",\"buddy:min_block=512,arena=1GiB,cache=8\","), std::string::npos);
  EXPECT_TRUE(temporary_files(dir).empty());
}

TEST(ReplayCli, AllRunsEveryAllocatorAndReportsFailedRequests) {
  const ScratchDir scratch;
  const std::filesystem::path& dir = scratch.path();
  const Result list = run("list --json");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  std::set<std::string> expected;
  const json catalog = json::parse(list.out);
  for (const json& a : catalog["allocators"]) {
    if (a["name"] != "system") expected.insert(a["name"].get<std::string>());
  }
  ASSERT_GT(expected.size(), 5u);

  const Result r = run("replay --workload " + kSmallWorkload + " --allocator all --repetitions 1 --out " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json d = json::parse(slurp(dir / "results.json"));
  std::set<std::string> got;
  for (const json& run : d["runs"]) got.insert(run["allocator"].get<std::string>());
  for (const std::string& name : expected) EXPECT_TRUE(got.count(name) == 1) << name << " missing from --allocator all";
  EXPECT_EQ(got.count("system"), 0u);  // this process's own malloc cannot replay on a simulated device
  EXPECT_EQ(got.count("planner"), 1u);
  for (const std::string& name : got) {
    // system.* rows (child processes on host memory) may come too; nothing else.
    EXPECT_TRUE(expected.count(name) == 1 || name == "planner" || name.rfind("system.", 0) == 0) << name;
  }
  for (const json& run : d["runs"]) {
    if (!run.contains("timeline")) continue;  // a failed row
    const std::size_t length = run["timeline"]["op_index"].size();
    for (const auto& [column, values] : run["timeline"].items()) EXPECT_EQ(values.size(), length) << run["allocator"] << " " << column;
  }
  bool saw_fixed = false;
  for (const json& run : d["runs"]) {
    if (run["allocator"] != "pool.fixed") continue;
    saw_fixed = true;
    EXPECT_GT(run["metrics"]["oom_count"].get<std::uint64_t>(), 0u);
    EXPECT_NE(run.value("note", std::string()).find("failed requests"), std::string::npos) << run.dump();
    EXPECT_LT(run["metrics"]["peak_requested_bytes"].get<std::uint64_t>(), d["workloads"][0]["lower_bound_bytes"].get<std::uint64_t>());
  }
  EXPECT_TRUE(saw_fixed);
  EXPECT_TRUE(temporary_files(dir).empty());
}

// Runs tiermark in a process of its own (fork and exec, so that the signal reaches it alone).
pid_t spawn(const std::vector<std::string>& args, const std::filesystem::path& output) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(TIERMARK_CLI_PATH));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    FILE* log = std::freopen(output.c_str(), "w", stdout);
    if (log != nullptr) dup2(fileno(log), STDERR_FILENO);
    signal(SIGINT, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(TIERMARK_CLI_PATH, argv.data());
    _exit(127);
  }
  return pid;
}

// Waits up to `timeout` for `pid`; kills it when it does not end. Returns waitpid's status, or -1.
int wait_for(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST(ReplayCli, InterruptKeepsFinishedRows) {
  const ScratchDir scratch;
  const std::filesystem::path& dir = scratch.path();
  const std::filesystem::path out = dir / "out";
  // Each repetition rewrites results.json, so 1000 repetitions take tens of seconds: SIGINT lands mid-run.
  const pid_t pid = spawn({"replay", "--workload", "transformer/cs336-2.7b:steps=2", "--allocator",
                           "caching.pytorch,caching.bfc", "--repetitions", "1000", "--out", out.string()},
                          dir / "output.txt");
  ASSERT_GT(pid, 0);
  const auto appear_timeout = std::chrono::seconds(sanitized() ? 300 : 30);
  const auto deadline = std::chrono::steady_clock::now() + appear_timeout;
  bool appeared = false;
  int early_status = 0;
  bool exited_early = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(out / "results.json")) {
      appeared = true;
      break;
    }
    if (waitpid(pid, &early_status, WNOHANG) == pid) {
      exited_early = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!appeared) {
    if (!exited_early) wait_for(pid, std::chrono::seconds(0));
    FAIL() << "results.json did not appear (exited early: " << exited_early << ")\n" << slurp(dir / "output.txt");
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  const int status = wait_for(pid, std::chrono::seconds(sanitized() ? 600 : 120));
  ASSERT_NE(status, -1) << "tiermark did not stop after SIGINT\n" << slurp(dir / "output.txt");
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status << "\n" << slurp(dir / "output.txt");
  EXPECT_EQ(WEXITSTATUS(status), 130) << slurp(dir / "output.txt");
  EXPECT_NE(slurp(dir / "output.txt").find("interrupted"), std::string::npos);

  const json d = json::parse(slurp(out / "results.json"));
  EXPECT_EQ(d["interrupted"], true);
  ASSERT_EQ(d["runs"].size(), 3u);  // the two allocators and the planner
  for (const json& run : d["runs"]) {
    ASSERT_TRUE(run.contains("repetitions")) << run["allocator"];
    const std::size_t reps = run["repetitions"].size();
    EXPECT_GE(reps, 1u) << run["allocator"];
    EXPECT_LT(reps, 1000u) << run["allocator"];
    EXPECT_EQ(run["statistics"]["ops_per_second"]["n"], reps);
    EXPECT_TRUE(run["metrics"].contains("peak_reserved_bytes"));
  }
  EXPECT_EQ(slurp(out / "results.csv").rfind("workload,allocator,config,repetition,metric,value\n", 0), 0u);
  EXPECT_TRUE(temporary_files(dir).empty());
}

TEST(ReplayCli, BadArgumentsGiveOneLineAndExitTwo) {
  const ScratchDir scratch;
  const std::filesystem::path& dir = scratch.path();
  write_file(dir / "good.csv", "op,id,size\nalloc,1,100\nfree,1,\n");
  write_file(dir / "bad.csv", "op,id,size\nalloc,1,100\nfree,2,\n");  // line 3 frees an unknown id
  std::filesystem::create_directories(dir / "a_directory");
  const std::string w = "--workload " + kSmallWorkload + " ";
  struct Case {
    std::string args;
    std::string expected;  // a part of the message
  };
  const std::vector<Case> cases = {
      {"--allocator bump", "--workload SPEC or --trace FILE"},
      {w + "--allocator no.such.allocator", "no.such.allocator"},
      {w + "--allocator bump,no.such.allocator", "no.such.allocator"},
      {w, "--allocator"},
      {w + "--allocator bump --device-capacity 12XB", "12XB"},
      {w + "--allocator bump --repetitions 0", "--repetitions"},
      {w + "--allocator bump --repetitions -1", "--repetitions"},
      {w + "--allocator bump --repetitions abc", "abc"},
      {"--trace " + (dir / "missing.csv").string() + " --allocator bump", "missing.csv"},
      {"--trace " + (dir / "a_directory").string() + " --allocator bump", "a_directory"},
      {w + "--allocator bump --touch full", "--memory host"},
      {w + "--allocator bump --touch sideways", "sideways"},
      {w + "--allocator bump --memory gpu", "gpu"},
      {"--trace " + (dir / "bad.csv").string() + " --allocator bump", "line 3"},
      {w + "--allocator bump:chunk=0", "chunk"},
      {w + "--allocator bump --bogus-option", "bogus-option"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::filesystem::path out = dir / ("out" + std::to_string(i));
    const Result r = run("replay " + c.args + " --out " + out.string());
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.err;
    EXPECT_EQ(lines(r.err), 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_FALSE(std::filesystem::exists(out / "results.json")) << c.args;
    EXPECT_TRUE(temporary_files(dir).empty()) << c.args;
  }

  const Result unwritable = run("replay " + w + "--allocator bump --out /proc/forbidden");
  EXPECT_EQ(unwritable.exit_code, 2) << unwritable.err;
  EXPECT_EQ(lines(unwritable.err), 1) << unwritable.err;
  EXPECT_NE(unwritable.err.find("/proc/forbidden"), std::string::npos) << unwritable.err;

  // An --out that is a file, not a directory.
  write_file(dir / "a_file", "x");
  const Result file_out = run("replay " + w + "--allocator bump --out " + (dir / "a_file").string());
  EXPECT_EQ(file_out.exit_code, 2) << file_out.err;
  EXPECT_EQ(lines(file_out.err), 1) << file_out.err;
  EXPECT_EQ(slurp(dir / "a_file"), "x");

  // The good trace replays, named by its file, and the run leaves no temporary file behind.
  const std::filesystem::path out = dir / "good";
  const Result good = run("replay --trace " + (dir / "good.csv").string() + " --allocator bump --repetitions 1 --out " + out.string());
  ASSERT_EQ(good.exit_code, 0) << good.err;
  const json d = json::parse(slurp(out / "results.json"));
  EXPECT_EQ(d["workloads"][0]["source"], "trace");
  EXPECT_EQ(d["workloads"][0]["lower_bound_bytes"], 100);
  EXPECT_TRUE(temporary_files(dir).empty());
}

// Allocator locality through the CLI: with --memory host --touch full each row reports the first-touch
// bandwidth and the cache-resident share of touched bytes, in the JSON and in the console table;
// a caching allocator reuses freed memory (some bytes resident), bump never does.
TEST(ReplayCli, HostFullTouchReportsLocalityPerAllocator) {
  const ScratchDir scratch;
  const std::filesystem::path out = scratch.path() / "locality";
  const Result r = run("replay --workload " + kSmallWorkload +
                       " --allocator caching.pytorch,bump --memory host --touch full --repetitions 1 --no-planner --out " +
                       out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("first touch of each block"), std::string::npos) << r.out;
  const json d = json::parse(slurp(out / "results.json"));
  std::map<std::string, json> metrics;
  for (const json& run : d["runs"]) metrics[run["allocator"]] = run["metrics"];
  for (const char* allocator : {"caching.pytorch", "bump"}) {
    const json& m = metrics.at(allocator);
    EXPECT_GT(m["touched_bytes"].get<double>(), 0) << allocator;
    EXPECT_GT(m["touch_bandwidth_bytes_per_second"].get<double>(), 0) << allocator;
    EXPECT_GT(m["touch_cache_bytes"].get<double>(), 0) << allocator;
  }
  EXPECT_GT(metrics.at("caching.pytorch")["touch_cache_resident_fraction"].get<double>(),
            metrics.at("bump")["touch_cache_resident_fraction"].get<double>());
}

// --memory cuda: real device memory with a device; without one (this machine kind), one line saying
// so and exit 2 before any pass, whatever the build.
TEST(ReplayCli, CudaMemoryReplaysOrSaysThereIsNoDevice) {
  const ScratchDir scratch;
  const std::filesystem::path out = scratch.path() / "cuda";
  const Result r = run("replay --workload " + kSmallWorkload + " --allocator caching.pytorch --repetitions 1 --memory cuda --out " +
                       out.string());
  if (!tiermark::cuda::probe().unavailable.empty()) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("no CUDA device"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out / "results.json"));
  } else {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json d = json::parse(slurp(out / "results.json"));
    EXPECT_EQ(d["runs"][0]["upstream"].get<std::string>().rfind("cuda", 0), 0u);
  }
  const Result typo = run("replay --workload " + kSmallWorkload + " --allocator bump --memory cuda:devcie=1 --out " + out.string());
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("devcie"), std::string::npos) << typo.err;
}

}  // namespace
