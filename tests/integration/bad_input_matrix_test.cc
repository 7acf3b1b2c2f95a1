// The bad-input matrix of every command, through the real binary: an unknown allocator, workload,
// kernel or format; a malformed size; a negative or zero count; a missing file; a directory where a
// file belongs; an output directory that cannot be written; conflicting options. Each must give one
// line on stderr naming the problem, exit code 2, nothing on stdout, and leave every result file
// already on disk byte for byte as it was, with no temporary file behind. Then a run killed with
// SIGKILL part-way: the results file it leaves is whole JSON holding the rows it finished.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cli_runner.h"

namespace {

using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;
namespace fs = std::filesystem;

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// A scratch directory holding results from "an earlier run" that no failed command may touch.
class Scratch {
 public:
  Scratch() : dir_(fs::path(::testing::TempDir()) / ("bad_input_matrix." + std::to_string(::getpid()))) {
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "out");
    fs::create_directories(dir_ / "a_directory");
    for (const char* name : {"results.json", "results.csv", "capacity.json", "tiers.json", "stress.json"}) {
      sentinels_[dir_ / "out" / name] = std::string("{\"earlier\": \"") + name + "\"}\n";
    }
    sentinels_[dir_ / "earlier.json"] = "{\"earlier\": \"--json\"}\n";
    sentinels_[dir_ / "earlier.csv"] = "op,id,size\nalloc,1,64\nfree,1,\n";
    for (const auto& [path, text] : sentinels_) write_file(path, text);
    write_file(dir_ / "bad.csv", "op,id,size\nalloc,1,100\nfree,2,\n");  // line 3 frees an id never allocated
    write_file(dir_ / "good.csv", "op,id,size\nalloc,1,100\nfree,1,\n");
  }
  ~Scratch() { fs::remove_all(dir_); }

