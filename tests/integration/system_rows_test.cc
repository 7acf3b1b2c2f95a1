// The system.* replay rows, driven through the CLI: each malloc library replays in a child process of
// its own and reports peak RSS and page faults besides the usual metrics; a missing library skips
// its row with a note; a child that fails fails its row, not the run. Preloading another malloc into
// a sanitizer build conflicts with the sanitizer's own malloc, so those tests skip there.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/system_malloc_runner.h"
#include "tests/integration/cli_runner.h"

namespace tiermark {
namespace {

using json = nlohmann::json;
using testing::run;

constexpr const char* kWorkload = "transformer/gpt2-small:steps=1,b=1,s=64";

bool sanitized() { return std::string(TIERMARK_SANITIZER).size() != 0; }

std::string temp_dir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("system_rows_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

std::map<std::string, json> runs_by_allocator(const json& document) {
  std::map<std::string, json> out;
  for (const json& r : document.at("runs")) out[r.at("allocator").get<std::string>()] = r;
  return out;
}

// Sets an environment variable for the tiermark processes this test starts, and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(SystemRowsTest, EachMallocReplaysInItsOwnProcess) {
  if (sanitized()) GTEST_SKIP() << "preloading another malloc conflicts with the " << TIERMARK_SANITIZER << " sanitizer's malloc";
  const std::string dir = temp_dir("each");
  const std::string path = dir + "/out.json";
  const testing::Result r = run(std::string("replay --workload ") + kWorkload +
                                " --allocator system.glibc,system.jemalloc,system.mimalloc,system.tcmalloc"
                                " --repetitions 2 --latency --no-planner --out " + dir + " --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json document = read_json(path);
  const std::uint64_t allocs = document.at("workloads").at(0).at("allocs").get<std::uint64_t>();
  const std::map<std::string, json> runs = runs_by_allocator(document);
  const std::map<std::string, std::string> files = {
      {"system.jemalloc", "libjemalloc.so.2"},
      {"system.mimalloc", "libmimalloc.so.2"},
      {"system.tcmalloc", "libtcmalloc_minimal.so.4"}};
  for (const std::string& name : system_malloc_specs()) {
    SCOPED_TRACE(name);
    if (files.contains(name) && !find_malloc_library(files.at(name))) {
      // Not installed here: skipped with a note, as the next test checks.
      EXPECT_FALSE(runs.contains(name));
      continue;
    }
    ASSERT_TRUE(runs.contains(name)) << r.out << r.err;
    const json& row = runs.at(name);
    EXPECT_FALSE(row.contains("failed")) << row.value("note", "");
    EXPECT_EQ(row.at("memory"), "host");
    EXPECT_EQ(row.at("malloc"), name.substr(std::string("system.").size()));
    EXPECT_FALSE(row.at("library").get<std::string>().empty());
    if (files.contains(name)) {
      EXPECT_EQ(std::filesystem::path(row.at("library").get<std::string>()).filename(), files.at(name));
    }
    const json& m = row.at("metrics");
    EXPECT_GT(m.at("ops_per_second").get<double>(), 0);
    EXPECT_GT(m.at("peak_rss_bytes").get<double>(), 0);
    EXPECT_TRUE(m.at("page_faults").is_number());
    EXPECT_GT(m.at("rss_before_pass_bytes").get<double>(), 0);
    EXPECT_GE(m.at("peak_rss_bytes").get<double>(), m.at("rss_before_pass_bytes").get<double>());
    // The child's histograms arrive whole: one latency per allocation of the trace.
    EXPECT_EQ(m.at("latency_ns").at("alloc").at("count").get<std::uint64_t>(), allocs);
    EXPECT_EQ(m.at("peak_requested_bytes"), document.at("workloads").at(0).at("lower_bound_bytes"));
    EXPECT_EQ(row.at("repetitions").size(), 2u);
    EXPECT_EQ(row.at("statistics").at("peak_rss_bytes").at("n"), 2);
  }
  EXPECT_NE(r.out.find("system.jemalloc"), std::string::npos) << r.out;
}

TEST(SystemRowsTest, MissingLibrarySkipsItsRowWithANote) {
  const std::string dir = temp_dir("missing");
  const std::string path = dir + "/out.json";
  const ScopedEnv env("TIERMARK_MALLOC_LIBRARY_DIRS", dir + "/no-such-dir");
  const testing::Result r = run(std::string("replay --workload ") + kWorkload +
                                " --allocator system.glibc,system.jemalloc --repetitions 1 --no-planner --out " + dir +
                                " --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json document = read_json(path);
  const std::map<std::string, json> runs = runs_by_allocator(document);
  EXPECT_TRUE(runs.contains("system.glibc"));
  EXPECT_FALSE(runs.contains("system.jemalloc"));
  ASSERT_EQ(document.at("notes").size(), 1u);
  // Notes name the workload they belong to (a run may replay several).
  EXPECT_EQ(document.at("notes").at(0), std::string(kWorkload) + ": system.jemalloc skipped: libjemalloc.so.2 not found (apt-get install libjemalloc2)");
  EXPECT_NE(r.out.find(": system.jemalloc skipped"), std::string::npos) << r.out;
}

TEST(SystemRowsTest, FailingChildFailsItsRowNotTheRun) {
  // A file that is no shared library: the dynamic linker ignores it, so the child finds glibc serving
  // malloc instead of jemalloc and refuses to measure it.
  const std::string dir = temp_dir("broken");
  const std::string path = dir + "/out.json";
  std::ofstream(dir + "/libjemalloc.so.2") << "not a library\n";
  const ScopedEnv env("TIERMARK_MALLOC_LIBRARY_DIRS", dir);
  const testing::Result r = run(std::string("replay --workload ") + kWorkload +
                                " --allocator system.jemalloc,buddy --repetitions 1 --no-planner --out " + dir +
                                " --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::map<std::string, json> runs = runs_by_allocator(read_json(path));
  ASSERT_TRUE(runs.contains("system.jemalloc"));
  const json& failed = runs.at("system.jemalloc");
  EXPECT_EQ(failed.at("failed"), true);
  EXPECT_TRUE(failed.at("note").get<std::string>().starts_with("failed in the memory pass: child process exited with status"))
      << failed.at("note");
  EXPECT_FALSE(failed.at("metrics").contains("ops_per_second"));
  ASSERT_TRUE(runs.contains("buddy"));
  EXPECT_GT(runs.at("buddy").at("metrics").at("ops_per_second").get<double>(), 0);
  EXPECT_NE(r.err.find("system.jemalloc failed in the memory pass"), std::string::npos) << r.err;
}

TEST(SystemRowsTest, InProcessSystemIsRefusedOnASimulatedDevice) {
  const testing::Result r = run(std::string("replay --workload ") + kWorkload + " --allocator system --no-planner --out " +
                                temp_dir("refused"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("system.glibc"), std::string::npos) << r.err;
}

TEST(SystemRowsTest, AllAddsTheSystemRows) {
  if (sanitized()) GTEST_SKIP() << "preloading another malloc conflicts with the " << TIERMARK_SANITIZER << " sanitizer's malloc";
  const std::string dir = temp_dir("all");
  const std::string path = dir + "/out.json";
  const testing::Result r = run(std::string("replay --workload ") + kWorkload + " --allocator all --repetitions 1 --out " + dir +
                                " --json " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::map<std::string, json> runs = runs_by_allocator(read_json(path));
  ASSERT_TRUE(runs.contains("system.glibc"));
  EXPECT_GT(runs.at("system.glibc").at("metrics").at("peak_rss_bytes").get<double>(), 0);
  EXPECT_FALSE(runs.contains("system"));
}

}  // namespace
}  // namespace tiermark
