// bench_allocators: the cost of allocate + deallocate for every tiermark allocator on host memory.
//   pair/<allocator>/<size>        allocate one block and free it again (the fast path)
//   random/<allocator>/<lo>-<hi>   free a random one of 10,000 live blocks and allocate a block of a
//                                  log-uniform random size in [lo, hi] in its place (one item = both)
// Each loop is templated on the concrete allocator type, so there is no virtual call per operation;
// `malloc` rows call malloc/free directly as the baseline without tiermark's bookkeeping.
// Nothing here is asserted: the numbers are measured, reported, and compared within one run.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "allocators/allocator_types.h"
#include "allocators/registry.h"
#include "benchmarks/bench_main.h"

namespace tiermark {
namespace {

constexpr std::size_t kLiveBlocks = 10'000;
constexpr std::size_t kSequenceLength = std::size_t{1} << 16;  // pre-drawn (victim, size) pairs, cycled
constexpr std::size_t kPairSizes[] = {64, 4096, 65536, std::size_t{1} << 20};
struct SizeRange {
  std::size_t lo;
  std::size_t hi;
  const char* label;
};
// 64 B..1 MiB is the range this suite cares about; 16 B..64 KiB matches the peer figures in
// shared/REFERENCE.md section 8 (mimalloc-bench style random replacement).
constexpr SizeRange kRandomRanges[] = {{64, std::size_t{1} << 20, "64-1M"}, {16, std::size_t{64} << 10, "16-64K"}};

// The raw C library, for the baseline rows.
struct RawMalloc {
  void* allocate(std::size_t size, std::size_t, StreamId) noexcept { return std::malloc(size); }
  void deallocate(void* p, std::size_t, std::size_t, StreamId) noexcept { std::free(p); }
};

struct RandomSequence {
  std::vector<std::uint32_t> victims;
  std::vector<std::uint32_t> sizes;
};

RandomSequence draw_sequence(const SizeRange& range) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<std::uint32_t> victim(0, kLiveBlocks - 1);
  std::uniform_real_distribution<double> log_size(std::log(double(range.lo)), std::log(double(range.hi)));
  RandomSequence sequence;
  for (std::size_t i = 0; i < kSequenceLength; ++i) {
    sequence.victims.push_back(victim(rng));
    sequence.sizes.push_back(static_cast<std::uint32_t>(std::lround(std::exp(log_size(rng)))));
  }
  return sequence;
}

template <class A>
void report(benchmark::State& state, const A& allocator) {
  if constexpr (requires { allocator.stats(); }) {
    const AllocatorStats s = allocator.stats();
    if (s.failed_requests != 0) state.SkipWithError("allocation failed: see failed_requests");
    state.counters["failed_requests"] = static_cast<double>(s.failed_requests);
    if (s.reserved_known && s.reserved_bytes.peak != 0) {
      state.counters["peak_reserved_bytes"] = static_cast<double>(s.reserved_bytes.peak);
      state.counters["efficiency"] = double(s.requested_bytes.peak) / double(s.reserved_bytes.peak);
    }
  }
}

template <class A>
void pair_loop(benchmark::State& state, A& allocator, std::size_t size) {
  for (auto _ : state) {
    void* p = allocator.allocate(size, kDefaultAlignment, 0);
    // As a const reference: Google Benchmark 1.7's non-const DoNotOptimize uses the in-out asm
    // constraint "+m,r", which GCC 12 can miscompile (gcc.gnu.org/bugzilla 105519, benchmark #1340):
    // under ASan it handed free() a garbage pointer. An input-only constraint is enough here.
    benchmark::DoNotOptimize(std::as_const(p));
    if (p == nullptr) [[unlikely]] break;
    allocator.deallocate(p, size, kDefaultAlignment, 0);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  report(state, allocator);
}

template <class A>
void random_loop(benchmark::State& state, A& allocator, const RandomSequence& sequence) {
  std::vector<void*> blocks(kLiveBlocks);
  std::vector<std::uint32_t> sizes(kLiveBlocks);
  for (std::size_t i = 0; i < kLiveBlocks; ++i) {
    sizes[i] = sequence.sizes[i];
    blocks[i] = allocator.allocate(sizes[i], kDefaultAlignment, 0);
  }
  std::size_t k = kLiveBlocks;
  auto replace_one = [&] {
    const std::uint32_t victim = sequence.victims[k];
    if (blocks[victim] != nullptr) [[likely]] allocator.deallocate(blocks[victim], sizes[victim], kDefaultAlignment, 0);
    sizes[victim] = sequence.sizes[k];
    blocks[victim] = allocator.allocate(sizes[victim], kDefaultAlignment, 0);
    benchmark::DoNotOptimize(std::as_const(blocks[victim]));  // const: see pair_loop
    k = (k + 1) & (kSequenceLength - 1);
  };
  // Warm-up, untimed: one pass over the sequence reaches the steady state (pages of recycled blocks
  // faulted in, caches and pools filled), which short timed runs would otherwise measure instead.
  for (std::size_t i = 0; i < kSequenceLength; ++i) replace_one();
  for (auto _ : state) replace_one();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  report(state, allocator);
  for (std::size_t i = 0; i < kLiveBlocks; ++i) {
    if (blocks[i] != nullptr) allocator.deallocate(blocks[i], sizes[i], kDefaultAlignment, 0);
  }
}

// Builds a fresh allocator of type T on its own host upstream for one benchmark run; caching.vmm
// remaps pages, which host memory cannot do here, so it runs on a simulated device (the loops never
// write into blocks, so the two are measured alike).
template <class T>
struct Fixture {
  std::unique_ptr<Upstream> upstream = make_upstream(std::is_same_v<T, CachingVmmAllocator> ? "simulated" : "host");
  T allocator{make_options(std::string(T::kName), T::kName, T::option_specs()), *upstream};
};

void register_all() {
  const auto sequences = std::make_shared<std::vector<RandomSequence>>();
  for (const SizeRange& range : kRandomRanges) sequences->push_back(draw_sequence(range));

  for (std::size_t size : kPairSizes) {
    benchmark::RegisterBenchmark(("pair/malloc/" + std::to_string(size)).c_str(), [size](benchmark::State& state) {
      RawMalloc raw;
      pair_loop(state, raw, size);
    });
  }
  for (std::size_t r = 0; r < std::size(kRandomRanges); ++r) {
    benchmark::RegisterBenchmark((std::string("random/malloc/") + kRandomRanges[r].label).c_str(),
                                 [sequences, r](benchmark::State& state) {
                                   RawMalloc raw;
                                   random_loop(state, raw, (*sequences)[r]);
                                 });
  }
  AllAllocatorTypes::for_each([&]<class T>(std::type_identity<T>) {
    const std::string name(T::kName);
    for (std::size_t size : kPairSizes) {
      benchmark::RegisterBenchmark(("pair/" + name + "/" + std::to_string(size)).c_str(), [size](benchmark::State& state) {
        Fixture<T> fixture;
        pair_loop(state, fixture.allocator, size);
      });
    }
    for (std::size_t r = 0; r < std::size(kRandomRanges); ++r) {
      benchmark::RegisterBenchmark(("random/" + name + "/" + kRandomRanges[r].label).c_str(),
                                   [sequences, r](benchmark::State& state) {
                                     Fixture<T> fixture;
                                     random_loop(state, fixture.allocator, (*sequences)[r]);
                                   });
    }
  });
}

}  // namespace
}  // namespace tiermark

int main(int argc, char** argv) {
  std::vector<std::pair<std::string, std::string>> context = {{"tiermark_malloc", tiermark::active_malloc_name()}};
  if (const char* preload = std::getenv("LD_PRELOAD")) context.emplace_back("tiermark_ld_preload", preload);
  return tiermark::run_benchmark_main(argc, argv, tiermark::register_all, context);
}
