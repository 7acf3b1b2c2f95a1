// run_context(): every key of the results `context` is present, the facts that can be checked
// independently (MemTotal, the caches sysfs lists) agree, and host_name() and git_commit() give names
// safe in a result directory.
#include "harness/run_context.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tiermark {
namespace {

// `text` has `shape`'s length, a decimal digit where shape says 'd' and that very character elsewhere.
// (std::regex is avoided: GCC 12 warns inside it at -O1 with the sanitizers.)
bool shaped_like(const std::string& text, std::string_view shape) {
  if (text.size() != shape.size()) return false;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 'd' ? !(text[i] >= '0' && text[i] <= '9') : text[i] != shape[i]) return false;
  }
  return true;
}

bool lower_hex(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

TEST(RunContextTest, EveryKeyIsPresentInSchemaOrder) {
  const auto context = run_context();
  const std::vector<std::string> expected = {
      "date", "host", "cpu", "cpu_mhz", "cores", "threads", "numa_nodes", "caches", "memory_bytes",
      "memory_available_bytes", "kernel", "os", "compiler", "build_type", "sanitizer", "tiermark_version",
      "git_commit", "library_versions", "transparent_hugepage", "transparent_hugepage_defrag", "page_size",
      "cpu_governor", "load_average"};
  std::vector<std::string> keys;
  for (const auto& [key, value] : context.items()) keys.push_back(key);
  EXPECT_EQ(keys, expected);
  for (const char* library : {"hwloc", "glibc", "libstdc++", "nlohmann_json", "boost"}) {
    EXPECT_TRUE(context["library_versions"].contains(library)) << library;
  }
}

TEST(RunContextTest, DateIsUtcIso8601) {
  const auto date = run_context()["date"].get<std::string>();
  EXPECT_TRUE(shaped_like(date, "dddd-dd-ddTdd:dd:ddZ")) << date;
}

TEST(RunContextTest, BuildFactsAreStrings) {
  const auto context = run_context();
  EXPECT_TRUE(context["compiler"].is_string());
  EXPECT_TRUE(context["build_type"].is_string());
  EXPECT_TRUE(context["sanitizer"].is_string());
  EXPECT_TRUE(context["tiermark_version"].is_string());
}

// Read here from sysfs rather than hwloc, so the test does not repeat the code under test.
bool sysfs_lists_caches() { return std::filesystem::exists("/sys/devices/system/cpu/cpu0/cache/index0/level"); }

TEST(RunContextTest, CachesHaveOneItemPerLevelAndTypeWithAnL1) {
  const auto caches = run_context()["caches"];
  ASSERT_TRUE(caches.is_array());
  if (caches.empty()) {
    EXPECT_FALSE(sysfs_lists_caches()) << "the kernel lists caches but the context has none";
    return;
  }
  std::set<std::pair<std::string, std::string>> seen;
  bool has_l1 = false;
  for (const auto& cache : caches) {
    const auto level = cache["level"].get<std::string>();
    const auto type = cache["type"].get<std::string>();
    EXPECT_TRUE(level == "L1" || level == "L2" || level == "L3") << level;
    EXPECT_TRUE(type == "data" || type == "unified") << type;
    EXPECT_TRUE(seen.emplace(level, type).second) << "two items for " << level << " " << type;
    EXPECT_GE(cache["count"].get<int>(), 1);
    for (const char* key : {"size_bytes", "line_bytes", "associativity", "shared_by_pus"}) {
      EXPECT_TRUE(cache.contains(key)) << key;
    }
    if (level == "L1") has_l1 = true;
    if (level == "L2") {
      EXPECT_GT(cache["size_bytes"].get<std::uint64_t>(), 0u);
    }
  }
  EXPECT_TRUE(has_l1);
}

std::optional<std::uint64_t> mem_total_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    std::istringstream words(line);
    std::string key, unit;
    std::uint64_t value = 0;
    if (words >> key >> value >> unit && key == "MemTotal:" && unit == "kB") return value * 1024;
  }
  return std::nullopt;
}

TEST(RunContextTest, MemoryBytesIsMemTotal) {
  const auto expected = mem_total_bytes();
  ASSERT_TRUE(expected.has_value()) << "no MemTotal in /proc/meminfo";
  const auto context = run_context();
  EXPECT_EQ(context["memory_bytes"].get<std::uint64_t>(), *expected);
  EXPECT_LE(context["memory_available_bytes"].get<std::uint64_t>(), *expected);
}

TEST(RunContextTest, TopologyCountsAreConsistent) {
  const auto context = run_context();
  ASSERT_TRUE(context["threads"].is_number());
  ASSERT_TRUE(context["cores"].is_number());
  EXPECT_GE(context["cores"].get<int>(), 1);
  EXPECT_LE(context["cores"].get<int>(), context["threads"].get<int>());
  EXPECT_GE(context["numa_nodes"].get<int>(), 1);
  ASSERT_TRUE(context["load_average"].is_array());
  EXPECT_EQ(context["load_average"].size(), 3u);
}

TEST(RunContextTest, HostNameHasOnlyDirectorySafeCharacters) {
  const std::string name = host_name();
  EXPECT_TRUE(!name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
  })) << name;
}

// Restores TIERMARK_GIT_COMMIT after the test, so the override does not leak into other tests.
class GitCommitEnvironment {
 public:
  GitCommitEnvironment() {
    if (const char* value = std::getenv(kName)) saved_ = value;
  }
  ~GitCommitEnvironment() {
    if (saved_) {
      setenv(kName, saved_->c_str(), 1);
    } else {
      unsetenv(kName);
    }
  }

  static constexpr const char* kName = "TIERMARK_GIT_COMMIT";

 private:
  std::optional<std::string> saved_;
};

TEST(RunContextTest, GitCommitIsTheEnvironmentOverrideWhenSet) {
  const GitCommitEnvironment environment;
  setenv(GitCommitEnvironment::kName, "0123456789ab", 1);
  EXPECT_EQ(git_commit(), "0123456789ab");
  EXPECT_EQ(run_context()["git_commit"], "0123456789ab");
}

TEST(RunContextTest, GitCommitIsTheConfigureTimeCommitOtherwise) {
  const GitCommitEnvironment environment;
  unsetenv(GitCommitEnvironment::kName);
  const std::string commit = git_commit();
  const bool hex_commit = commit.size() >= 12 && lower_hex(std::string_view(commit).substr(0, 12)) &&
                          (commit.size() == 12 || commit.substr(12) == "-dirty");
  EXPECT_TRUE(commit == "unknown" || hex_commit) << commit;
  const auto recorded = run_context()["git_commit"];
  if (commit == "unknown") {
    EXPECT_TRUE(recorded.is_null());
  } else {
    EXPECT_EQ(recorded, commit);
  }
}

}  // namespace
}  // namespace tiermark
