#include "common/spec.h"

#include <gtest/gtest.h>

#include "common/input_error.h"

namespace tiermark {
namespace {

TEST(Spec, ParsesNameOnly) {
  const Spec spec = parse_spec("pool.fixed");
  EXPECT_EQ(spec.name, "pool.fixed");
  EXPECT_TRUE(spec.preset.empty());
  EXPECT_TRUE(spec.settings.empty());
}

TEST(Spec, ParsesPresetAndSettingsInOrder) {
  const Spec spec = parse_spec("transformer/gpt2-small:b=8,s=1024");
  EXPECT_EQ(spec.name, "transformer");
  EXPECT_EQ(spec.preset, "gpt2-small");
  ASSERT_EQ(spec.settings.size(), 2u);
  EXPECT_EQ(spec.settings[0], (std::pair<std::string, std::string>{"b", "8"}));
  EXPECT_EQ(spec.settings[1], (std::pair<std::string, std::string>{"s", "1024"}));
}

TEST(Spec, KeepsCommasInsideBrackets) {
  const Spec spec = parse_spec("caching.pytorch:roundup_power2_divisions=[256:1,512:2],max_split_size=64MiB");
  ASSERT_EQ(spec.settings.size(), 2u);
  EXPECT_EQ(spec.settings[0].second, "[256:1,512:2]");
}

TEST(Spec, RejectsMalformedSpecsWithTheSpecInTheMessage) {
  for (const char* bad : {"", ":a=1", "buddy:", "buddy:min_block", "buddy:=3", "buddy:a=1,a=2", "bu ddy", "x/:a=1"}) {
    try {
      parse_spec(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

TEST(Spec, SplitsAListOfSpecs) {
  EXPECT_EQ(split_spec_list("buddy:min_block=256,arena=1GiB,pool.fixed,caching.pytorch:max_split_size=64MiB"),
            (std::vector<std::string>{"buddy:min_block=256,arena=1GiB", "pool.fixed", "caching.pytorch:max_split_size=64MiB"}));
  EXPECT_EQ(split_spec_list("system"), (std::vector<std::string>{"system"}));
}

}  // namespace
}  // namespace tiermark
