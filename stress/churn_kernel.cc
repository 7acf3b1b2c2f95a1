// The churn kernel (docs/stress.md): each thread keeps up to kSlotsPerThread live blocks and, at
// random, allocates (a size from the chosen distribution) or frees a random one of them, the more
// likely to free the more it holds. One allocation in
// kHandOffOneIn is handed to the next thread's inbox instead of being kept, producer to consumer as
// in mimalloc-bench's xmalloc-test, and freed there (a cross-thread free). Each thread drains its
// inbox every kDrainEvery steps; an inbox holds at most kInboxCapacity blocks (a full one refuses the
// hand-off), so the live blocks of a run are bounded by threads x (kSlotsPerThread + kInboxCapacity).
//
// Invariants: every block allocated is freed before run_churn returns (own slots first, then a
// barrier after which nobody hands off any more, then the last drain), so allocs == frees on return;
// allocs + failed_allocs == the operations the budget granted; with verify, a block is filled before
// it is kept or handed off, and its contents are checked on whichever thread frees it.
#include "stress/churn_kernel.h"

#include <barrier>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <stdexcept>
#include <vector>

#include "stress/block_pattern.h"
#include "stress/stress_run.h"

namespace tiermark {
namespace {

// malloc's alignment on x86-64 glibc; every request asks for it.
constexpr std::size_t kAlignment = 16;
// Live blocks per thread at most: with log-uniform sizes in [16 B, 1 MiB] (mean about 94 KiB) and
// the slots about half full, some 12 MiB live per thread, far beyond any cache.
constexpr std::size_t kSlotsPerThread = 256;
constexpr unsigned kHandOffOneIn = 4;
constexpr unsigned kDrainEvery = 16;
// Blocks waiting in one thread's inbox at most. A drain every 16 steps takes about 2 when both threads
// run; the rest is room for a consumer that is off the CPU (a time slice is thousands of steps), so
// that most hand-offs still happen on a busy machine, while memory stays at most twice the slots'.
constexpr std::size_t kInboxCapacity = kSlotsPerThread;

// The dl-mix distribution: the share of allocations (parts per million) whose size falls in
// [2^log2, 2^(log2+1)), from the built-in deep-learning workloads' traces, each workload weighted
// equally: transformer/gpt2-small (2,739 allocations), transformer/bert-base (2,643), cnn/resnet50
// (2,768) and llm-serve/llama2-7b (2,910,999), generated with `tiermark trace gen SPEC -o x.csv` at
// their default options (2026-11-23) and bucketed by floor(log2(size)).
// Buckets outside [min_size, max_size] are left out and the rest renormalised; within a bucket the
// size is log-uniform.
struct DlMixBucket {
  unsigned log2;
  std::uint32_t ppm;
};
constexpr DlMixBucket kDlMix[] = {
    {2, 1928},     {3, 4787},     {8, 15444},    {9, 17341},    {10, 34932},  {11, 167758}, {12, 15311},
    {13, 28477},   {14, 13855},   {15, 16238},   {16, 14429},   {17, 35152},  {18, 110542}, {19, 54100},
    {20, 43388},   {21, 85674},   {22, 25962},   {23, 130596},  {24, 41659},  {25, 93661},  {26, 10611},
    {27, 14758},   {28, 757},     {29, 21911},   {31, 730},
};

// Draws request sizes in [min_size, max_size] from one distribution.
class SizeDrawer {
 public:
  explicit SizeDrawer(const StressSettings& s) : kind_(s.sizes), min_(s.min_size), max_(s.max_size) {
    if (kind_ != SizeDistribution::kDlMix) return;
    std::vector<double> weights;
    for (const DlMixBucket& b : kDlMix) {
      const std::size_t lo = std::max(min_, std::size_t{1} << b.log2);
      const std::size_t hi = std::min(max_, (std::size_t{2} << b.log2) - 1);
      if (lo > hi) continue;
      ranges_.push_back({lo, hi});
      weights.push_back(b.ppm);
    }
    if (ranges_.empty()) throw std::invalid_argument("churn: no size of the dl-mix table lies in [min_size, max_size]");
    bucket_ = std::discrete_distribution<std::size_t>(weights.begin(), weights.end());
  }

