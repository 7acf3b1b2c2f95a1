// The `tiermark trace` contract: gen, convert and stats on every built-in generator, both formats
// and RMM logs; the stats JSON keys; exit code 2 with one line for bad input; results already on
// disk are never lost to a failed run.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/integration/cli_runner.h"

namespace {

using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;

// A directory of each test's own (ctest runs tests in parallel, and other runs may share the temp
// directory), so that the check for left-over temporary files sees only this test's files.
std::string temp(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/trace_cli_test." + std::to_string(::getpid()) + "." +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

nlohmann::json stats_json(const std::string& path) {
  const Result r = run("trace stats " + path + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

// Small configurations of every generator, so the test runs in seconds.
const std::vector<std::pair<std::string, std::string>> kWorkloads = {
    {"transformer", "transformer/cs336-2.7b:L=2,steps=2"},
    {"cnn", "cnn/resnet50:batch=2,steps=1"},
    {"llm", "llm-serve/llama2-7b:requests=20,kv=paged"},
};

TEST(TraceCli, GenConvertAndStatsAgreeForEveryGenerator) {
  for (const auto& [name, spec] : kWorkloads) {
    SCOPED_TRACE(spec);
    const std::string tmt = temp(name + ".tmt"), csv = temp(name + ".csv"), back = temp(name + "_back.tmt");
    Result r = run("trace gen '" + spec + "' -o " + tmt);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("events/s"), std::string::npos) << r.out;
    ASSERT_EQ(run("trace convert " + tmt + " -o " + csv).exit_code, 0);
    ASSERT_EQ(run("trace convert " + csv + " -o " + back).exit_code, 0);
    EXPECT_EQ(slurp(tmt), slurp(back)) << "binary -> CSV -> binary is byte-identical";

    const nlohmann::json stats = stats_json(tmt);
    nlohmann::json csv_stats = stats_json(csv);
    csv_stats["file"] = tmt;
    EXPECT_EQ(csv_stats, stats) << "both formats describe the same trace";
    for (const char* key : {"events", "allocs", "frees", "distinct_sizes", "peak_live_bytes", "lifetime", "size_histogram",
                            "top_tags", "metadata"}) {
      EXPECT_TRUE(stats.contains(key)) << key;
    }
    EXPECT_GT(stats["allocs"].get<long>(), 0);
    EXPECT_EQ(stats["allocs"], stats["frees"]) << "generated traces end empty";
    EXPECT_EQ(stats["metadata"]["ends_empty"], "true");
    EXPECT_EQ(stats["metadata"]["spec"].get<std::string>().rfind(spec.substr(0, spec.find('/')) + ":", 0), 0u);
    const double bytes_per_event = static_cast<double>(std::filesystem::file_size(tmt)) / stats["events"].get<double>();
    EXPECT_LE(bytes_per_event, 6.0) << "the binary format's budget on the built-in workloads";
  }
}

TEST(TraceCli, RmmLogConvertsWithFrom) {
  const std::string log = temp("rmm.csv"), out = temp("rmm.tmt");
  std::ofstream(log) << "Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x1000,256,0x0\n1,0.2,free,0x1000,256,0x0\n";
  ASSERT_EQ(run("trace convert " + log + " -o " + out + " --from rmm").exit_code, 0);
  const nlohmann::json stats = stats_json(out);
  EXPECT_EQ(stats["allocs"], 1);
  EXPECT_EQ(stats["metadata"]["source"], "rmm-log");
}

TEST(TraceCli, BadInputIsOneLineExitTwoAndKeepsExistingOutput) {
  const std::string keep = temp("keep.csv");
  std::ofstream(keep) << "op,id,size\nalloc,1,8\nfree,1,\n";
  const std::string before = slurp(keep);
  const std::string bad = temp("bad.csv");
  std::ofstream(bad) << "op,id,size\nalloc,1,8\nfree,2,\n";
  struct Case {
    std::string args;
    std::string expected;  // part of the one line
  };
  const std::vector<Case> cases = {
      {"trace stats " + temp("missing.csv"), "cannot open: No such file or directory"},
      {"trace convert " + bad + " -o " + keep, "bad.csv: line 3: free of id 2, which was never allocated"},
      {"trace gen nosuch -o " + keep, "unknown workload 'nosuch'"},
      {"trace gen transformer/nosuch -o " + keep, "unknown preset 'nosuch'"},
      {"trace gen transformer:colour=red -o " + keep, "unknown option 'colour'"},
      {"trace gen transformer -o " + temp("out.txt"), "unknown trace format"},
      {"trace convert " + keep + " -o " + keep + " --from xml", "unknown trace format 'xml'"},
      {"trace frobnicate", "unknown subcommand 'frobnicate'"},
      {"trace", "missing subcommand"},
      {"trace stats", "trace stats: the option '--input' is required"},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args;
    EXPECT_EQ(lines(r.err), 1) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << ": " << r.err;
    EXPECT_EQ(slurp(keep), before) << c.args << " touched an existing file";
  }
  ASSERT_EQ(run("trace gen cnn/resnet50:batch=1,steps=1 -o " + temp("whole.tmt")).exit_code, 0);
  std::string corrupt = slurp(temp("whole.tmt"));
  corrupt.resize(corrupt.size() / 2);
  std::ofstream(temp("half.tmt"), std::ios::binary) << corrupt;
  const Result truncated = run("trace stats " + temp("half.tmt"));
  EXPECT_EQ(truncated.exit_code, 2);
  EXPECT_NE(truncated.err.find("truncated file"), std::string::npos) << truncated.err;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(keep).parent_path())) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << "temporary file left behind: " << entry.path();
  }
}

