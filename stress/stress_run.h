// What every stress kernel shares to run: the budget (a time or an operation count, whichever
// StressSettings sets), the threads started together from a barrier and timed from the barrier to
// the last one's end, and the periodic memory sample. One home for these so every kernel stops,
// times and samples the same way.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "stress/stress_kernel.h"

namespace tiermark {

// Shared by a kernel's threads. `take()` before each allocation: false once the budget is spent.
// In time mode the clock is read once per 64 takes per thread (a clock read costs about as much as
// a small allocation), so a run overshoots its time by at most 64 operations per thread.
class StressBudget {
 public:
  explicit StressBudget(const StressSettings& settings)
      : ops_(settings.ops),
        deadline_(std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(settings.seconds))) {}

  // `local` is the calling thread's own counter (start it at 0).
  bool take(std::uint64_t& local) {
    if (stopped_.load(std::memory_order_relaxed)) return false;
    if (ops_ != 0) {
      if (taken_.fetch_add(1, std::memory_order_relaxed) < ops_) return true;
      stopped_.store(true, std::memory_order_relaxed);
      return false;
    }
    if ((local++ & 63) == 0 && std::chrono::steady_clock::now() >= deadline_) {
      stopped_.store(true, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  bool spent() const { return stopped_.load(std::memory_order_relaxed); }
  void stop() { stopped_.store(true, std::memory_order_relaxed); }

 private:
  const std::uint64_t ops_;
  const std::chrono::steady_clock::time_point deadline_;
  std::atomic<std::uint64_t> taken_{0};
  std::atomic<bool> stopped_{false};
};

// Runs body(thread_index) on `threads` threads released together, while the calling thread calls
// settings.sample() every settings.sample_interval_seconds until they finish. Returns the wall
// seconds from the release to the last thread's end.
inline double run_stress_threads(int threads, const StressSettings& settings, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> finished{0};
  std::vector<std::chrono::steady_clock::time_point> ends(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      body(t);
      ends[t] = std::chrono::steady_clock::now();
      finished.fetch_add(1, std::memory_order_release);
    });
  }
  while (ready.load() != threads) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  const auto interval = std::chrono::duration<double>(settings.sample_interval_seconds > 0 ? settings.sample_interval_seconds : 0.1);
  auto next_sample = start;
  while (finished.load(std::memory_order_acquire) != threads) {
    if (settings.sample && std::chrono::steady_clock::now() >= next_sample) {
      settings.sample();
      next_sample += std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (std::thread& thread : pool) thread.join();
  auto last = start;
  for (const auto end : ends) last = std::max(last, end);
  const double seconds = std::chrono::duration<double>(last - start).count();
  if (settings.sample) settings.sample();
  return seconds;
}

}  // namespace tiermark
