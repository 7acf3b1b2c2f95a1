#include "common/size_units.h"

#include <gtest/gtest.h>

namespace tiermark {
namespace {

TEST(SizeUnits, ParsesPlainAndBinaryAndDecimalUnits) {
  EXPECT_EQ(parse_size("512"), 512u);
  EXPECT_EQ(parse_size("512B"), 512u);
  EXPECT_EQ(parse_size("4KiB"), 4096u);
  EXPECT_EQ(parse_size("4K"), 4096u);
  EXPECT_EQ(parse_size("64MiB"), 64u << 20);
  EXPECT_EQ(parse_size("80GiB"), 80ull << 30);
  EXPECT_EQ(parse_size("2MB"), 2'000'000u);
  EXPECT_EQ(parse_size("1.5GiB"), 3ull << 29);  // 1.5 x 2^30 = 3 x 2^29
  EXPECT_EQ(parse_size("1TiB"), 1ull << 40);
}

TEST(SizeUnits, RejectsMalformedAndOverflowingSizes) {
  for (const char* bad : {"", "-1", "KiB", "1.2.3", "12XB", "1.5", "0.1B", "18446744073709551616", "20000PiB", ".5K", "5."}) {
    EXPECT_EQ(parse_size(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(parse_size("18446744073709551615"), 18446744073709551615ull);
}

TEST(SizeUnits, FormatRoundTrips) {
  EXPECT_EQ(format_size(65536), "64KiB");
  EXPECT_EQ(format_size(1000), "1000B");
  EXPECT_EQ(format_size(0), "0B");
  EXPECT_EQ(format_size(80ull << 30), "80GiB");
  for (std::uint64_t n : {1ull, 1023ull, 1024ull, 3ull << 29, (1ull << 63) + 1024, 18446744073709551615ull}) {
    EXPECT_EQ(parse_size(format_size(n)), n) << n;
  }
}

TEST(SizeUnits, ApproximateFormKeepsThreeSignificantDigits) {
  EXPECT_EQ(format_size_approx(512), "512 B");
  EXPECT_EQ(format_size_approx(1536), "1.50 KiB");
  EXPECT_EQ(format_size_approx(3090289808ull), "2.88 GiB");
  EXPECT_EQ(format_size_approx(80ull << 30), "80.0 GiB");
  EXPECT_EQ(format_size_approx(300ull << 20), "300 MiB");
  EXPECT_EQ(format_size_approx(18446744073709551615ull), "16.0 EiB");
}

}  // namespace
}  // namespace tiermark