  std::size_t draw(std::mt19937_64& rng) {
    switch (kind_) {
      case SizeDistribution::kUniform: return std::uniform_int_distribution<std::size_t>(min_, max_)(rng);
      case SizeDistribution::kLogUniform: return log_uniform(min_, max_, rng);
      case SizeDistribution::kDlMix: {
        const auto& [lo, hi] = ranges_[bucket_(rng)];
        return log_uniform(lo, hi, rng);
      }
    }
    return min_;
  }

 private:
  static std::size_t log_uniform(std::size_t lo, std::size_t hi, std::mt19937_64& rng) {
    const double x = std::exp(std::uniform_real_distribution<double>(std::log(double(lo)), std::log(double(hi) + 1))(rng));
    return std::clamp(static_cast<std::size_t>(x), lo, hi);
  }

  SizeDistribution kind_;
  std::size_t min_, max_;
  std::vector<std::pair<std::size_t, std::size_t>> ranges_;
  std::discrete_distribution<std::size_t> bucket_;
};

struct Block {
  void* p;
  std::size_t bytes;
  std::uint64_t id;
};

// Blocks handed to a thread by another, to be freed by it.
struct Inbox {
  std::mutex mutex;
  std::vector<Block> blocks;
};

// What the threads of one run share.
struct Run {
  Run(StressTarget& t, const StressSettings& s)
      : target(t), settings(s), budget(s), inboxes(s.threads), end(s.threads) {}

  StressTarget& target;
  const StressSettings& settings;
  StressBudget budget;
  std::vector<Inbox> inboxes;
  std::barrier<> end;  // after it, no thread hands off any more
  std::mutex first_mutex;
  std::string first_corruption;

  void corruption(StressCounters& c, const std::string& what) {
    ++c.corruptions;
    std::lock_guard lock(first_mutex);
    if (first_corruption.empty()) first_corruption = what;
  }
};

// Ids are unique over the run's threads: the allocating thread in the top 16 bits.
constexpr unsigned kThreadShift = 48;

std::string describe(const Block& b) {
  char text[128];
  std::snprintf(text, sizeof text, "block %llu of thread %llu (%zu bytes at %p)",
                static_cast<unsigned long long>(b.id & ((std::uint64_t{1} << kThreadShift) - 1)),
                static_cast<unsigned long long>(b.id >> kThreadShift), b.bytes, b.p);
  return text;
}

class Worker {
 public:
  Worker(Run& run, int thread)
      : run_(run),
        thread_(thread),
        rng_(run.settings.seed * 0x9E3779B97F4A7C15ULL + static_cast<std::uint64_t>(thread)),
        sizes_(run.settings),
        verify_(run.settings.verify),
        touchable_(run.target.touchable()) {
    live_.reserve(kSlotsPerThread);
  }

  const StressCounters& counters() const { return c_; }

  void run() {
    std::uint64_t taken = 0;
    for (unsigned step = 1;; ++step) {
      if (step % kDrainEvery == 0) drain();
      // Allocate with probability 1 - live / slots (the Ehrenfest urn): the live count reverts to half
      // the slots, so memory in use is steady over a soak, whatever the run's length.
      const bool allocate = std::uniform_int_distribution<std::size_t>(0, kSlotsPerThread - 1)(rng_) >= live_.size();
      if (!allocate) {
        free_slot(std::uniform_int_distribution<std::size_t>(0, live_.size() - 1)(rng_));
      } else if (run_.budget.take(taken)) {
        allocate_one();
      } else {
        break;
      }
    }
    while (!live_.empty()) free_slot(live_.size() - 1);
    drain();
    run_.end.arrive_and_wait();
    drain();
  }

