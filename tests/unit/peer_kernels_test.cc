// The mimalloc-bench-style kernels (stress/peer_kernels.cc) against fake targets: a malloc-backed
// one that counts live blocks, checks sized frees and keeps an interval map for check_block(); a
// corrupting one that flips a byte in a live block, which verification must catch; and a
// non-touchable one whose addresses lie in a PROT_NONE mapping, so any write or read of a block
// crashes the test. Budgets are small: the file runs in a few seconds, also under ThreadSanitizer.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "stress/peer_kernels.h"
#include "stress/stress_kernel.h"

namespace tiermark {
namespace {

// Thread-safe, malloc-backed; remembers every live block with its size (a free with another size
// is an error) and, for check_block(), the verified blocks as intervals.
class MallocTarget : public StressTarget {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment) noexcept override {
    if (alignment > alignof(std::max_align_t)) return nullptr;
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) return nullptr;
    const std::lock_guard<std::mutex> lock(mutex_);
    live_[p] = Live{bytes, alignment, ++generation_};
    after_allocate(p, bytes);
    return p;
  }
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto it = live_.find(p);
      if (it == live_.end()) {
        ++bad_frees_;
      } else {
        if (it->second.bytes != bytes || it->second.alignment != alignment) ++bad_frees_;
        live_.erase(it);
      }
    }
    std::free(p);
  }
  bool touchable() const noexcept override { return true; }
  std::string check_block(const void* p, std::size_t bytes) noexcept override {
    const std::lock_guard<std::mutex> lock(mutex_);
    return check_interval(reinterpret_cast<std::uintptr_t>(p), bytes);
  }
  void forget_block(const void* p, std::size_t) noexcept override {
    const std::lock_guard<std::mutex> lock(mutex_);
    intervals_.erase(reinterpret_cast<std::uintptr_t>(p));
  }

  std::size_t live() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return live_.size();
  }
  std::size_t checked_live() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return intervals_.size();
  }
  std::uint64_t bad_frees() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return bad_frees_;
  }

 protected:
  struct Live {
    std::size_t bytes;
    std::size_t alignment;
    std::uint64_t generation;
  };
  // Called under the lock after each allocation.
  virtual void after_allocate(void*, std::size_t) {}

  // Records [begin, begin + bytes) unless it overlaps a recorded interval.
  std::string check_interval(std::uintptr_t begin, std::size_t bytes) {
    const std::uintptr_t end = begin + (bytes == 0 ? 1 : bytes);
    auto next = intervals_.lower_bound(begin);
    if (next != intervals_.end() && next->first < end) return "overlaps a live block at its start";
    if (next != intervals_.begin()) {
      auto prev = std::prev(next);
      if (prev->second > begin) return "overlaps a live block before it";
    }
    intervals_[begin] = end;
    return "";
  }

  std::mutex mutex_;
  std::map<void*, Live> live_;
  std::map<std::uintptr_t, std::uintptr_t> intervals_;
  std::uint64_t generation_ = 0;
  std::uint64_t bad_frees_ = 0;
};

// Every 16th allocation a thread makes, flips a byte of the block that thread allocated before it,
// if that very block is still live. The kernels it is used with (larson, glibc-thread) keep a
// thread's blocks to that thread until it allocates again, so the flip races with nothing.
class CorruptingTarget : public MallocTarget {
 public:
  std::uint64_t flips() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return flips_;
  }

 private:
  struct Last {
    const CorruptingTarget* target = nullptr;
    void* p = nullptr;
    std::uint64_t generation = 0;
    std::uint64_t count = 0;
  };
  void after_allocate(void* p, std::size_t bytes) override {
    thread_local Last last;
    if (last.target != this) last = Last{this};
    if (++last.count % 16 == 0 && last.p != nullptr) {
      const auto it = live_.find(last.p);
      if (it != live_.end() && it->second.generation == last.generation && it->second.bytes > 0) {
        static_cast<unsigned char*>(last.p)[it->second.bytes / 2] ^= 0xFF;
        ++flips_;
      }
    }
    last.p = bytes > 0 ? p : nullptr;
    last.generation = generation_;
  }
  std::uint64_t flips_ = 0;
};