TEST(TraceCli, CaptureRecordsACommandAndPassesItsExitStatusThrough) {
  if (std::string(TIERMARK_SANITIZER).size() != 0) GTEST_SKIP() << "the capture library is not preloaded into sanitized programs";
  const std::string trace = temp("captured.tmt");
  Result r = run("trace capture -o " + trace + " -- " + TIERMARK_CAPTURE_TARGET + " threads 2 1 1000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("exited with status 0"), std::string::npos) << r.out;
  const nlohmann::json stats = stats_json(trace);
  EXPECT_GE(stats["allocs"].get<long>(), 1000);
  EXPECT_GE(stats["threads"].get<long>(), 2);
  EXPECT_EQ(stats["metadata"]["source"], "capture");

  r = run("trace capture -o " + trace + " -- " + TIERMARK_CAPTURE_TARGET + " fork");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("and a child process's trace: " + trace + "."), std::string::npos) << r.out;

  r = run("trace capture -o " + trace + " -- " + TIERMARK_CAPTURE_TARGET);  // usage error: exits 2
  EXPECT_EQ(r.exit_code, 2) << "the command's own status comes back";
  EXPECT_TRUE(std::filesystem::exists(trace));

  EXPECT_EQ(run("trace capture -o " + temp("c.csv") + " -- true").exit_code, 2) << "capture writes .tmt only";
  EXPECT_EQ(run("trace capture -o " + trace).exit_code, 2) << "no command";
  EXPECT_EQ(run("trace capture -o " + trace + " --lib /nonexistent.so -- true").exit_code, 2);
  // A command that cannot be started is bad input: one line, exit 2, and the earlier trace kept.
  r = run("trace capture -o " + trace + " -- /nonexistent/program");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot run '/nonexistent/program'"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(trace)) << "the trace already written is not lost";
  EXPECT_EQ(run("trace capture -o " + trace + " -- no-such-program-on-path").exit_code, 2);
}

TEST(TraceCli, ListShowsGeneratorsWithPresets) {
  const Result r = run("list --json");
  ASSERT_EQ(r.exit_code, 0);
  const nlohmann::json json = nlohmann::json::parse(r.out);
  std::vector<std::string> names;
  for (const auto& workload : json.at("workloads")) {
    names.push_back(workload.at("name"));
    EXPECT_FALSE(workload.at("presets").empty()) << workload.at("name");
    EXPECT_FALSE(workload.at("options").empty()) << workload.at("name");
  }
  EXPECT_EQ(names, (std::vector<std::string>{"transformer", "cnn", "llm-serve"}));
}

}  // namespace
