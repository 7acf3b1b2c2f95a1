// `tiermark capacity` through the real binary: the bisection on a trace whose answers are worked out
// by hand, the planner and lower bound rows, the llm-serve concurrency search on a tiny spec, the
// tiermark/1 JSON, and one line with exit code 2 for bad input.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/integration/cli_runner.h"

namespace {

using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;
using json = nlohmann::json;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "/capacity_cli_" + name; }

// Ten blocks of 768 KiB, all live at once, then all freed. The answers:
//  * lower bound: 10 x 768 KiB = 7.5 MiB.
//  * bump:chunk=1MiB: two blocks never share a 1 MiB chunk (768 + 768 > 1024 KiB), so each block takes
//    a chunk of its own: 10 MiB. At 9 MiB the tenth chunk is refused.
//  * buddy:arena=4MiB: each block rounds up to a 1 MiB buddy block; four fit an arena, so ten take
//    three arenas: 12 MiB (11 MiB cannot hold the third arena).
//  * planner: every buffer conflicts with every other, so the plan lays them end to end: a 7.5 MiB
//    arena, which a whole-MiB search finds as 8 MiB.
// The search starts at floor(7.5) = 7 MiB (fails), tries ceil(7.5) = 8 MiB and doubles to 16 MiB.
std::string known_answer_trace() {
  const std::string path = temp_path("known.csv");
  std::ofstream out(path);
  out << "op,id,size\n";
  for (int i = 0; i < 10; ++i) out << "alloc," << i << "," << 768 * kKiB << "\n";
  for (int i = 0; i < 10; ++i) out << "free," << i << ",\n";
  return path;
}