// Hands out addresses inside a PROT_NONE reservation: a kernel that writes or reads a block
// crashes. Freed ranges are reused (exact rounded size), so the overlap check has work to do.
class UntouchableTarget : public StressTarget {
 public:
  static constexpr std::size_t kRegion = std::size_t{1} << 30;
  UntouchableTarget() {
    void* base = mmap(nullptr, kRegion, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    base_ = base == MAP_FAILED ? 0 : reinterpret_cast<std::uintptr_t>(base);
    next_ = base_;
  }
  ~UntouchableTarget() override {
    if (base_ != 0) munmap(reinterpret_cast<void*>(base_), kRegion);
  }
  bool ok() const { return base_ != 0; }

  void* allocate(std::size_t bytes, std::size_t alignment) noexcept override {
    if (alignment > 16) return nullptr;
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + 15) & ~std::size_t{15};
    const std::lock_guard<std::mutex> lock(mutex_);
    std::uintptr_t p = 0;
    auto& reuse = free_[rounded];
    if (!reuse.empty()) {
      p = reuse.back();
      reuse.pop_back();
    } else {
      if (next_ + rounded > base_ + kRegion) return nullptr;
      p = next_;
      next_ += rounded;
    }
    live_[p] = bytes;
    return reinterpret_cast<void*>(p);
  }
  void deallocate(void* p, std::size_t bytes, std::size_t) noexcept override {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto addr = reinterpret_cast<std::uintptr_t>(p);
    const auto it = live_.find(addr);
    if (it == live_.end() || it->second != bytes) {
      ++bad_frees_;
      return;
    }
    live_.erase(it);
    free_[(std::max<std::size_t>(bytes, 1) + 15) & ~std::size_t{15}].push_back(addr);
  }
  bool touchable() const noexcept override { return false; }
  std::string check_block(const void* p, std::size_t bytes) noexcept override {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto begin = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t end = begin + std::max<std::size_t>(bytes, 1);
    auto next = intervals_.lower_bound(begin);
    if (next != intervals_.end() && next->first < end) return "overlap";
    if (next != intervals_.begin() && std::prev(next)->second > begin) return "overlap";
    intervals_[begin] = end;
    ++checks_;
    return "";
  }
  void forget_block(const void* p, std::size_t) noexcept override {
    const std::lock_guard<std::mutex> lock(mutex_);
    intervals_.erase(reinterpret_cast<std::uintptr_t>(p));
  }
  std::size_t live() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return live_.size();
  }
  std::uint64_t checks() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return checks_;
  }
  std::uint64_t bad_frees() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return bad_frees_;
  }

 private:
  std::uintptr_t base_ = 0;
  std::uintptr_t next_ = 0;
  std::mutex mutex_;
  std::map<std::uintptr_t, std::size_t> live_;
  std::map<std::size_t, std::vector<std::uintptr_t>> free_;
  std::map<std::uintptr_t, std::uintptr_t> intervals_;
  std::uint64_t checks_ = 0;
  std::uint64_t bad_frees_ = 0;
};

struct KernelCase {
  const char* name;
  StressResult (*run)(StressTarget&, const StressSettings&);
  std::uint64_t ops;       // a small budget that still exercises the kernel's structure
  bool frees_across;       // the kernel frees blocks on other threads than their allocator's
};

// cache-* iterations write their object 1,000,000 times each with two threads: a few suffice.
const KernelCase kCases[] = {
    {"larson", run_larson, 5000, true},
    {"xmalloc_test", run_xmalloc_test, 3 * 4097, true},
    {"cache_scratch", run_cache_scratch, 6, true},
    {"cache_thrash", run_cache_thrash, 6, false},
    {"glibc_thread", run_glibc_thread, 20000, false},
    {"mstress", run_mstress, 12000, true},
    {"rptest", run_rptest, 6000, true},
};

StressSettings ops_settings(int threads, std::uint64_t ops, bool verify) {
  StressSettings s;
  s.threads = threads;
  s.ops = ops;
  s.verify = verify;
  s.sample_interval_seconds = 0.01;
  return s;
}

class PeerKernel : public ::testing::TestWithParam<KernelCase> {};

