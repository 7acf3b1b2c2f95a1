// The accelerator tier's method, checked without a GPU over a fake copy engine (host memory, memcpy,
// scripted event times): warm-ups dropped, the median of the trials, bytes counted once per byte
// copied, every direction measured, a wrong copy or a failing call reported rather than a number.
// Then the real CUDA engine: measured with a device, and a clear error without one.
#include "tiers/accelerator_bandwidth.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <stdexcept>

#include "cuda/cuda_runtime.h"

namespace tiermark {
namespace {

class FakeEngine : public CopyEngine {
 public:
  std::deque<double> times_ms;  // returned by time_copies_ms in order
  std::map<std::string, int> timed_calls;
  bool corrupt_device_copies = false;
  std::string fail_device_alloc;
  int live = 0;

  void* host_alloc(std::size_t bytes, std::string&) override { return take(bytes); }
  void host_free(void* p) override { give(p); }
  void* device_alloc(std::size_t bytes, std::string& error) override {
    if (!fail_device_alloc.empty()) {
      error = fail_device_alloc;
      return nullptr;
    }
    return take(bytes);
  }
  void device_free(void* p) override { give(p); }
  bool copy(void* dst, const void* src, std::size_t bytes, cuda::CopyKind kind, std::string&) override {
    std::memcpy(dst, src, bytes);
    if (corrupt_device_copies && kind == cuda::CopyKind::kDeviceToDevice) static_cast<char*>(dst)[bytes / 2] ^= 1;
    return true;
  }
  std::optional<double> time_copies_ms(void*, const void*, std::size_t, cuda::CopyKind kind, int loops,
                                       std::string& error) override {
    ++timed_calls[std::string(direction_name(kind)) + "/" + std::to_string(loops)];
    if (times_ms.empty()) {
      error = "no more scripted times";
      return std::nullopt;
    }
    const double t = times_ms.front();
    times_ms.pop_front();
    return t;
  }

 private:
  void* take(std::size_t bytes) {
    ++live;
    return std::malloc(bytes);
  }
  void give(void* p) {
    --live;
    std::free(p);
  }
};

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

TEST(AcceleratorBandwidth, MedianOfTrialsAfterWarmupWithBytesCountedOnce) {
  FakeEngine engine;
  // Per direction: a warm-up (dropped), then three trials; h2d, d2h, d2d in that order.
  engine.times_ms = {100, 2, 4, 1, /*d2h*/ 50, 8, 8, 8, /*d2d*/ 9, 1, 3, 2};
  AcceleratorSettings settings;
  settings.buffer_bytes = 4 * kMiB;
  settings.loops = 5;
  const std::vector<CopyBandwidth> results = measure_copies(engine, settings);
  ASSERT_EQ(results.size(), 3u);
  const double bytes = 4.0 * kMiB * 5;  // 5 copies of 4 MiB in each timed run
  EXPECT_EQ(results[0].direction, "h2d");
  EXPECT_EQ(results[0].trial_bytes_per_second.size(), 3u);
  EXPECT_DOUBLE_EQ(results[0].bytes_per_second.median, bytes / 0.002);  // trials 2, 4, 1 ms: median 2 ms
  EXPECT_DOUBLE_EQ(results[0].bytes_per_second.best, bytes / 0.001);
  EXPECT_EQ(results[1].direction, "d2h");
  EXPECT_DOUBLE_EQ(results[1].bytes_per_second.median, bytes / 0.008);
  EXPECT_DOUBLE_EQ(results[1].bytes_per_second.cv, 0);
  EXPECT_EQ(results[2].direction, "d2d");
  EXPECT_DOUBLE_EQ(results[2].bytes_per_second.median, bytes / 0.002);
  EXPECT_EQ(engine.timed_calls, (std::map<std::string, int>{{"h2d/5", 4}, {"d2h/5", 4}, {"d2d/5", 4}}));
  EXPECT_TRUE(engine.times_ms.empty());
  EXPECT_EQ(engine.live, 0) << "every buffer freed";
}

TEST(AcceleratorBandwidth, AWrongCopyThrowsInsteadOfANumber) {
  FakeEngine engine;
  engine.corrupt_device_copies = true;
  engine.times_ms.assign(12, 1.0);
  AcceleratorSettings settings;
  settings.buffer_bytes = kMiB;
  EXPECT_THROW(measure_copies(engine, settings), std::runtime_error);
  EXPECT_TRUE(engine.timed_calls.empty()) << "checked before anything is timed";
  EXPECT_EQ(engine.live, 0);
}

TEST(AcceleratorBandwidth, AFailingCallIsNamed) {
  FakeEngine engine;
  engine.fail_device_alloc = "cudaMalloc: out of memory";
  AcceleratorSettings settings;
  settings.buffer_bytes = kMiB;
  try {
    measure_copies(engine, settings);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cudaMalloc: out of memory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(engine.live, 0);

  FakeEngine zero;
  zero.times_ms.assign(12, 0.0);
  settings.buffer_bytes = kMiB;
  EXPECT_THROW(measure_copies(zero, settings), std::runtime_error) << "an event time of 0 is not a bandwidth";
}

TEST(AcceleratorBandwidth, CudaEngineMeasuresADeviceOrSaysThereIsNone) {
  const cuda::Probe probe = cuda::probe();
  AcceleratorSettings settings;
  settings.buffer_bytes = 8 * kMiB;
  settings.loops = 2;
  const auto engine = cuda_copy_engine(0);
  if (probe.unavailable.empty()) {
    for (const CopyBandwidth& c : measure_copies(*engine, settings)) EXPECT_GT(c.bytes_per_second.median, 0) << c.direction;
  } else {
    EXPECT_EQ(probe.unavailable.rfind("no CUDA device", 0), 0u) << probe.unavailable;
    EXPECT_TRUE(probe.devices.empty());
    EXPECT_THROW(measure_copies(*engine, settings), std::runtime_error);
  }
  EXPECT_EQ(cuda::built_with_cuda(), probe.runtime_version != 0);
}

TEST(AcceleratorBandwidth, PciDeviceWithoutANodeHasNone) {
  EXPECT_FALSE(Topology::numa_node_of_pci_device("0000:ff:1f.7").has_value());
  EXPECT_FALSE(Topology::numa_node_of_pci_device("").has_value());
}

}  // namespace
}  // namespace tiermark
