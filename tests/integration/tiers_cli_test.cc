// The `tiermark tiers` contract, through the real binary: --quick --json FILE follows the
// tiermark-tiers/1 schema (docs/tiers.md); the topology it reports agrees with what the kernel
// (sysfs) and hwloc's own tools say; every tier has positive numbers; bad options give one line on
// stderr and exit 2. Runs are kept tiny (few samples); nothing about timing is asserted beyond > 0.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "tests/integration/cli_runner.h"

namespace {

using json = nlohmann::json;
using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;

std::filesystem::path scratch(const std::string& name) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / ("tiers_cli_test." + std::to_string(::getpid()) + "." + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// One quick run shared by the schema tests: a few seconds (two samples a point).
const json& quick_run() {
  static const json document = [] {
    const auto dir = scratch("quick");
    const Result r = run("tiers --quick --samples 2 --json " + (dir / "t.json").string() + " --out " + (dir / "out").string());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::ifstream in(dir / "t.json");
    json parsed = json::parse(in, nullptr, false);
    EXPECT_TRUE(std::filesystem::exists(dir / "out" / "tiers.json"));
    EXPECT_NE(r.out.find("DRAM"), std::string::npos) << r.out;
    std::filesystem::remove_all(dir);
    return parsed;
  }();
  return document;
}

// sysfs's cache sizes ("48K") for cpu0: level -> bytes, data and unified caches only.
std::map<std::string, std::uint64_t> sysfs_caches() {
  std::map<std::string, std::uint64_t> caches;
  for (int index = 0;; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level(dir + "level"), type(dir + "type"), size(dir + "size");
    if (!level || !type || !size) break;
    std::string l, t, s;
    level >> l;
    type >> t;
    size >> s;
    if (t == "Instruction" || s.empty()) continue;
    std::uint64_t bytes = std::stoull(s);
    if (s.back() == 'K') bytes <<= 10;
    if (s.back() == 'M') bytes <<= 20;
    caches["L" + l] = bytes;
  }
  return caches;
}

TEST(TiersCliTest, QuickJsonFollowsTheSchema) {
  const json& d = quick_run();
  ASSERT_TRUE(d.is_object());
  EXPECT_EQ(d["schema"], "tiermark-tiers/1");
  EXPECT_TRUE(d["context"].is_object());
  EXPECT_TRUE(d["context"].contains("caches"));
  EXPECT_NE(d["byte_counting"].get<std::string>().find("STREAM"), std::string::npos);
  EXPECT_TRUE(std::set<std::string>({"avx512", "avx2", "sse2"}).count(d["isa"].get<std::string>()));
  ASSERT_TRUE(d["topology"]["caches"].is_array());
  for (const json& cache : d["topology"]["caches"]) {
    EXPECT_TRUE(cache["level"] == "L1" || cache["level"] == "L2" || cache["level"] == "L3") << cache;
    EXPECT_TRUE(cache.contains("size_bytes"));
  }
  EXPECT_TRUE(d["topology"]["numa_nodes"].is_array());

  // One tier per cache level the kernel lists, and DRAM, each with positive numbers.
  std::set<std::string> expected = {"DRAM"};
  for (const auto& [level, bytes] : sysfs_caches()) expected.insert(level);
  std::set<std::string> levels;
  for (const json& tier : d["tiers"]) {
    const std::string level = tier["level"];
    if (level.rfind("GPU", 0) == 0) continue;  // the accelerator tier: checked below
    levels.insert(level);
    EXPECT_GT(tier["bandwidth_bytes_per_second"].get<double>(), 0) << level;
    EXPECT_GT(tier["latency_ns"].get<double>(), 0) << level;
    EXPECT_GT(tier["latency_ns_thp"].get<double>(), 0) << level;
    ASSERT_TRUE(tier["bandwidth"].is_object());
    for (const char* key : {"read/1", "write/1", "ntwrite/1", "copy/1", "triad/1"}) {
      EXPECT_GT(tier["bandwidth"][key].get<double>(), 0) << level << " " << key;
    }
  }
  for (const std::string& level : expected) EXPECT_TRUE(levels.count(level)) << "no tier " << level;

  ASSERT_FALSE(d["points"].empty());
  for (const json& p : d["points"]) {
    for (const char* key : {"kernel", "size_bytes", "threads", "bandwidth_bytes_per_second", "median_bytes_per_second", "cv", "latency_ns"}) {
      EXPECT_TRUE(p.contains(key)) << key << " missing in " << p;
    }
    const std::string kernel = p["kernel"];
    if (kernel == "latency" || kernel == "latency_thp") {
      EXPECT_GT(p["latency_ns"].get<double>(), 0);
    } else {
      EXPECT_GT(p["bandwidth_bytes_per_second"].get<double>(), 0) << p;
      EXPECT_GE(p["bandwidth_bytes_per_second"].get<double>(), p["median_bytes_per_second"].get<double>());
    }
  }
  // Several nodes: a matrix; one: null, and the summary says so.
  int nodes = 0;
  while (std::filesystem::exists("/sys/devices/system/node/node" + std::to_string(nodes))) ++nodes;
  if (nodes > 1) {
    EXPECT_TRUE(d["numa_matrix"].is_object());
  } else {
    EXPECT_TRUE(d["numa_matrix"].is_null());
  }
}

// The accelerator tier: with a CUDA device, one GPU tier per device with all three copy directions;
// without one (this machine kind: nvcc but no GPU), the run still succeeds and says why in one note.
TEST(TiersCliTest, AcceleratorIsMeasuredOrItsAbsenceSaid) {
  const json& d = quick_run();
  const json& accelerator = d["accelerator"];
  ASSERT_TRUE(accelerator.is_object()) << d;
  EXPECT_NE(accelerator["method"].get<std::string>().find("nvbandwidth"), std::string::npos);
  if (accelerator["available"] == true) {
    ASSERT_FALSE(accelerator["devices"].empty());
    for (const json& device : accelerator["devices"]) {
      std::set<std::string> directions;
      for (const json& c : device["copies"]) {
        directions.insert(c["direction"].get<std::string>());
        EXPECT_GT(c["bandwidth_bytes_per_second"].get<double>(), 0) << c;
        EXPECT_EQ(c["trial_bytes_per_second"].size(), 3u) << c;
      }
      EXPECT_EQ(directions, (std::set<std::string>{"h2d", "d2h", "d2d"}));
    }
    int gpu_tiers = 0;
    for (const json& tier : d["tiers"]) gpu_tiers += tier["level"].get<std::string>().rfind("GPU", 0) == 0;
    EXPECT_EQ(gpu_tiers, int(accelerator["devices"].size()));
  } else {
    const std::string reason = accelerator["reason"];
    EXPECT_EQ(reason.rfind("no CUDA device", 0), 0u) << reason;
    EXPECT_EQ(reason.find('\n'), std::string::npos);
    bool noted = false;
    for (const json& note : d["notes"]) noted = noted || note.get<std::string>() == "accelerator: " + reason;
    EXPECT_TRUE(noted) << d["notes"];
  }
}

TEST(TiersCliTest, AcceleratorOffLeavesItOut) {
  const auto dir = scratch("no_accelerator");
  const Result r = run("tiers --sizes 16KiB --kernels read --threads 1 --samples 1 --accelerator off --json " +
                       (dir / "t.json").string() + " --out " + (dir / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("note: accelerator"), std::string::npos) << r.out;
  std::ifstream in(dir / "t.json");
  EXPECT_TRUE(json::parse(in)["accelerator"].is_null());
  std::filesystem::remove_all(dir);
}

TEST(TiersCliTest, TopologyAgreesWithSysfsAndHwlocTools) {
  const json& d = quick_run();
  const auto expected = sysfs_caches();
  if (expected.empty()) GTEST_SKIP() << "sysfs lists no caches here";
  std::map<std::string, std::uint64_t> reported;
  for (const json& cache : d["topology"]["caches"]) reported[cache["level"]] = cache["size_bytes"];
  EXPECT_EQ(reported, expected);
  // hwloc's own command-line tool, when installed (Debian package hwloc): the number of cores.
  if (FILE* pipe = popen("hwloc-calc --number-of core all 2>/dev/null", "r")) {
    int cores = -1;
    const bool read = fscanf(pipe, "%d", &cores) == 1;
    pclose(pipe);
    if (read) {
      EXPECT_EQ(d["topology"]["cores"].get<int>(), cores);
    }
  }
}

TEST(TiersCliTest, SizesAndKernelsMakeATinyRun) {
  const auto dir = scratch("tiny");
  const Result r = run("tiers --sizes 16KiB,64KiB --kernels read,triad,latency --threads 1 --samples 1 --json " +
                       (dir / "t.json").string() + " --out " + (dir / "out").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dir / "t.json");
  const json d = json::parse(in);
  std::set<std::pair<std::string, std::uint64_t>> points;
  for (const json& p : d["points"]) points.emplace(p["kernel"], p["size_bytes"]);
  const std::set<std::pair<std::string, std::uint64_t>> want = {
      {"read", 16384}, {"read", 65536}, {"triad", 16384}, {"triad", 65536},
      {"latency", 16384}, {"latency", 65536}, {"latency_thp", 16384}, {"latency_thp", 65536}};
  EXPECT_EQ(points, want);
  std::filesystem::remove_all(dir);
}

TEST(TiersCliTest, BadOptionsGiveOneLineAndExit2) {
  for (const char* args : {"--kernels read,scale", "--sizes 12XB", "--sizes 0", "--threads 0", "--threads 4096",
                           "--membind 4096", "--membind x", "--isa neon", "--samples 0", "--no-such-option",
                           "--accelerator maybe"}) {
    const Result r = run(std::string("tiers ") + args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(lines(r.err), 1) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args;
  }
  const Result membind = run("tiers --membind 4096");
  EXPECT_NE(membind.err.find("NUMA node 4096"), std::string::npos) << membind.err;
}

TEST(TiersCliTest, HelpListsTheOptions) {
  const Result r = run("tiers --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* option : {"--kernels", "--sizes", "--threads", "--membind", "--json", "--out", "--quick", "--accelerator"}) {
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  }
}

}  // namespace
