// The churn kernel (stress/churn_kernel.cc) against fake targets: it catches a target that corrupts a
// live block and one that hands out overlapping blocks, its counts balance, it counts failures under a
// tiny capacity and carries on, it honours the operation budget, and it frees across threads.
#include "stress/churn_kernel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace tiermark {
namespace {

// Thread-safe malloc with a capacity, a non-overlap map and a record of what it saw.
class FakeTarget : public StressTarget {
 public:
  explicit FakeTarget(std::size_t capacity = 0) : capacity_(capacity) {}

  void* allocate(std::size_t bytes, std::size_t alignment) noexcept override {
    std::lock_guard lock(mutex_);
    if (capacity_ != 0 && used_ + bytes > capacity_) return nullptr;
    void* p = std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment);
    used_ += bytes;
    ++allocs_;
    min_size_ = std::min(min_size_, bytes);
    max_size_ = std::max(max_size_, bytes);
    owner_[p] = std::this_thread::get_id();
    after_allocate(p, bytes);
    return p;
  }
  void deallocate(void* p, std::size_t bytes, std::size_t /*alignment*/) noexcept override {
    std::lock_guard lock(mutex_);
    used_ -= bytes;
    ++frees_;
    if (owner_.at(p) != std::this_thread::get_id()) ++cross_thread_frees_;
    owner_.erase(p);
    before_free(p);
    std::free(p);
  }
  bool touchable() const noexcept override { return true; }
  std::string check_block(const void* p, std::size_t bytes) noexcept override {
    std::lock_guard lock(mutex_);
    ++checks_;
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    const auto next = live_.upper_bound(start);
    if ((next != live_.end() && next->first < start + bytes) || (next != live_.begin() && std::prev(next)->second > start)) {
      return "overlaps a live block";
    }
    live_.emplace(start, start + bytes);
    return "";
  }
  void forget_block(const void* p, std::size_t bytes) noexcept override {
    std::lock_guard lock(mutex_);
    const auto it = live_.find(reinterpret_cast<std::uintptr_t>(p));
    if (it != live_.end() && it->second == reinterpret_cast<std::uintptr_t>(p) + bytes) live_.erase(it);
  }

  std::uint64_t allocs() const { return allocs_; }
  std::uint64_t frees() const { return frees_; }
  std::uint64_t cross_thread_frees() const { return cross_thread_frees_; }
  std::uint64_t checks() const { return checks_; }
  std::size_t used() const { return used_; }
  std::size_t min_size() const { return min_size_; }
  std::size_t max_size() const { return max_size_; }

 protected:
  // Called under the lock.
  virtual void after_allocate(void* /*p*/, std::size_t /*bytes*/) {}
  virtual void before_free(void* /*p*/) {}

 private:
  std::mutex mutex_;
  std::size_t capacity_, used_ = 0;
  std::uint64_t allocs_ = 0, frees_ = 0, cross_thread_frees_ = 0, checks_ = 0;
  std::size_t min_size_ = ~std::size_t{0}, max_size_ = 0;
  std::map<void*, std::thread::id> owner_;
  std::map<std::uintptr_t, std::uintptr_t> live_;
};

// Every 50th allocation flips a byte of the block allocated just before it (filled by then: one
// thread), as a stray write by the allocator would.
class CorruptingTarget final : public FakeTarget {
 public:
  std::uint64_t planted() const { return planted_; }

 private:
  void after_allocate(void* p, std::size_t bytes) override {
    if (++count_ % 50 == 0 && previous_ != nullptr) {
      static_cast<unsigned char*>(previous_)[0] ^= 0x5a;
      ++planted_;
    }
    previous_ = p;
    (void)bytes;
  }
  void before_free(void* p) override {
    if (p == previous_) previous_ = nullptr;
  }
  std::uint64_t count_ = 0, planted_ = 0;
  void* previous_ = nullptr;
};

