// The `tiermark stress` contract, through the real binary: every allocator, verified, has no
// corruption; the planted fault (broken.overlap) is caught with exit 1; the JSON has the tiermark/1
// shape with the stress keys of docs/stress.md; a system.glibc row runs in a child and reports its
// peak RSS; OOM storms are counted, not fatal; bad input gives one line, exit 2, and touches no file.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/cli_runner.h"

namespace {

using json = nlohmann::json;
using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;

bool sanitized() { return std::string(TIERMARK_SANITIZER).size() != 0; }

// An empty directory of this test's own (ctest runs tests in parallel).
std::filesystem::path fresh_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / ("stress_cli_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Removes a test's directory unless the test failed (then it is kept for a look).
void tidy(const std::filesystem::path& dir) {
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

// Small runs: blocks up to 64 KiB keep a verified run of a few thousand allocations well under a
// second per allocator, sanitizers included.
const std::string kSmall = " --threads 2 --ops 3000 --verify --max-size 64KiB";

std::vector<std::string> registered_allocators() {
  const Result list = run("list --json");
  std::vector<std::string> names;
  const json catalog = json::parse(list.out);
  for (const json& a : catalog.at("allocators")) names.push_back(a.at("name"));
  return names;
}

TEST(StressCli, EveryAllocatorVerifiedHasNoCorruption) {
  const std::filesystem::path dir = fresh_dir("every");
  // Under a sanitizer, preloading another malloc conflicts with the sanitizer's own: tiermark's
  // allocators only. caching.vmm needs a simulated device, so it runs in the second command.
  std::string list = "all";
  if (sanitized()) {
    list.clear();
    for (const std::string& name : registered_allocators()) {
      if (name != "caching.vmm") list += (list.empty() ? "" : ",") + name;
    }
  }
  const Result host = run("stress --allocator " + list + kSmall + " --out " + (dir / "host").string());
  EXPECT_EQ(host.exit_code, 0) << host.out << host.err;
  const Result simulated = run("stress --allocator caching.vmm,buddy,caching.pytorch --memory simulated" + kSmall + " --out " + (dir / "sim").string());
  EXPECT_EQ(simulated.exit_code, 0) << simulated.out << simulated.err;

  std::set<std::string> seen;
  for (const char* sub : {"host", "sim"}) {
    const json document = read_json(dir / sub / "stress.json");
    for (const json& r : document.at("runs")) {
      const std::string name = r.at("allocator");
      seen.insert(name);
      ASSERT_FALSE(r.value("failed", false)) << name << ": " << r.dump();
      const json& m = r.at("metrics");
      EXPECT_EQ(m.at("corruptions"), 0) << name << ": " << r.value("first_corruption", "");
      EXPECT_GT(m.at("verified_ops").get<std::uint64_t>(), 0u) << name;
      EXPECT_EQ(m.at("allocs").get<std::uint64_t>() + m.at("failed_allocs").get<std::uint64_t>(), 3000u) << name;
      EXPECT_EQ(m.at("allocs"), m.at("frees")) << name;
      EXPECT_GT(m.at("cross_thread_frees").get<std::uint64_t>(), 0u) << name;
    }
  }
  const std::vector<std::string> registered = registered_allocators();
  ASSERT_GT(registered.size(), 5u);
  for (const std::string& name : registered) EXPECT_TRUE(seen.count(name) == 1 || name == "system") << name << " not stressed";
  EXPECT_EQ(seen.count("broken.overlap"), 0u) << "a test-only allocator ran in --allocator all";
  if (!sanitized()) {
    EXPECT_EQ(seen.count("system.glibc"), 1u);
  }
  tidy(dir);
}

TEST(StressCli, BrokenOverlapIsCaughtAndExitsOne) {
  const std::filesystem::path dir = fresh_dir("broken");
  // Two threads handed the same memory write it at once: a real data race, which ThreadSanitizer
  // would report (exit 66) before tiermark could. Under a sanitizer the fault is caught on one thread.
  const std::string threads = sanitized() ? "1" : "2";
  const Result r = run("stress --allocator broken.overlap --verify --ops 20000 --threads " + threads + " --max-size 64KiB --out " + dir.string());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("CORRUPT"), std::string::npos) << r.out;
  const json row = read_json(dir / "stress.json").at("runs").at(0);
  EXPECT_GT(row.at("metrics").at("corruptions").get<std::uint64_t>(), 0u);
  EXPECT_NE(row.at("first_corruption").get<std::string>().find("overlaps live block"), std::string::npos) << row.dump();

  // On a simulated device blocks cannot be written: the overlap check alone catches it.
  const Result simulated = run("stress --allocator broken.overlap:every=100 --memory simulated --verify --ops 5000 --threads 2 --out " + dir.string());
  EXPECT_EQ(simulated.exit_code, 1) << simulated.out << simulated.err;
  EXPECT_GT(read_json(dir / "stress.json").at("runs").at(0).at("metrics").at("corruptions").get<std::uint64_t>(), 0u);

  // Without --verify nothing is checked, so nothing is found: the check is what catches it.
  const Result unverified = run("stress --allocator broken.overlap --ops 5000 --threads 2 --max-size 64KiB --out " + dir.string());
  EXPECT_EQ(unverified.exit_code, 0) << unverified.out << unverified.err;
  tidy(dir);
}

TEST(StressCli, ListShowsBrokenOverlapAsTestOnly) {
  const json catalog = json::parse(run("list --json").out);
  for (const json& a : catalog.at("allocators")) EXPECT_NE(a.at("name"), "broken.overlap");
  ASSERT_EQ(catalog.at("test_allocators").size(), 1u);
  EXPECT_EQ(catalog.at("test_allocators").at(0).at("name"), "broken.overlap");
  EXPECT_EQ(catalog.at("test_allocators").at(0).at("test_only"), true);
  EXPECT_NE(run("list").out.find("broken.overlap  [test only]"), std::string::npos);
}

TEST(StressCli, JsonHasTheResultsSchemaAndTheStressKeys) {
  const std::filesystem::path dir = fresh_dir("json");
  const std::filesystem::path copy = dir / "copy.json";
  const Result r = run("stress --allocator pool.sizeclass --threads 2 --seconds 0.5 --sample-interval 0.05 --verify --sizes dl-mix"
                       " --max-size 4MiB --seed 7 --out " + (dir / "out").string() + " --json " + copy.string());
  const json d = read_json(dir / "out" / "stress.json");
  // A half-second run is enough samples to evaluate the growth gate; it decides the exit code alone.
  EXPECT_EQ(r.exit_code, d.at("runs").at(0).at("growth_gate") == "fail" ? 1 : 0) << r.out << r.err;
  EXPECT_EQ(d, read_json(copy));
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "stress.csv"));
  EXPECT_EQ(d.at("schema"), "tiermark/1");
  for (const char* key : {"host", "cpu", "git_commit", "build_type", "command", "memory", "kernel", "threads", "seconds", "ops",
                          "verify", "sizes", "min_size_bytes", "max_size_bytes", "capacity_bytes", "seed", "sample_interval_seconds"}) {
    EXPECT_TRUE(d.at("context").contains(key)) << key;
  }
  EXPECT_EQ(d.at("context").at("sizes"), "dl-mix");
  EXPECT_EQ(d.at("workloads").at(0).at("name"), "stress/churn");
  ASSERT_EQ(d.at("runs").size(), 1u);
  const json& row = d.at("runs").at(0);
  EXPECT_EQ(row.at("workload"), "stress/churn");
  EXPECT_EQ(row.at("allocator"), "pool.sizeclass");
  EXPECT_EQ(row.at("config").get<std::string>().rfind("pool.sizeclass:", 0), 0u);
  EXPECT_EQ(row.at("memory"), "host");
  for (const char* key : {"ops_per_second", "seconds", "allocs", "frees", "failed_allocs", "cross_thread_frees", "verified_ops",
                          "corruptions", "bytes_allocated", "peak_reserved_bytes", "memory_growth"}) {
    EXPECT_TRUE(row.at("metrics").contains(key)) << key;
  }
  EXPECT_FALSE(row.at("metrics").contains("peak_rss_bytes"));
  const std::set<std::string> gates = {"pass", "fail", "not evaluated"};
  EXPECT_EQ(gates.count(row.at("growth_gate").get<std::string>()), 1u);
  EXPECT_EQ(row.at("timeline").at("seconds").size(), row.at("timeline").at("reserved_bytes").size());
  EXPECT_GE(row.at("timeline").at("seconds").size(), 2u);
  tidy(dir);
}

