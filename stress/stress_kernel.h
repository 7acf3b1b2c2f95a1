// A stress kernel: one multi-threaded allocation pattern (tiermark's own random churn, or a kernel
// modelled on mimalloc-bench's stress tests) run against one StressTarget for a time or an operation
// budget. Kernels count what they did; with `verify`, they fill every block with a pattern derived
// from its id, check it on free, and report every mismatch as a corruption. The layer has threads and
// clocks and writes no files (harness/stress_command does).
//
// Contract for every kernel:
//  * It runs `settings.threads` threads (a kernel whose design fixes the thread roles, such as a
//    producer and a consumer, says so) until `settings.seconds` have passed or `settings.ops`
//    allocations were made in total in its timed phase, whichever is set (exactly one is non-zero);
//    setup before the timed phase (larson's warm-up) is not charged to the budget and is counted in
//    `untimed_ops`.
//  * It frees every block it allocated before returning (no leak into the next kernel).
//  * A failed allocation (nullptr) is counted in `failed_allocs` and the kernel carries on.
//  * With `verify` and a touchable target, every block is written with a pattern derived from its
//    id before it is published, checked when it is freed (`verified_ops` counts the checks,
//    `corruptions` the blocks that did not hold their pattern), and StressTarget::check_block()
//    runs on every allocation (non-overlap; `corruptions` counts its findings too).
//  * `sample()` is called about every `settings.sample_interval_seconds` from one thread, so the
//    caller can record memory over time (the soak's growth gate).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tiermark {

// What a kernel allocates from: thread-safe, malloc-like, sized free. The harness wraps a tiermark
// allocator (under a lock or its own thread safety) or the process's malloc.
class StressTarget {
 public:
  virtual ~StressTarget() = default;
  virtual void* allocate(std::size_t bytes, std::size_t alignment) noexcept = 0;
  virtual void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept = 0;
  // False for a simulated device: blocks may not be written, so verification checks overlap only.
  virtual bool touchable() const noexcept = 0;
  // Verification of a fresh block [p, p + bytes): "" when it is fine, else why not (it overlaps a
  // live block). Called only with `verify`; thread-safe.
  virtual std::string check_block(const void* p, std::size_t bytes) noexcept = 0;
  // Forgets a block for check_block() before it is freed. Called only with `verify`.
  virtual void forget_block(const void* p, std::size_t bytes) noexcept = 0;
};

// Sizes a kernel draws, for kernels that take a distribution (the churn kernel).
enum class SizeDistribution {
  kUniform,     // uniform in [min_size, max_size]
  kLogUniform,  // log-uniform in [min_size, max_size]: as many 16-32 B as 512-1024 KiB blocks
  kDlMix,       // the sizes of the built-in deep-learning workloads' traces, with their frequencies
};

struct StressSettings {
  int threads = 2;
  double seconds = 0;            // run time; 0: run until `ops` allocations
  std::uint64_t ops = 0;         // allocations in total over all threads; 0: run for `seconds`
  bool verify = false;
  SizeDistribution sizes = SizeDistribution::kLogUniform;
  std::size_t min_size = 16;
  std::size_t max_size = std::size_t{1} << 20;
  std::uint64_t seed = 1;
  double sample_interval_seconds = 0.1;
  std::function<void()> sample;  // may be empty
};

struct StressCounters {
  std::uint64_t allocs = 0;
  std::uint64_t frees = 0;
  std::uint64_t failed_allocs = 0;
  std::uint64_t cross_thread_frees = 0;  // blocks freed by a thread other than the one that made them
  std::uint64_t verified_ops = 0;        // blocks whose contents were checked on free
  std::uint64_t corruptions = 0;         // blocks that failed their check, and overlaps found
  std::uint64_t bytes_allocated = 0;     // sum of requested bytes
  // Of allocs + frees, those made outside the timed phase (larson's warm-up, blocks left at the end
  // and freed by the calling thread): counted and verified like the rest, but not in the throughput.
  std::uint64_t untimed_ops = 0;
};

struct StressResult {
  StressCounters counters;
  double seconds = 0;                 // wall time from the start barrier to the last thread's end
  std::string first_corruption;       // "" or a one-line description of the first one found
};

// A kernel: name, what it models (with its source), and its entry point.
struct StressKernel {
  std::string_view name;
  std::string_view description;
  StressResult (*run)(StressTarget& target, const StressSettings& settings);
};

// Every kernel, the churn kernel first (the default).
const std::vector<StressKernel>& stress_kernels();
// nullptr when there is no such kernel.
const StressKernel* find_stress_kernel(std::string_view name);

}  // namespace tiermark