TEST_P(PeerKernel, FreesEverythingItAllocates) {
  const KernelCase& k = GetParam();
  MallocTarget target;
  const StressResult r = k.run(target, ops_settings(2, k.ops, false));
  const StressCounters& c = r.counters;
  EXPECT_GT(c.allocs, 0u);
  EXPECT_EQ(c.allocs, c.frees);
  EXPECT_EQ(target.live(), 0u);
  EXPECT_EQ(target.bad_frees(), 0u) << "a free with another size or alignment than its allocation";
  EXPECT_EQ(c.failed_allocs, 0u);
  EXPECT_EQ(c.corruptions, 0u) << r.first_corruption;
  EXPECT_EQ(c.verified_ops, 0u);
  EXPECT_GE(c.bytes_allocated, c.allocs);
  EXPECT_GT(r.seconds, 0.0);
  if (k.frees_across) {
    EXPECT_GT(c.cross_thread_frees, 0u);
  } else {
    EXPECT_EQ(c.cross_thread_frees, 0u);
  }
  EXPECT_LE(c.cross_thread_frees, c.frees);
}

TEST_P(PeerKernel, OpsBudgetBoundsTheTimedAllocations) {
  // Setup allocations (larson's warm-up, cache-scratch's handed-out objects) are outside the
  // budget; everything else is one unit per allocation, so a second run with twice the budget
  // makes more allocations, and no kernel overshoots its budget by more than its setup.
  const KernelCase& k = GetParam();
  MallocTarget target;
  const StressResult small = k.run(target, ops_settings(2, k.ops, false));
  const StressResult large = k.run(target, ops_settings(2, 2 * k.ops, false));
  EXPECT_GT(large.counters.allocs, small.counters.allocs);
  EXPECT_EQ(large.counters.allocs - small.counters.allocs, k.ops);
  // Untimed work (setup, and what the calling thread frees after the threads end) is part of the
  // counts; how much is left at the end depends on the interleaving (xmalloc-test's queued batches),
  // so only its bound is checked here; larson's exact warm-up is checked below.
  EXPECT_LE(small.counters.untimed_ops, small.counters.allocs + small.counters.frees);
  EXPECT_LE(large.counters.untimed_ops, large.counters.allocs + large.counters.frees);
}

TEST(PeerKernelBudget, LarsonWarmUpIsUntimed) {
  // bench.sh's larson: 5000 blocks per thread, replaced 4x their number during the warm-up, then
  // every timed step frees one block and allocates one. So with 2 threads the warm-up is 10000 +
  // 40000 allocations and 40000 frees, the clean-up 10000 frees, and the timed phase 2 x budget ops.
  MallocTarget target;
  const StressResult r = run_larson(target, ops_settings(2, 1000, false));
  EXPECT_EQ(r.counters.untimed_ops, 10000u + 40000u + 40000u + 10000u);
  EXPECT_EQ(r.counters.allocs + r.counters.frees - r.counters.untimed_ops, 2u * 1000u);
}

TEST_P(PeerKernel, VerifiesEveryBlockWithoutFalseAlarms) {
  const KernelCase& k = GetParam();
  MallocTarget target;
  const StressResult r = k.run(target, ops_settings(2, k.ops, true));
  const StressCounters& c = r.counters;
  EXPECT_EQ(c.corruptions, 0u) << r.first_corruption;
  EXPECT_TRUE(r.first_corruption.empty());
  EXPECT_GT(c.verified_ops, 0u);
  EXPECT_EQ(c.verified_ops, c.frees) << "every freed block is checked";
  EXPECT_EQ(c.allocs, c.frees);
  EXPECT_EQ(target.live(), 0u);
  EXPECT_EQ(target.checked_live(), 0u) << "every checked block is forgotten before it is freed";
  EXPECT_EQ(target.bad_frees(), 0u);
}

TEST_P(PeerKernel, NeverTouchesAnUntouchableTarget) {
  const KernelCase& k = GetParam();
  UntouchableTarget target;
  ASSERT_TRUE(target.ok());
  const StressResult r = k.run(target, ops_settings(2, k.ops, true));
  const StressCounters& c = r.counters;
  EXPECT_EQ(c.corruptions, 0u) << r.first_corruption;
  EXPECT_EQ(c.verified_ops, 0u) << "no contents can be checked";
  EXPECT_EQ(target.checks(), c.allocs) << "every allocation is overlap-checked";
  EXPECT_EQ(c.allocs, c.frees);
  EXPECT_EQ(target.live(), 0u);
  EXPECT_EQ(target.bad_frees(), 0u);
}

