// tiers/: each bandwidth kernel at each ISA this CPU runs computes the right result on odd lengths
// and misaligned (8-byte-aligned) starts, and writes nothing outside its array; the pointer-chase
// order is one cycle over every line, grouped by pages; the size sweep has its promised properties.
// Nothing here times anything.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "tiers/kernels.h"
#include "tiers/memory_region.h"
#include "tiers/pointer_chase.h"
#include "tiers/size_sweep.h"
#include "tiers/tier_measure.h"

namespace tiermark {
namespace {

// Lengths around every vector width and unroll boundary (8 vectors of 8 doubles = 64), and odd ones.
const std::size_t kLengths[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 31, 33, 63, 64, 65, 127, 129, 255, 257, 1001, 4099};
// Offsets in doubles from a 64-byte boundary: every alignment a double* can have within a vector.
const std::size_t kOffsets[] = {0, 1, 2, 3, 4, 5, 7};
constexpr double kGuard = -12345.0;

// A buffer with guard values either side of [offset, offset + n).
struct Guarded {
  std::vector<double> storage;
  std::size_t offset;
  std::size_t n;
  Guarded(std::size_t length, std::size_t misalign) : storage(length + 64 + 32, kGuard), offset(0), n(length) {
    // Start 16 doubles past a 64-byte boundary, then misalign.
    const auto address = reinterpret_cast<std::uintptr_t>(storage.data());
    const std::size_t to_boundary = (64 - address % 64) % 64 / sizeof(double);
    offset = to_boundary + 16 + misalign;
  }
  double* data() { return storage.data() + offset; }
  bool guards_intact() const {
    for (std::size_t i = 0; i < offset; ++i) {
      if (storage[i] != kGuard) return false;
    }
    for (std::size_t i = offset + n; i < storage.size(); ++i) {
      if (storage[i] != kGuard) return false;
    }
    return true;
  }
};

class KernelsTest : public ::testing::TestWithParam<Isa> {};

TEST_P(KernelsTest, ReadSumsEveryElement) {
  for (const std::size_t n : kLengths) {
    for (const std::size_t misalign : kOffsets) {
      Guarded a(n, misalign);
      double expected = 0;
      for (std::size_t i = 0; i < n; ++i) {
        a.data()[i] = double(i % 13);
        expected += double(i % 13);
      }
      EXPECT_EQ(read_sum(GetParam(), a.data(), n), expected) << "n=" << n << " offset=" << misalign;
    }
  }
}

TEST_P(KernelsTest, WriteAndNtWriteFillExactlyTheArray) {
  for (const std::size_t n : kLengths) {
    for (const std::size_t misalign : kOffsets) {
      Guarded a(n, misalign), b(n, misalign);
      write_fill(GetParam(), a.data(), n, 7.0);
      ntwrite_fill(GetParam(), b.data(), n, 9.0);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(a.data()[i], 7.0) << "write n=" << n << " offset=" << misalign << " i=" << i;
        ASSERT_EQ(b.data()[i], 9.0) << "ntwrite n=" << n << " offset=" << misalign << " i=" << i;
      }
      EXPECT_TRUE(a.guards_intact()) << "write n=" << n << " offset=" << misalign;
      EXPECT_TRUE(b.guards_intact()) << "ntwrite n=" << n << " offset=" << misalign;
    }
  }
}

TEST_P(KernelsTest, CopyAndTriadComputeEveryElement) {
  for (const std::size_t n : kLengths) {
    for (const std::size_t misalign : kOffsets) {
      // Source and destination misaligned differently, as arrays of a real run can be.
      Guarded dst(n, misalign), src(n, (misalign + 3) % 8), b(n, 1), c(n, (misalign + 5) % 8), a(n, misalign);
      for (std::size_t i = 0; i < n; ++i) {
        src.data()[i] = double(i % 11);
        b.data()[i] = double(i % 5);
        c.data()[i] = double(i % 7);
      }
      copy(GetParam(), dst.data(), src.data(), n);
      triad(GetParam(), a.data(), b.data(), c.data(), 3.0, n);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(dst.data()[i], double(i % 11)) << "copy n=" << n << " i=" << i;
        ASSERT_EQ(a.data()[i], double(i % 5) + 3.0 * double(i % 7)) << "triad n=" << n << " i=" << i;
      }
      EXPECT_TRUE(dst.guards_intact());
      EXPECT_TRUE(a.guards_intact());
    }
  }
}