TEST(StressCli, SystemGlibcRunsInAChildAndReportsPeakRss) {
  if (sanitized()) GTEST_SKIP() << "the child's malloc would be the " << TIERMARK_SANITIZER << " sanitizer's";
  const std::filesystem::path dir = fresh_dir("glibc");
  const Result r = run("stress --allocator system.glibc" + kSmall + " --out " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const json row = read_json(dir / "stress.json").at("runs").at(0);
  EXPECT_EQ(row.at("allocator"), "system.glibc");
  EXPECT_EQ(row.at("malloc"), "glibc");
  EXPECT_FALSE(row.at("library").get<std::string>().empty());
  EXPECT_GT(row.at("metrics").at("peak_rss_bytes").get<std::uint64_t>(), 0u);
  EXPECT_FALSE(row.at("metrics").contains("peak_reserved_bytes"));
  EXPECT_EQ(row.at("timeline").at("seconds").size(), row.at("timeline").at("rss_bytes").size());
  EXPECT_EQ(row.at("metrics").at("corruptions"), 0);
  tidy(dir);
}

TEST(StressCli, OutOfMemoryStormsAreCountedAndTheAllocatorStaysUsable) {
  const std::filesystem::path dir = fresh_dir("oom");
  const Result r = run("stress --allocator buddy:arena=4MiB,caching.bfc --capacity 4MiB --threads 2 --ops 4000 --verify --out " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const json document = read_json(dir / "stress.json");
  for (const json& row : document.at("runs")) {
    const json& m = row.at("metrics");
    EXPECT_GT(m.at("failed_allocs").get<std::uint64_t>(), 0u) << row.at("allocator");
    EXPECT_GT(m.at("allocs").get<std::uint64_t>(), 0u) << row.at("allocator");
    EXPECT_EQ(m.at("corruptions"), 0);
    EXPECT_LE(m.at("peak_reserved_bytes").get<std::uint64_t>(), 4u << 20);
    EXPECT_NE(row.at("note").get<std::string>().find("failed allocations"), std::string::npos);
  }
  tidy(dir);
}

TEST(StressCli, BadInputIsOneLineExitTwoAndTouchesNoFile) {
  const std::filesystem::path dir = fresh_dir("bad");
  const std::filesystem::path out = dir / "out";
  std::filesystem::create_directories(out);
  const std::string sentinel = "{\"kept\": true}\n";
  std::ofstream(out / "stress.json") << sentinel;
  std::ofstream(dir / "a_file") << "not a directory\n";
  const std::string ok = " --allocator bump --threads 1 --ops 10 --out " + out.string();
  const std::vector<std::string> cases = {
      "stress --allocator nosuch --threads 1 --ops 10 --out " + out.string(),
      "stress --allocator bump,nosuch --threads 1 --ops 10 --out " + out.string(),
      "stress --allocator broken.overlap:every=0 --threads 1 --ops 10 --out " + out.string(),
      "stress --allocator system.nosuch --threads 1 --ops 10 --out " + out.string(),
      "stress --threads 1 --ops 10 --out " + out.string(),
      "stress" + ok + " --kernel nosuch",
      "stress" + ok + " --max-size 12XB",
      "stress" + ok + " --min-size 0",
      "stress" + ok + " --min-size 2MiB",
      "stress" + ok + " --capacity huge",
      "stress" + ok + " --capacity 0",
      "stress" + ok + " --sizes normal",
      "stress" + ok + " --sizes dl-mix --min-size 16 --max-size 200",
      "stress" + ok + " --memory device",
      "stress" + ok + " --seed -1",
      "stress" + ok + " --sample-interval 0",
      "stress" + ok + " --seconds 1",
      "stress" + ok + " extra",
      "stress --allocator bump --threads 0 --ops 10 --out " + out.string(),
      "stress --allocator bump --threads -2 --ops 10 --out " + out.string(),
      "stress --allocator bump --threads two --ops 10 --out " + out.string(),
      "stress --allocator bump --threads 1025 --ops 10 --out " + out.string(),
      "stress --allocator bump --threads 1 --ops 0 --out " + out.string(),
      "stress --allocator bump --threads 1 --ops -5 --out " + out.string(),
      "stress --allocator bump --threads 1 --seconds 0 --out " + out.string(),
      "stress --allocator bump --threads 1 --seconds -1 --out " + out.string(),
      "stress --allocator bump --threads 1 --seconds nan --out " + out.string(),
      "stress --allocator bump --threads 1 --out " + out.string(),
      "stress --allocator system --memory simulated --threads 1 --ops 10 --out " + out.string(),
      "stress" + ok + " --json " + (dir / "missing_dir" / "x.json").string(),
      "stress" + ok + " --json " + dir.string(),
      "stress --allocator bump --threads 1 --ops 10 --out " + (dir / "a_file" / "sub").string(),
  };
  for (const std::string& args : cases) {
    const Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.out << r.err;
    EXPECT_EQ(lines(r.err), 1) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args << ": " << r.out;
  }
  std::ifstream in(out / "stress.json");
  std::stringstream kept;
  kept << in.rdbuf();
  EXPECT_EQ(kept.str(), sentinel);
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
  EXPECT_FALSE(std::filesystem::exists(out / "stress.csv"));
  EXPECT_FALSE(std::filesystem::exists(dir / "missing_dir"));
  tidy(dir);
}

}  // namespace
