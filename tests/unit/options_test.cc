#include "common/options.h"

#include <gtest/gtest.h>

#include "common/input_error.h"

namespace tiermark {
namespace {

const std::vector<OptionSpec> kSpecs = {
    {"arena", OptionType::kSize, "1GiB", "arena bytes"},
    {"cache", OptionType::kCount, "8", "cached blocks"},
    {"cost", OptionType::kNumber, "0.5", "ns"},
    {"eager", OptionType::kBool, "false", "flag"},
    {"mode", OptionType::kChoice, "a", "mode", {"a", "b"}},
    {"node", OptionType::kCount, "", "optional"},
};

using Settings = std::vector<std::pair<std::string, std::string>>;

TEST(Options, DefaultsApplyAndSettingsOverride) {
  const Options options("thing", kSpecs, Settings{{"arena", "64MiB"}, {"eager", "yes"}, {"mode", "b"}});
  EXPECT_EQ(options.size("arena"), 64u << 20);
  EXPECT_EQ(options.count("cache"), 8u);
  EXPECT_DOUBLE_EQ(options.number("cost"), 0.5);
  EXPECT_TRUE(options.flag("eager"));
  EXPECT_EQ(options.choice("mode"), "b");
  EXPECT_FALSE(options.has("node"));
  EXPECT_EQ(options.canonical(), "thing:arena=64MiB,cache=8,cost=0.5,eager=yes,mode=b");
}

TEST(Options, UnknownKeyNamesTheOwnerAndTheKnownKeys) {
  try {
    Options("buddy", kSpecs, Settings{{"arenna", "1"}});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "buddy: unknown option 'arenna' (known: arena, cache, cost, eager, mode, node)");
  }
}

TEST(Options, BadValuesAreRejectedPerType) {
  const Settings bad[] = {{{"arena", "lots"}}, {{"cache", "-1"}}, {{"cache", "1.5"}}, {{"cost", "-2"}},
                          {{"eager", "maybe"}}, {{"mode", "c"}}};
  for (const Settings& settings : bad) {
    try {
      Options("x", kSpecs, settings);
      ADD_FAILURE() << "accepted " << settings[0].first << "=" << settings[0].second;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("option " + settings[0].first + "='" + settings[0].second + "'"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(Options, RejectNamesKeyAndValue) {
  const Options options("buddy", kSpecs, Settings{{"arena", "3KiB"}});
  try {
    options.reject("arena", "must be a power of two");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "buddy: option arena='3KiB': must be a power of two");
  }
}

TEST(Options, TextIsKeptAsWrittenForTheComponentToCheck) {
  const std::vector<OptionSpec> specs = {{"divisions", OptionType::kText, "0", "per interval"}};
  const Options options("caching.pytorch", specs, Settings{{"divisions", "[256:1,>:8]"}});
  EXPECT_EQ(options.text("divisions"), "[256:1,>:8]");
  EXPECT_EQ(options.canonical(), "caching.pytorch:divisions=[256:1,>:8]");
  EXPECT_EQ(option_type_name(OptionType::kText), "text");
}

}  // namespace
}  // namespace tiermark