std::string isa_test_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

INSTANTIATE_TEST_SUITE_P(EverySupportedIsa, KernelsTest, ::testing::ValuesIn(supported_isas()), isa_test_name);

TEST(KernelNamesTest, RoundTripAndStreamByteCounting) {
  for (const Kernel kernel : kAllKernels) EXPECT_EQ(parse_kernel(kernel_name(kernel)), kernel);
  EXPECT_FALSE(parse_kernel("scale"));
  EXPECT_EQ(kernel_bytes_per_element(Kernel::kRead), 8);
  EXPECT_EQ(kernel_bytes_per_element(Kernel::kCopy), 16);
  EXPECT_EQ(kernel_bytes_per_element(Kernel::kTriad), 24);
  for (const Isa isa : supported_isas()) EXPECT_EQ(parse_isa(isa_name(isa)), isa);
  EXPECT_EQ(supported_isas().front(), Isa::kSse2);
  EXPECT_EQ(best_isa(), supported_isas().back());
}

TEST(ChaseOrderTest, IsOneCycleOverEveryLineGroupedByPages) {
  for (const std::uint64_t lines : {1ull, 63ull, 64ull, 65ull, 1000ull, 4096ull}) {
    constexpr std::uint64_t kLinesPerPage = 64;
    const auto order = chase_order(lines, kLinesPerPage, 42);
    ASSERT_EQ(order.size(), lines);
    // Every line exactly once.
    std::vector<bool> seen(lines, false);
    for (const std::uint32_t line : order) {
      ASSERT_LT(line, lines);
      ASSERT_FALSE(seen[line]) << "line " << line << " twice";
      seen[line] = true;
    }
    // Grouped: the chase enters each page once and visits all its lines before leaving.
    std::set<std::uint64_t> pages_left;
    for (std::size_t i = 0; i < order.size(); ++i) {
      const std::uint64_t page = order[i] / kLinesPerPage;
      if (i == 0 || order[i - 1] / kLinesPerPage != page) {
        EXPECT_TRUE(pages_left.insert(page).second) << "page " << page << " entered twice";
      }
    }
    EXPECT_EQ(pages_left.size(), (lines + kLinesPerPage - 1) / kLinesPerPage);
    // Linked into memory, following it from the start returns to the start after exactly `lines` loads
    // and not before: one cycle.
    std::vector<std::uint64_t> memory(lines * 8);
    void* const start = link_chase(memory.data(), 64, order);
    void* p = start;
    for (std::uint64_t step = 1; step <= lines; ++step) {
      p = chase(p, 1);
      if (step < lines) {
        ASSERT_NE(p, start) << "a cycle of " << step << " lines, not " << lines;
      }
    }
    EXPECT_EQ(p, start);
    EXPECT_EQ(chase(start, 3 * lines), start);
  }
}

