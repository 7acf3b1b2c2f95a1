#include "tiers/tier_measure.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "tiers/memory_region.h"
#include "tiers/pointer_chase.h"

namespace tiermark {
namespace {

using Clock = std::chrono::steady_clock;

// Array j of a thread starts j KiB after array 0 modulo 4 KiB (0, 1024, 2048): arrays whose starts
// agree modulo 4 KiB, or where a load stream runs just behind the store stream, make loads and
// stores alias in the store-to-load forwarding check (4K aliasing). STREAM avoids it with its OFFSET,
// likwid-bench with per-stream offsets. Measured here (Zen 5, triad at 24 KB): loads 128 and 256 B
// behind the stores modulo 4 KiB gave 604 GB/s, loads 1 and 2 KiB ahead 634 GB/s.
constexpr std::uint64_t kArrayPhaseBytes = 1024;
constexpr std::uint64_t kPageBytes = 4096;
constexpr std::uint64_t kLineBytes = 64;
constexpr double kTriadScalar = 3.0;

// Threads spin rather than sleep at a barrier: they must leave it within nanoseconds of each other,
// and there is never more than one measuring thread per core.
class SpinBarrier {
 public:
  explicit SpinBarrier(int parties) : parties_(parties) {}
  void arrive_and_wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == parties_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    while (generation_.load(std::memory_order_acquire) == generation) _mm_pause();
  }

 private:
  const int parties_;
  std::atomic<int> arrived_{0};
  std::atomic<int> generation_{0};
};

}  // namespace

// The data of one kernel on one thread. Patterns are small whole numbers, so every sum is exact.
// Aligned to a cache line: the write kernels update `value` every pass, and two threads' Data must
// not share a line (false sharing would cost more than an L1-sized pass).
struct alignas(64) KernelBuffers::Data {
  Kernel kernel = Kernel::kRead;
  const KernelTable* table = nullptr;  // the ISA resolved once
  std::unique_ptr<MemoryRegion> region;
  double* a = nullptr;
  double* b = nullptr;
  double* c = nullptr;
  std::size_t n = 0;
  double expected_sum = 0;
  double value = 0;  // the value the last write or ntwrite pass stored
  bool wrong = false;
};