 private:
  void allocate_one() {
    const std::size_t bytes = sizes_.draw(rng_);
    void* p = run_.target.allocate(bytes, kAlignment);
    if (p == nullptr) {
      ++c_.failed_allocs;
      return;
    }
    ++c_.allocs;
    c_.bytes_allocated += bytes;
    const Block b{p, bytes, (static_cast<std::uint64_t>(thread_) << kThreadShift) | ++next_id_};
    if (verify_) {
      if (const std::string overlap = run_.target.check_block(p, bytes); !overlap.empty()) {
        run_.corruption(c_, describe(b) + ": " + overlap);
      } else if (!touchable_) {
        ++c_.verified_ops;  // untouchable memory: the overlap check is all the verification there is
      }
      if (touchable_) fill_block(p, bytes, b.id);
    }
    if (run_.settings.threads > 1 && rng_() % kHandOffOneIn == 0 && hand_off(b)) return;
    live_.push_back(b);  // there is room: the kernel allocates only with fewer than kSlotsPerThread live
  }

  // Gives `b` to the next thread, unless its inbox is full (that thread is behind, descheduled on a
  // busy machine): then the block stays here, as snmalloc's memgrowth test frees locally when every
  // mailbox is full. Without the bound, a consumer off the CPU for 100 ms lets its inbox grow by
  // hundreds of thousands of blocks, and memory grows with the scheduler, not the allocator.
  bool hand_off(const Block& b) {
    Inbox& inbox = run_.inboxes[(thread_ + 1) % run_.settings.threads];
    std::lock_guard lock(inbox.mutex);
    if (inbox.blocks.size() >= kInboxCapacity) return false;
    inbox.blocks.push_back(b);
    return true;
  }

  void free_slot(std::size_t i) {
    const Block b = live_[i];
    live_[i] = live_.back();
    live_.pop_back();
    release(b);
  }

  void release(const Block& b) {
    if (verify_) {
      if (touchable_) {
        ++c_.verified_ops;
        if (!check_block(b.p, b.bytes, b.id)) run_.corruption(c_, describe(b) + ": its pattern was overwritten while it was live");
      }
      run_.target.forget_block(b.p, b.bytes);
    }
    run_.target.deallocate(b.p, b.bytes, kAlignment);
    ++c_.frees;
  }

  void drain() {
    {
      Inbox& inbox = run_.inboxes[thread_];
      std::lock_guard lock(inbox.mutex);
      inbox.blocks.swap(received_);
    }
    for (const Block& b : received_) {
      release(b);
      ++c_.cross_thread_frees;
    }
    received_.clear();
  }

  Run& run_;
  const int thread_;
  StressCounters c_;  // this thread's own (a cache line of another thread's would be false sharing)
  std::mt19937_64 rng_;
  SizeDrawer sizes_;
  const bool verify_, touchable_;
  std::vector<Block> live_, received_;
  std::uint64_t next_id_ = 0;
};

}  // namespace

StressResult run_churn(StressTarget& target, const StressSettings& settings) {
  if (settings.threads < 1) throw std::invalid_argument("churn: threads must be at least 1");
  if ((settings.seconds > 0) == (settings.ops > 0)) throw std::invalid_argument("churn: set exactly one of seconds and ops");
  if (settings.min_size == 0 || settings.min_size > settings.max_size) {
    throw std::invalid_argument("churn: sizes must satisfy 0 < min_size <= max_size");
  }
  Run run(target, settings);
  // Every worker is built (and its size table checked) before any thread starts.
  std::vector<Worker> workers;
  workers.reserve(settings.threads);
  for (int t = 0; t < settings.threads; ++t) workers.emplace_back(run, t);
  StressResult result;
  result.seconds = run_stress_threads(settings.threads, settings, [&](int t) { workers[t].run(); });
  for (const Worker& worker : workers) {
    const StressCounters& c = worker.counters();
    result.counters.allocs += c.allocs;
    result.counters.frees += c.frees;
    result.counters.failed_allocs += c.failed_allocs;
    result.counters.cross_thread_frees += c.cross_thread_frees;
    result.counters.verified_ops += c.verified_ops;
    result.counters.corruptions += c.corruptions;
    result.counters.bytes_allocated += c.bytes_allocated;
  }
  result.first_corruption = run.first_corruption;
  return result;
}

}  // namespace tiermark