// A simulated device: addresses only (dereferencing one would fault), every 40th allocation answered
// with the address of the block allocated before it, while that one is live (one thread).
class OverlappingDevice final : public StressTarget {
 public:
  void* allocate(std::size_t bytes, std::size_t /*alignment*/) noexcept override {
    std::lock_guard lock(mutex_);
    if (++count_ % 40 == 0 && previous_ != 0) {
      ++planted_;
      return reinterpret_cast<void*>(previous_);
    }
    previous_ = cursor_;
    cursor_ += (bytes + 15) / 16 * 16 + (std::uintptr_t{1} << 20);  // room for any request planted on it
    return reinterpret_cast<void*>(previous_);
  }
  void deallocate(void* p, std::size_t, std::size_t) noexcept override {
    std::lock_guard lock(mutex_);
    if (reinterpret_cast<std::uintptr_t>(p) == previous_) previous_ = 0;
  }
  bool touchable() const noexcept override { return false; }
  std::string check_block(const void* p, std::size_t bytes) noexcept override {
    std::lock_guard lock(mutex_);
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    const auto next = live_.upper_bound(start);
    if ((next != live_.end() && next->first < start + bytes) || (next != live_.begin() && std::prev(next)->second > start)) {
      ++rejected_[{start, bytes}];
      return "overlaps a live block";
    }
    live_.emplace(start, start + bytes);
    return "";
  }
  void forget_block(const void* p, std::size_t bytes) noexcept override {
    std::lock_guard lock(mutex_);
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    if (const auto r = rejected_.find({start, bytes}); r != rejected_.end()) {
      if (--r->second == 0) rejected_.erase(r);
      return;
    }
    const auto it = live_.find(start);
    if (it != live_.end() && it->second == start + bytes) live_.erase(it);
  }
  std::uint64_t planted() const { return planted_; }

 private:
  std::mutex mutex_;
  std::uintptr_t cursor_ = std::uintptr_t{0x5100} << 32, previous_ = 0;  // non-canonical: any access faults
  std::uint64_t count_ = 0, planted_ = 0;
  std::map<std::uintptr_t, std::uintptr_t> live_;
  std::map<std::pair<std::uintptr_t, std::size_t>, int> rejected_;
};

StressSettings ops_settings(int threads, std::uint64_t ops, bool verify) {
  StressSettings s;
  s.threads = threads;
  s.ops = ops;
  s.verify = verify;
  s.max_size = 64 << 10;
  return s;
}

TEST(ChurnKernel, CountsBalanceAndEverythingIsFreed) {
  FakeTarget target;
  const StressResult r = run_churn(target, ops_settings(2, 20000, true));
  EXPECT_EQ(r.counters.allocs + r.counters.failed_allocs, 20000u);
  EXPECT_EQ(r.counters.failed_allocs, 0u);
  EXPECT_EQ(r.counters.allocs, r.counters.frees);
  EXPECT_EQ(target.allocs(), r.counters.allocs);
  EXPECT_EQ(target.frees(), r.counters.frees);
  EXPECT_EQ(target.used(), 0u);
  EXPECT_EQ(r.counters.verified_ops, r.counters.frees);
  EXPECT_EQ(r.counters.corruptions, 0u) << r.first_corruption;
  EXPECT_EQ(target.checks(), r.counters.allocs);
  EXPECT_TRUE(r.first_corruption.empty());
  EXPECT_GT(r.seconds, 0);
}

TEST(ChurnKernel, HonoursTheOperationBudgetExactly) {
  for (const std::uint64_t ops : {1u, 7u, 1000u, 4321u}) {
    FakeTarget target;
    const StressResult r = run_churn(target, ops_settings(2, ops, false));
    EXPECT_EQ(r.counters.allocs + r.counters.failed_allocs, ops);
    EXPECT_EQ(r.counters.allocs, r.counters.frees);
    EXPECT_EQ(r.counters.verified_ops, 0u);
    EXPECT_EQ(target.checks(), 0u);  // no verification asked for
  }
}

TEST(ChurnKernel, CatchesACorruptedLiveBlock) {
  CorruptingTarget target;
  const StressResult r = run_churn(target, ops_settings(1, 5000, true));
  ASSERT_GT(target.planted(), 0u);
  EXPECT_EQ(r.counters.corruptions, target.planted());
  EXPECT_NE(r.first_corruption.find("pattern was overwritten"), std::string::npos) << r.first_corruption;
  EXPECT_EQ(r.counters.allocs, r.counters.frees);
}