namespace {
using KernelData = KernelBuffers::Data;

double pattern_b(std::size_t i) { return double(i & 7); }
double pattern_c(std::size_t i) { return double((i >> 3) & 7); }

std::uint64_t array_bytes(Kernel kernel, std::uint64_t share) {
  const std::uint64_t each = share / std::uint64_t(kernel_arrays(kernel)) / kLineBytes * kLineBytes;
  return std::max(each, kLineBytes);
}

// Where array j starts: after array j-1, at the next address that is j * kArrayPhaseBytes modulo 4 KiB.
std::uint64_t array_start(std::uint64_t j, std::uint64_t each) {
  if (j == 0) return 0;
  const std::uint64_t end_of_previous = array_start(j - 1, each) + each;
  const std::uint64_t phase = j * kArrayPhaseBytes % kPageBytes;
  return end_of_previous + (phase + kPageBytes - end_of_previous % kPageBytes) % kPageBytes;
}

// Maps the region and writes every byte of it from the calling (pinned) thread: first touch.
void prepare(KernelData& d, std::uint64_t share, const Topology* topology, std::optional<unsigned> node) {
  const std::uint64_t each = array_bytes(d.kernel, share);
  const int arrays = kernel_arrays(d.kernel);
  d.region = std::make_unique<MemoryRegion>(array_start(std::uint64_t(arrays - 1), each) + each, PagePolicy::kDefault,
                                            topology, node);
  char* base = static_cast<char*>(d.region->data());
  d.n = each / sizeof(double);
  d.a = reinterpret_cast<double*>(base);
  d.b = arrays > 1 ? reinterpret_cast<double*>(base + array_start(1, each)) : nullptr;
  d.c = arrays > 2 ? reinterpret_cast<double*>(base + array_start(2, each)) : nullptr;
  std::fill(base, base + d.region->bytes(), char(0));
  switch (d.kernel) {
    case Kernel::kRead:
      for (std::size_t i = 0; i < d.n; ++i) d.a[i] = pattern_b(i);
      d.expected_sum = 0;
      for (std::size_t i = 0; i < d.n; ++i) d.expected_sum += pattern_b(i);
      break;
    case Kernel::kWrite:
    case Kernel::kNtWrite:
      for (std::size_t i = 0; i < d.n; ++i) d.a[i] = -1;
      break;
    case Kernel::kCopy:
      for (std::size_t i = 0; i < d.n; ++i) d.b[i] = pattern_b(i);
      break;
    case Kernel::kTriad:
      for (std::size_t i = 0; i < d.n; ++i) {
        d.b[i] = pattern_b(i);
        d.c[i] = pattern_c(i);
      }
      break;
  }
}

void run_pass(KernelData& d) {
  const KernelTable& k = *d.table;
  switch (d.kernel) {
    case Kernel::kRead:
      if (k.read_sum(d.a, d.n) != d.expected_sum) d.wrong = true;
      break;
    case Kernel::kWrite:
      d.value = d.value >= 1000 ? 1 : d.value + 1;
      k.write_fill(d.a, d.n, d.value);
      break;
    case Kernel::kNtWrite:
      d.value = d.value >= 1000 ? 1 : d.value + 1;
      k.ntwrite_fill(d.a, d.n, d.value);
      break;
    case Kernel::kCopy:
      k.copy(d.a, d.b, d.n);
      break;
    case Kernel::kTriad:
      k.triad(d.a, d.b, d.c, kTriadScalar, d.n);
      break;
  }
}

// After the timed passes: the destination holds what the kernel computes.
bool verify(const KernelData& d) {
  if (d.wrong) return false;
  for (std::size_t i = 0; i < d.n; ++i) {
    switch (d.kernel) {
      case Kernel::kRead: return true;
      case Kernel::kWrite:
      case Kernel::kNtWrite:
        if (d.a[i] != d.value) return false;
        break;
      case Kernel::kCopy:
        if (d.a[i] != d.b[i]) return false;
        break;
      case Kernel::kTriad:
        if (d.a[i] != pattern_b(i) + kTriadScalar * pattern_c(i)) return false;
        break;
    }
  }
  return true;
}

// Repeats for the next calibration round: enough to reach the target with 20% to spare, at least
// double, at most 1000 times more.
std::uint64_t grow_repeats(std::uint64_t repeats, double elapsed, double target) {
  const double factor = elapsed > 0 ? std::clamp(1.2 * target / elapsed, 2.0, 1000.0) : 1000.0;
  return std::uint64_t(std::ceil(double(repeats) * factor));
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

KernelBuffers::KernelBuffers(Kernel kernel, std::uint64_t share_bytes, Isa isa, const Topology* topology,
                             std::optional<unsigned> node)
    : data_(std::make_unique<Data>()) {
  data_->kernel = kernel;
  data_->table = &kernel_table(isa);
  prepare(*data_, share_bytes, topology, node);
}
KernelBuffers::KernelBuffers(KernelBuffers&&) noexcept = default;
KernelBuffers& KernelBuffers::operator=(KernelBuffers&&) noexcept = default;
KernelBuffers::~KernelBuffers() = default;
void KernelBuffers::run_pass() { tiermark::run_pass(*data_); }
bool KernelBuffers::verify() const { return tiermark::verify(*data_); }
std::uint64_t KernelBuffers::elements() const { return data_->n; }
std::uint64_t KernelBuffers::counted_bytes() const {
  return data_->n * std::uint64_t(kernel_bytes_per_element(data_->kernel));
}

SampleSummary summarize(std::vector<double> values, bool higher_is_better) {
  SampleSummary summary;
  summary.samples = int(values.size());
  if (values.empty()) return summary;
  std::sort(values.begin(), values.end());
  summary.best = higher_is_better ? values.back() : values.front();
  const std::size_t mid = values.size() / 2;
  summary.median = values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
  double mean = 0;
  for (const double v : values) mean += v;
  mean /= double(values.size());
  double variance = 0;
  for (const double v : values) variance += (v - mean) * (v - mean);
  variance = values.size() > 1 ? variance / double(values.size() - 1) : 0;
  summary.cv = mean > 0 ? std::sqrt(variance) / mean : 0;
  return summary;
}

std::vector<BandwidthPoint> measure_bandwidth(const Topology& topology, const std::vector<Kernel>& kernels,
                                              std::uint64_t size_bytes, int threads, const MeasureSettings& settings,
                                              const std::vector<unsigned>& cores) {
  if (threads < 1 || kernels.empty()) return {};
  const std::uint64_t share = std::max<std::uint64_t>(size_bytes / std::uint64_t(threads), kLineBytes);
  const std::size_t kinds = kernels.size();
  struct alignas(64) Times {
    Clock::time_point start, end;
  };
  std::vector<Times> times(static_cast<std::size_t>(threads));
  std::vector<std::uint64_t> repeats(kinds, 1);
  std::vector<std::vector<double>> samples(kinds);
  std::vector<std::uint64_t> elements(kinds, 0);
  std::atomic<bool> calibrated{false};
  std::atomic<int> pinned{0};
  std::mutex errors_mutex;
  std::string error;
  SpinBarrier barrier(threads);

  // The sample's time: from the first thread out of the barrier to the last thread done.
  const auto elapsed = [&]() {
    Clock::time_point first = times[0].start, last = times[0].end;
    for (const Times& t : times) {
      first = std::min(first, t.start);
      last = std::max(last, t.end);
    }
    return seconds(last - first);
  };

  const auto worker = [&](int id) {
    const unsigned core = cores.empty() ? unsigned(id) : cores[std::size_t(id) % cores.size()];
    if (topology.bind_thread_to_core(core)) pinned.fetch_add(1);
    std::vector<KernelBuffers> data;
    try {
      for (std::size_t k = 0; k < kinds; ++k) data.emplace_back(kernels[k], share, settings.isa, &topology, settings.membind_node);
    } catch (const std::exception& e) {
      const std::lock_guard lock(errors_mutex);
      error = e.what();
    }
    if (id == 0 && data.size() == kinds) {
      for (std::size_t k = 0; k < kinds; ++k) elements[k] = data[k].elements();
    }
    barrier.arrive_and_wait();
    if (!error.empty()) return;  // every thread sees the same error after the barrier and leaves
    const auto timed = [&](std::size_t k, bool warm_first) {
      barrier.arrive_and_wait();
      if (warm_first) data[k].run_pass();  // untimed: brings this kernel's data back into the caches
      barrier.arrive_and_wait();
      times[std::size_t(id)].start = Clock::now();
      for (std::uint64_t r = 0; r < repeats[k]; ++r) data[k].run_pass();
      times[std::size_t(id)].end = Clock::now();
      barrier.arrive_and_wait();
    };
    for (std::size_t k = 0; k < kinds; ++k) {
      // Calibration: its last sample, the first of at least the target length, is the dropped warm-up.
      for (;;) {
        timed(k, false);
        if (id == 0) {
          const double t = elapsed();
          const bool done = t >= settings.min_sample_seconds;
          if (!done) repeats[k] = grow_repeats(repeats[k], t, settings.min_sample_seconds);
          calibrated.store(done, std::memory_order_release);
        }
        barrier.arrive_and_wait();
        if (calibrated.load(std::memory_order_acquire)) break;
      }
    }
    for (int s = 0; s < settings.samples; ++s) {
      for (std::size_t k = 0; k < kinds; ++k) {
        timed(k, kinds > 1);
        if (id == 0) samples[k].push_back(elapsed());
      }
    }
    for (std::size_t k = 0; k < kinds; ++k) {
      if (!data[k].verify()) {
        const std::lock_guard lock(errors_mutex);
        error = std::string(kernel_name(kernels[k])) + " at " + std::to_string(size_bytes) + " bytes on " +
                std::to_string(threads) + " threads (" + isa_name(settings.isa) + ") computed a wrong result";
      }
    }
  };

  std::vector<std::thread> pool;
  for (int id = 1; id < threads; ++id) pool.emplace_back(worker, id);
  // The calling thread is thread 0, so `threads` threads measure on `threads` cores and no other
  // thread of ours competes for a core; its own binding is restored afterwards.
  hwloc_bitmap_t previous = hwloc_bitmap_alloc();
  const bool had_binding = topology.loaded() && hwloc_get_cpubind(topology.handle(), previous, HWLOC_CPUBIND_THREAD) == 0;
  worker(0);
  for (std::thread& t : pool) t.join();
  if (had_binding) hwloc_set_cpubind(topology.handle(), previous, HWLOC_CPUBIND_THREAD);
  hwloc_bitmap_free(previous);
  if (!error.empty()) throw std::runtime_error(error);

  std::vector<BandwidthPoint> points;
  for (std::size_t k = 0; k < kinds; ++k) {
    BandwidthPoint point;
    point.kernel = kernels[k];
    point.size_bytes = size_bytes;
    point.threads = threads;
    point.elements_per_array = elements[k];
    point.counted_bytes_per_pass = elements[k] * std::uint64_t(kernel_bytes_per_element(kernels[k])) * std::uint64_t(threads);
    point.repeats_per_sample = repeats[k];
    std::vector<double> rates;
    for (const double t : samples[k]) rates.push_back(double(point.counted_bytes_per_pass * repeats[k]) / t);
    point.bytes_per_second = summarize(rates, true);
    point.pinned = pinned.load() == threads;
    points.push_back(point);
  }
  return points;
}

LatencyPoint measure_latency(const Topology& topology, std::uint64_t size_bytes, bool huge_pages, unsigned line_bytes,
                             const MeasureSettings& settings, unsigned core) {
  if (line_bytes == 0) line_bytes = kLineBytes;
  LatencyPoint point;
  point.size_bytes = size_bytes;
  point.huge_pages = huge_pages;
  std::string error;
  const auto worker = [&]() {
    try {
      point.pinned = topology.bind_thread_to_core(core);
      const MemoryRegion region(size_bytes, huge_pages ? PagePolicy::kHuge : PagePolicy::kSmall, &topology,
                                settings.membind_node);
      const std::uint64_t lines = std::max<std::uint64_t>(size_bytes / line_bytes, 1);
      // Grouped by 4 KiB pages in both page modes, so the two differ only in the pages backing them.
      const std::uint64_t lines_per_page = std::max<std::uint64_t>(4096 / line_bytes, 1);
      const auto order = chase_order(lines, lines_per_page, 0x7469657273ull ^ size_bytes);
      void* const start = link_chase(region.data(), line_bytes, order);
      std::uint64_t cycles = 1;
      for (;;) {  // calibration; its last sample is the dropped warm-up
        const auto t0 = Clock::now();
        void* const end = chase(start, cycles * lines);
        const double t = seconds(Clock::now() - t0);
        if (end != start) throw std::runtime_error("the pointer chase did not return to its start");
        if (t >= settings.min_sample_seconds) break;
        cycles = grow_repeats(cycles, t, settings.min_sample_seconds);
      }
      point.loads_per_sample = cycles * lines;
      std::vector<double> ns;
      for (int s = 0; s < settings.samples; ++s) {
        const auto t0 = Clock::now();
        void* const end = chase(start, point.loads_per_sample);
        const double t = seconds(Clock::now() - t0);
        if (end != start) throw std::runtime_error("the pointer chase did not return to its start");
        ns.push_back(t * 1e9 / double(point.loads_per_sample));
      }
      point.ns_per_load = summarize(ns, false);
      point.huge_page_bytes = region.huge_page_bytes();
    } catch (const std::exception& e) {
      error = e.what();
    }
  };
  std::thread(worker).join();  // a thread of its own: the binding ends with it
  if (!error.empty()) throw std::runtime_error(error);
  return point;
}

}  // namespace tiermark
