// The command-line contract: `tiermark list` and `tiermark list --json`, exit codes, and one clear
// line for bad input. Runs the real binary (build/<preset>/tiermark) as a user would.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/integration/cli_runner.h"

namespace {

using tiermark::testing::lines;
using tiermark::testing::Result;
using tiermark::testing::run;

TEST(Cli, ListJsonNamesEveryAllocatorWithOptionsAndDefaults) {
  const Result r = run("list --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json json = nlohmann::json::parse(r.out);
  std::vector<std::string> names;
  for (const auto& allocator : json.at("allocators")) {
    names.push_back(allocator.at("name"));
    EXPECT_FALSE(allocator.at("description").get<std::string>().empty());
    for (const auto& option : allocator.at("options")) {
      EXPECT_TRUE(option.contains("name") && option.contains("default") && option.contains("description")) << option;
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"bump", "system", "buddy", "pool.fixed", "pool.sizeclass", "pool.coalescing",
                                             "caching.pytorch", "caching.bfc", "caching.vmm"}));
  const auto& fixed = json.at("allocators").at(3);
  EXPECT_EQ(fixed.at("options").at(0).at("name"), "block_size");
  EXPECT_EQ(fixed.at("options").at(0).at("default"), "1MiB");
  std::vector<std::string> sources;
  for (const auto& source : json.at("memory_sources")) sources.push_back(source.at("name"));
  EXPECT_EQ(sources, (std::vector<std::string>{"host", "simulated", "cuda"}));
}

TEST(Cli, ListTableShowsAllocatorsAndDefaults) {
  const Result r = run("list");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("pool.coalescing"), std::string::npos);
  EXPECT_NE(r.out.find("min_block=512"), std::string::npos);
}

TEST(Cli, BadInputIsOneLineAndExitCodeTwo) {
  for (const char* args : {"frobnicate", "list --jsn", "list extra"}) {
    const Result r = run(args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(lines(r.err), 1) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args;
  }
  EXPECT_EQ(run("").exit_code, 2);
}

TEST(Cli, HelpAndVersionSucceed) {
  EXPECT_EQ(run("--help").exit_code, 0);
  EXPECT_EQ(run("list --help").exit_code, 0);
  const Result version = run("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("tiermark ", 0), 0u);
}

}  // namespace