TEST(ChurnKernel, CatchesOverlappingBlocksOnUntouchableMemory) {
  OverlappingDevice target;  // would fault on any write or read of a block
  const StressResult r = run_churn(target, ops_settings(1, 8000, true));
  ASSERT_GT(target.planted(), 0u);
  EXPECT_EQ(r.counters.corruptions, target.planted());
  EXPECT_NE(r.first_corruption.find("overlaps"), std::string::npos) << r.first_corruption;
  // On untouchable memory each allocation's overlap check is the verification.
  EXPECT_EQ(r.counters.verified_ops + r.counters.corruptions, r.counters.allocs);
}

TEST(ChurnKernel, CountsFailuresUnderATinyCapacityAndCarriesOn) {
  FakeTarget target(64 << 10);
  StressSettings s = ops_settings(2, 10000, true);
  s.max_size = 1 << 20;
  const StressResult r = run_churn(target, s);
  EXPECT_GT(r.counters.failed_allocs, 0u);
  EXPECT_GT(r.counters.allocs, 0u);
  EXPECT_EQ(r.counters.allocs + r.counters.failed_allocs, 10000u);
  EXPECT_EQ(r.counters.allocs, r.counters.frees);
  EXPECT_EQ(r.counters.corruptions, 0u);
  EXPECT_EQ(target.used(), 0u);
}

TEST(ChurnKernel, FreesAcrossThreadsOnlyWithSeveralThreads) {
  FakeTarget two;
  const StressResult r2 = run_churn(two, ops_settings(2, 10000, true));
  EXPECT_GT(r2.counters.cross_thread_frees, 0u);
  // The target saw exactly those frees on a thread other than the allocating one.
  EXPECT_EQ(two.cross_thread_frees(), r2.counters.cross_thread_frees);
  FakeTarget one;
  const StressResult r1 = run_churn(one, ops_settings(1, 2000, true));
  EXPECT_EQ(r1.counters.cross_thread_frees, 0u);
  EXPECT_EQ(one.cross_thread_frees(), 0u);
}

TEST(ChurnKernel, RunsForATimeAndSamples) {
  FakeTarget target;
  StressSettings s = ops_settings(2, 0, false);
  s.seconds = 0.2;
  s.sample_interval_seconds = 0.02;
  std::atomic<int> samples{0};
  s.sample = [&] { ++samples; };
  const StressResult r = run_churn(target, s);
  EXPECT_GT(r.counters.allocs, 0u);
  EXPECT_EQ(r.counters.allocs, r.counters.frees);
  EXPECT_GE(samples.load(), 2);
}

TEST(ChurnKernel, DrawsSizesWithinTheBounds) {
  for (const SizeDistribution d : {SizeDistribution::kUniform, SizeDistribution::kLogUniform, SizeDistribution::kDlMix}) {
    FakeTarget target;
    StressSettings s = ops_settings(1, 3000, false);
    s.sizes = d;
    s.min_size = 100;
    s.max_size = 300000;
    run_churn(target, s);
    EXPECT_GE(target.min_size(), 100u);
    EXPECT_LE(target.max_size(), 300000u);
    EXPECT_LT(target.min_size(), target.max_size());
  }
}

TEST(ChurnKernel, RefusesSettingsItCannotHonourBeforeStarting) {
  FakeTarget target;
  StressSettings s = ops_settings(1, 10, false);
  s.sizes = SizeDistribution::kDlMix;
  s.min_size = 16;
  s.max_size = 200;  // the built-in workloads allocate nothing between 16 and 255 bytes
  EXPECT_THROW(run_churn(target, s), std::invalid_argument);
  s = ops_settings(1, 10, false);
  s.seconds = 1;  // and ops
  EXPECT_THROW(run_churn(target, s), std::invalid_argument);
  EXPECT_EQ(target.allocs(), 0u);
}

}  // namespace
}  // namespace tiermark