TEST(ChaseOrderTest, IsRandomAndSeeded) {
  const auto a = chase_order(4096, 64, 1), b = chase_order(4096, 64, 1), c = chase_order(4096, 64, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::size_t sequential = 0;
  for (std::size_t i = 1; i < a.size(); ++i) sequential += a[i] == a[i - 1] + 1;
  EXPECT_LT(sequential, a.size() / 8) << "the order is nearly sequential: a prefetcher would follow it";
}

TEST(SizeSweepTest, SortedUniqueGranularAndDenseAroundEachCapacity) {
  const std::vector<std::uint64_t> capacities = {48 << 10, 1 << 20, 32 << 20};
  const std::uint64_t max = 128ull << 20;
  const auto sizes = size_sweep(capacities, 4096, max, 2);
  ASSERT_FALSE(sizes.empty());
  EXPECT_EQ(sizes.front(), 4096u);
  EXPECT_EQ(sizes.back(), max);
  EXPECT_TRUE(std::is_sorted(sizes.begin(), sizes.end()));
  EXPECT_EQ(std::adjacent_find(sizes.begin(), sizes.end()), sizes.end());
  for (const std::uint64_t size : sizes) EXPECT_EQ(size % kSweepGranuleBytes, 0u) << size;
  for (const std::uint64_t capacity : capacities) {
    for (const double fraction : kCapacityFractions) {
      const std::uint64_t expected = round_to_granule(double(capacity) * fraction);
      EXPECT_TRUE(std::binary_search(sizes.begin(), sizes.end(), expected)) << capacity << " x " << fraction;
    }
  }
  // Log spacing: no gap wider than one octave (points_per_octave 2 gives half-octave steps).
  for (std::size_t i = 1; i < sizes.size(); ++i) EXPECT_LE(sizes[i], 2 * sizes[i - 1] + kSweepGranuleBytes);
  // More points per octave, more points; bounds that exclude every capacity point still give the ends.
  EXPECT_GT(size_sweep(capacities, 4096, max, 4).size(), sizes.size());
  EXPECT_EQ(size_sweep({}, 5000, 9000, 0), (std::vector<std::uint64_t>{8192}));
  EXPECT_TRUE(size_sweep({}, 9000, 5000, 2).empty());
}

TEST(SummarizeTest, BestMedianAndCoefficientOfVariation) {
  const SampleSummary up = summarize({4, 1, 3, 2}, true);
  EXPECT_EQ(up.best, 4);
  EXPECT_EQ(up.median, 2.5);
  EXPECT_NEAR(up.cv, std::sqrt(5.0 / 3.0) / 2.5, 1e-12);
  const SampleSummary down = summarize({4, 1, 3}, false);
  EXPECT_EQ(down.best, 1);
  EXPECT_EQ(down.median, 3);
  EXPECT_EQ(summarize({}, true).samples, 0);
}

TEST(MemoryRegionTest, HugePageRegionIsAlignedAndReportsWhatItGot) {
  const MemoryRegion region(3 << 20, PagePolicy::kHuge);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(region.data()) % kHugePageBytes, 0u);
  std::fill_n(static_cast<char*>(region.data()), region.bytes(), char(1));
  const auto huge = region.huge_page_bytes();
  ASSERT_TRUE(huge.has_value());
  EXPECT_LE(*huge, 4u << 20);  // never more than the 2 MiB pages covering the region
  const MemoryRegion small(1 << 20, PagePolicy::kSmall);
  std::fill_n(static_cast<char*>(small.data()), small.bytes(), char(1));
  EXPECT_EQ(small.huge_page_bytes(), 0u);
}

TEST(MeasureTest, TinyRunsGiveCheckedPositiveNumbers) {
  const Topology topology;
  MeasureSettings settings;
  settings.isa = best_isa();
  settings.samples = 2;
  settings.min_sample_seconds = 0.001;
  const auto points = measure_bandwidth(topology, {Kernel::kRead, Kernel::kWrite, Kernel::kNtWrite, Kernel::kCopy, Kernel::kTriad},
                                        64 << 10, 1, settings);
  ASSERT_EQ(points.size(), 5u);
  for (const BandwidthPoint& p : points) {
    EXPECT_GT(p.bytes_per_second.best, 0) << kernel_name(p.kernel);
    EXPECT_GE(p.bytes_per_second.best, p.bytes_per_second.median);
    EXPECT_EQ(p.bytes_per_second.samples, 2);
    EXPECT_GT(p.counted_bytes_per_pass, 0u);
  }
  const LatencyPoint latency = measure_latency(topology, 256 << 10, false, 64, settings);
  EXPECT_GT(latency.ns_per_load.best, 0);
  EXPECT_EQ(latency.loads_per_sample % 4096, 0u);  // whole cycles of the 4096 lines
}

}  // namespace
}  // namespace tiermark