  // `args` with {dir} replaced by the scratch directory.
  std::string expand(std::string args) const {
    for (std::size_t at; (at = args.find("{dir}")) != std::string::npos;) args.replace(at, 5, dir_.string());
    return args;
  }
  // Every sentinel unchanged and no temporary file anywhere in the scratch tree.
  void expect_untouched(const std::string& what) const {
    for (const auto& [path, text] : sentinels_) EXPECT_EQ(slurp(path), text) << what << ": " << path;
    for (const auto& entry : fs::recursive_directory_iterator(dir_)) {
      EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << what << ": " << entry.path();
    }
    EXPECT_FALSE(fs::exists(dir_ / "new.json")) << what;
    EXPECT_FALSE(fs::exists(dir_ / "new.csv")) << what;
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
  std::map<fs::path, std::string> sentinels_;
};

struct Case {
  std::string args;      // {dir}: the scratch directory
  std::string expected;  // a part of the one-line message
};

const std::string kWorkload = "--workload transformer/gpt2-small:steps=1,L=1,b=1,s=128,h=256,a=4,f=1024,V=8192 ";
const std::string kOut = " --out {dir}/out";

std::vector<Case> matrix() {
  const std::string w = kWorkload;
  return {
      // The tool itself.
      {"no-such-command", "unknown command 'no-such-command'"},
      {"list --no-such-option", "no-such-option"},
      // trace
      {"trace", "missing subcommand"},
      {"trace sideways", "unknown subcommand 'sideways'"},
      {"trace gen no-such-workload -o {dir}/new.csv", "unknown workload 'no-such-workload'"},
      {"trace gen transformer:steps=-1 -o {dir}/new.csv", "steps='-1'"},
      {"trace gen transformer:steps=0 -o {dir}/new.csv", "steps='0'"},
      {"trace gen transformer:steps=x -o {dir}/earlier.csv", "steps='x'"},
      {"trace gen transformer:hidden=12XB -o {dir}/new.csv", "hidden"},
      {"trace gen transformer/gpt2-small:steps=1 -o /proc/no-such-dir/new.csv", "/proc/no-such-dir/new.csv"},
      {"trace gen transformer/gpt2-small:steps=1", "--output"},
      {"trace convert {dir}/missing.csv -o {dir}/new.csv", "missing.csv"},
      {"trace convert {dir}/a_directory -o {dir}/new.csv", "a_directory"},
      {"trace convert {dir}/bad.csv -o {dir}/new.csv", "line 3"},
      {"trace convert {dir}/good.csv --from no-such-format -o {dir}/new.csv", "no-such-format"},
      {"trace stats {dir}/missing.csv", "missing.csv"},
      {"trace stats {dir}/a_directory", "a_directory"},
      {"trace stats {dir}/bad.csv", "line 3"},
      {"trace capture -o {dir}/new.tmt -- /no/such/program", "cannot run '/no/such/program'"},
      {"trace capture -o {dir}/new.tmt", "no command"},
      // replay
      {"replay --allocator bump" + kOut, "--workload SPEC or --trace FILE"},
      {"replay " + w + "--allocator no.such.allocator" + kOut, "no.such.allocator"},
      {"replay --workload no-such-workload --allocator bump" + kOut, "no-such-workload"},
      {"replay " + w + "--allocator bump --device-capacity 12XB" + kOut, "12XB"},
      {"replay " + w + "--allocator bump --device-capacity 0" + kOut, "--device-capacity"},
      {"replay " + w + "--allocator buddy:arena=-1MiB" + kOut, "arena"},
      {"replay " + w + "--allocator bump --repetitions 0" + kOut, "--repetitions"},
      {"replay " + w + "--allocator bump --repetitions -3" + kOut, "--repetitions"},
      {"replay " + w + "--allocator bump --threads 0" + kOut, "--threads"},
      {"replay " + w + "--allocator bump --sample-every x" + kOut, "--sample-every"},
      {"replay " + w + "--allocator bump --max-events-in-memory -5" + kOut, "--max-events-in-memory"},
      {"replay --trace {dir}/missing.csv --allocator bump" + kOut, "missing.csv"},
      {"replay --trace {dir}/a_directory --allocator bump" + kOut, "a_directory"},
      {"replay --trace {dir}/bad.csv --allocator bump" + kOut, "line 3"},
      {"replay --trace {dir}/good.csv --format no-such-format --allocator bump" + kOut, "no-such-format"},
      {"replay " + w + "--allocator bump --memory sideways" + kOut, "sideways"},
      {"replay " + w + "--allocator bump --touch full" + kOut, "--memory host"},  // conflicting options
      {"replay " + w + "--allocator system" + kOut, "--memory host"},            // conflicting options
      {"replay " + w + "--allocator bump --json {dir}/a_directory" + kOut, "is a directory"},
      {"replay " + w + "--allocator bump --json /proc/no-such-dir/new.json" + kOut, "/proc/no-such-dir"},
      {"replay " + w + "--allocator bump --out /proc/no-such-dir", "/proc/no-such-dir"},
      {"replay " + w + "--allocator bump --out {dir}/earlier.json", "earlier.json"},  // a file where a directory belongs
      // capacity
      {"capacity " + w + "--allocator no.such.allocator" + kOut, "no.such.allocator"},
      {"capacity --trace {dir}/missing.csv --allocator bump" + kOut, "missing.csv"},
      {"capacity --workload llm-serve --allocator bump --capacity 12XB" + kOut, "12XB"},
      {"capacity --workload llm-serve --allocator bump --capacity 0" + kOut, "--capacity"},
      {"capacity " + w + "--allocator bump --capacity 8GiB" + kOut, "llm-serve"},  // conflicting options
      {"capacity " + w + "--allocator bump --json {dir}/a_directory" + kOut, "is a directory"},
      {"capacity " + w + "--allocator bump --out /proc/no-such-dir", "/proc/no-such-dir"},
      // tiers
      {"tiers --kernels read,scale" + kOut, "scale"},
      {"tiers --sizes 12XB" + kOut, "12XB"},
      {"tiers --sizes 0" + kOut, "--sizes"},
      {"tiers --threads 0" + kOut, "--threads"},
      {"tiers --threads -2" + kOut, "--threads"},
      {"tiers --samples 0" + kOut, "--samples"},
      {"tiers --membind 4096" + kOut, "NUMA node 4096"},
      {"tiers --accelerator sometimes" + kOut, "--accelerator"},
      {"tiers --sizes 16KiB --kernels read --json {dir}/a_directory" + kOut, "is a directory"},
      {"tiers --sizes 16KiB --kernels read --out /proc/no-such-dir", "/proc/no-such-dir"},
      // stress
      {"stress --allocator no.such.allocator --threads 2 --ops 100" + kOut, "no.such.allocator"},
      {"stress --allocator bump --threads 2 --ops 100 --kernel no-such-kernel" + kOut, "no-such-kernel"},
      {"stress --allocator bump --threads 0 --ops 100" + kOut, "--threads"},
      {"stress --allocator bump --threads 2 --ops 0" + kOut, "--ops"},
      {"stress --allocator bump --threads 2 --ops -5" + kOut, "--ops"},
      {"stress --allocator bump --threads 2 --seconds -1" + kOut, "--seconds"},
      {"stress --allocator bump --threads 2" + kOut, "--seconds"},                   // neither budget
      {"stress --allocator bump --threads 2 --ops 10 --seconds 1" + kOut, "--seconds"},  // both
      {"stress --allocator bump --threads 2 --ops 100 --max-size 12XB" + kOut, "12XB"},
      {"stress --allocator bump --threads 2 --ops 100 --kernel larson --sizes dl-mix" + kOut, "only the churn kernel"},  // conflicting
      {"stress --allocator bump --threads 2 --ops 100 --json {dir}/a_directory" + kOut, "is a directory"},
      {"stress --allocator bump --threads 2 --ops 100 --out /proc/no-such-dir", "/proc/no-such-dir"},
  };
}

TEST(BadInputMatrix, EveryCaseGivesOneLineExit2AndKeepsEarlierResults) {
  const Scratch scratch;
  for (const Case& c : matrix()) {
    const std::string args = scratch.expand(c.args);
    const Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.err;
    EXPECT_EQ(lines(r.err), 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(scratch.expand(c.expected)), std::string::npos) << args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << args << "\n" << r.out;
    scratch.expect_untouched(args);
  }
}

// SIGKILL gives the program no chance to clean up: what is on disk must still be whole, because
// every write goes to a temporary file renamed into place, after each round of repetitions.
TEST(BadInputMatrix, KilledRunKeepsTheRowsItFinished) {
  const Scratch scratch;
  const fs::path out = scratch.dir() / "killed";
  const std::string command = std::string(TIERMARK_CLI_PATH) + " replay --workload transformer/cs336-2.7b:steps=2 " +
                              "--allocator caching.pytorch,caching.bfc --repetitions 1000 --out " + out.string();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command + " >/dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!fs::exists(out / "results.json") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // land somewhere in a later round
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(fs::exists(out / "results.json")) << "no round finished in 5 minutes";
  const nlohmann::json d = nlohmann::json::parse(slurp(out / "results.json"));  // throws on a torn file
  ASSERT_EQ(d["runs"].size(), 3u);  // the two allocators and the planner
  for (const auto& run : d["runs"]) {
    EXPECT_GE(run["repetitions"].size(), 1u) << run["allocator"];
    EXPECT_TRUE(run["metrics"].contains("peak_reserved_bytes")) << run["allocator"];
  }
  EXPECT_EQ(slurp(out / "results.csv").rfind("workload,allocator,config,repetition,metric,value\n", 0), 0u);
}

}  // namespace
