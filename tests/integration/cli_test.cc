// The command-line contract: `tiermark list` and `tiermark list --json`, exit codes, and one clear
// line for bad input. Runs the real binary (build/<preset>/tiermark) as a user would.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Result {
  int exit_code;
  std::string out;
  std::string err;
};

Result run(const std::string& args) {
  const std::string err_path = ::testing::TempDir() + "/tiermark_cli_stderr.txt";
  const std::string command = std::string(TIERMARK_CLI_PATH) + " " + args + " 2>" + err_path;
  Result result{-1, "", ""};
  FILE* pipe = popen(command.c_str(), "r");
  std::array<char, 4096> buffer{};
  while (std::size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) result.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (FILE* err = fopen(err_path.c_str(), "r")) {
    while (std::size_t n = fread(buffer.data(), 1, buffer.size(), err)) result.err.append(buffer.data(), n);
    fclose(err);
  }
  return result;
}

int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

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
  EXPECT_EQ(names, (std::vector<std::string>{"bump", "system", "buddy", "pool.fixed", "pool.sizeclass", "pool.coalescing"}));
  const auto& fixed = json.at("allocators").at(3);
  EXPECT_EQ(fixed.at("options").at(0).at("name"), "block_size");
  EXPECT_EQ(fixed.at("options").at(0).at("default"), "1MiB");
  std::vector<std::string> sources;
  for (const auto& source : json.at("memory_sources")) sources.push_back(source.at("name"));
  EXPECT_EQ(sources, (std::vector<std::string>{"host", "simulated"}));
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