TEST_P(PeerKernel, RunsForATimeBudget) {
  const KernelCase& k = GetParam();
  MallocTarget target;
  StressSettings s;
  s.threads = 2;
  s.seconds = 0.05;
  s.verify = true;
  int samples = 0;
  s.sample_interval_seconds = 0.01;
  s.sample = [&] { ++samples; };
  const StressResult r = k.run(target, s);
  EXPECT_GT(r.counters.allocs, 0u);
  EXPECT_EQ(r.counters.allocs, r.counters.frees);
  EXPECT_EQ(r.counters.corruptions, 0u) << r.first_corruption;
  EXPECT_EQ(target.live(), 0u);
  EXPECT_GE(r.seconds, 0.04);
  EXPECT_GE(samples, 1);
}

TEST_P(PeerKernel, RunsOnOneAndThreeThreads) {
  const KernelCase& k = GetParam();
  for (const int threads : {1, 3}) {
    MallocTarget target;
    const StressResult r = k.run(target, ops_settings(threads, k.ops, true));
    EXPECT_EQ(r.counters.corruptions, 0u) << threads << " threads: " << r.first_corruption;
    EXPECT_EQ(r.counters.allocs, r.counters.frees) << threads << " threads";
    EXPECT_EQ(target.live(), 0u) << threads << " threads";
    EXPECT_GT(r.counters.verified_ops, 0u) << threads << " threads";
  }
}

INSTANTIATE_TEST_SUITE_P(AllPeers, PeerKernel, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<KernelCase>& param) { return std::string(param.param.name); });

// A check that cannot fail proves nothing: flipped bytes in live blocks are reported.
TEST(PeerKernelVerify, CatchesAFlippedByteInLarson) {
  CorruptingTarget target;
  const StressResult r = run_larson(target, ops_settings(2, 20000, true));
  ASSERT_GT(target.flips(), 0u);
  EXPECT_GT(r.counters.corruptions, 0u);
  EXPECT_LE(r.counters.corruptions, target.flips());
  EXPECT_EQ(r.first_corruption.rfind("larson: ", 0), 0u) << r.first_corruption;
  EXPECT_EQ(r.counters.allocs, r.counters.frees);
  EXPECT_EQ(target.live(), 0u);
}

TEST(PeerKernelVerify, CatchesAFlippedByteInGlibcThread) {
  CorruptingTarget target;
  const StressResult r = run_glibc_thread(target, ops_settings(2, 20000, true));
  ASSERT_GT(target.flips(), 0u);
  EXPECT_GT(r.counters.corruptions, 0u);
  EXPECT_EQ(r.first_corruption.rfind("glibc-thread: ", 0), 0u) << r.first_corruption;
  EXPECT_EQ(target.live(), 0u);
}

TEST(PeerKernelVerify, CatchesAFlippedByteInMstressOnOneThread) {
  CorruptingTarget target;
  const StressResult r = run_mstress(target, ops_settings(1, 20000, true));
  ASSERT_GT(target.flips(), 0u);
  EXPECT_GT(r.counters.corruptions, 0u);
  EXPECT_EQ(r.first_corruption.rfind("mstress: ", 0), 0u) << r.first_corruption;
  EXPECT_EQ(target.live(), 0u);
}

// Overlaps reported by the target's check_block() count as corruptions too.
class OverlappingTarget : public MallocTarget {
 public:
  std::string check_block(const void* p, std::size_t bytes) noexcept override {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (++calls_ % 100 == 0) return "planted overlap";
    return check_interval(reinterpret_cast<std::uintptr_t>(p), bytes);
  }

 private:
  std::uint64_t calls_ = 0;
};

TEST(PeerKernelVerify, CountsOverlapsTheTargetReports) {
  OverlappingTarget target;
  const StressResult r = run_xmalloc_test(target, ops_settings(2, 3 * 4097, true));
  EXPECT_GE(r.counters.corruptions, r.counters.allocs / 100);
  EXPECT_EQ(r.first_corruption, "xmalloc-test: planted overlap");
}

}  // namespace
}  // namespace tiermark