const json& run_of(const json& document, const std::string& allocator) {
  for (const json& run : document.at("runs")) {
    if (run.at("allocator") == allocator) return run;
  }
  static const json kNone;
  ADD_FAILURE() << "no run for " << allocator;
  return kNone;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

TEST(CapacityCli, BisectionFindsTheHandWorkedAnswers) {
  const std::string trace = known_answer_trace();
  const std::string out_json = temp_path("known.json");
  const Result r = run("capacity --trace " + trace + " --allocator bump:chunk=1MiB,buddy:arena=4MiB --out " +
                       temp_path("known_out") + " --json " + out_json);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json document = read_json(out_json);
  EXPECT_EQ(document.at("schema"), "tiermark/1");
  EXPECT_TRUE(document.at("context").contains("host"));
  ASSERT_EQ(document.at("workloads").size(), 1u);
  EXPECT_EQ(document.at("workloads")[0].at("lower_bound_bytes"), 7.5 * kMiB);
  EXPECT_EQ(document.at("runs").size(), 4u);  // bump, buddy, planner, lower bound

  const json& bump = run_of(document, "bump").at("metrics");
  EXPECT_EQ(bump.at("min_capacity_bytes"), 10 * kMiB);
  EXPECT_DOUBLE_EQ(bump.at("capacity_over_lower_bound").get<double>(), 10.0 / 7.5);
  EXPECT_TRUE(bump.at("monotonic_checked").get<bool>());
  // 7 (fail), 8 (fail), 16, 12, 10 (clean), 9 (fail), then the check at 11 MiB.
  EXPECT_EQ(bump.at("probes"), 7);

  const json& buddy = run_of(document, "buddy").at("metrics");
  EXPECT_EQ(buddy.at("min_capacity_bytes"), 12 * kMiB);
  EXPECT_TRUE(buddy.at("monotonic_checked").get<bool>());

  // Every probe below the answer failed and every one at or above it was clean.
  for (const json& probe : run_of(document, "buddy").at("capacity_probes")) {
    EXPECT_EQ(probe.at("clean").get<bool>(), probe.at("capacity_bytes").get<std::uint64_t>() >= 12 * kMiB) << probe;
  }

  // The table: one row per allocator, the planner and the lower bound.
  EXPECT_NE(r.out.find("10 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("12 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lower_bound"), std::string::npos) << r.out;
}

TEST(CapacityCli, PlannerRowIsItsArenaAndLowerBoundRowIsThePeak) {
  const std::string out_json = temp_path("planner.json");
  const Result r = run("capacity --trace " + known_answer_trace() + " --allocator bump --out " + temp_path("planner_out") +
                       " --json " + out_json);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json document = read_json(out_json);
  const std::uint64_t arena = document.at("workloads")[0].at("planner_bytes");
  EXPECT_EQ(arena, 7.5 * kMiB);
  const json& planner = run_of(document, "planner").at("metrics");
  EXPECT_EQ(planner.at("min_capacity_bytes"), (arena + kMiB - 1) / kMiB * kMiB);  // 8 MiB
  EXPECT_EQ(planner.at("planner_bytes"), arena);
  const json& lower = run_of(document, "lower_bound").at("metrics");
  EXPECT_EQ(lower.at("min_capacity_bytes"), 7.5 * kMiB);
  EXPECT_EQ(lower.at("capacity_over_lower_bound"), 1.0);
  EXPECT_EQ(lower.at("probes"), 0);
}

TEST(CapacityCli, NoPlannerDropsThePlannerRow) {
  const std::string out_json = temp_path("noplanner.json");
  const Result r = run("capacity --trace " + known_answer_trace() + " --allocator bump --no-planner --out " +
                       temp_path("noplanner_out") + " --json " + out_json);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json document = read_json(out_json);
  for (const json& run : document.at("runs")) EXPECT_NE(run.at("allocator"), "planner");
}

// Eight identical requests (64-token prompts, 8 outputs) arriving at once, each reserving max_seq_len
// = 4096 tokens x 512 KiB = 2 GiB (kv=contiguous-max), with the server's KV budget set far above the
// device (kv_capacity) so that only max_num_seqs and the device limit how many run at once. Llama-2-7B's
// weights are 12.55 GiB, so a 24 GiB device holds the weights, the activations of one step and at most
// five 2 GiB reservations (12.55 + 5 x 2 = 22.55 GiB; six would be 24.55 GiB): the lower bound row says
// five, and no allocator can do better.
TEST(CapacityCli, LlmServeMaxConcurrencySmoke) {
  const std::string out_json = temp_path("llm.json");
  const Result r = run(
      "capacity --workload llm-serve:requests=8,dataset=fixed,prompt_len=64,output_len=8,arrival=burst,kv=contiguous-max,"
      "kv_capacity=64GiB --allocator caching.pytorch --capacity 24GiB --out " +
      temp_path("llm_out") + " --json " + out_json);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json document = read_json(out_json);
  EXPECT_EQ(document.at("context").at("capacity_bytes"), std::uint64_t{24} << 30);
  const json& lower = run_of(document, "lower_bound").at("metrics");
  EXPECT_EQ(lower.at("max_num_seqs"), 5);
  EXPECT_EQ(lower.at("max_concurrent_requests"), 5);
  const json& pytorch = run_of(document, "caching.pytorch");
  const std::uint64_t seqs = pytorch.at("metrics").at("max_num_seqs");
  EXPECT_GE(seqs, 1u);
  EXPECT_LE(seqs, 5u);
  EXPECT_GE(pytorch.at("metrics").at("concurrency_probes").get<int>(), 2);
  EXPECT_NE(pytorch.at("concurrency_spec").get<std::string>().find("max_num_seqs=" + std::to_string(seqs)), std::string::npos);
  EXPECT_NE(r.out.find("max_seqs"), std::string::npos) << r.out;
}

void expect_bad_input(const std::string& args, const std::string& words) {
  const Result r = run(args);
  EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.out << r.err;
  EXPECT_EQ(lines(r.err), 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(words), std::string::npos) << args << "\n" << r.err;
}

TEST(CapacityCli, BadInputIsOneLineAndExitCodeTwo) {
  const std::string trace = known_answer_trace();
  const std::string out = " --out " + temp_path("bad_out");
  expect_bad_input("capacity --trace " + trace + " --allocator nosuch" + out, "nosuch");
  expect_bad_input("capacity --trace " + temp_path("missing.csv") + " --allocator bump" + out, "missing.csv");
  expect_bad_input("capacity --trace " + trace + out, "--allocator");
  expect_bad_input("capacity --allocator bump" + out, "--workload");
  expect_bad_input("capacity --trace " + trace + " --allocator buddy:arena=3MiB" + out, "arena");
  expect_bad_input("capacity --workload llm-serve:requests=2 --allocator bump --capacity 40XB" + out, "--capacity");
  expect_bad_input("capacity --trace " + trace + " --allocator bump --capacity 40GiB" + out, "--capacity");
  expect_bad_input("capacity --workload transformer/gpt2-small --allocator bump --capacity 40GiB" + out, "llm-serve");
  expect_bad_input("capacity --workload llm-serve:requests=2,max_num_seqs=4 --allocator bump --capacity 40GiB" + out,
                   "max_num_seqs");
  expect_bad_input("capacity --trace " + trace + " --allocator system" + out, "system");
}

}  // namespace
