// bench_tiers: the memory-tier bandwidth kernels of `tiermark tiers` (tiers/kernels.h) under Google
// Benchmark, one row per kernel, working-set size and thread count:
//   tiers/<kernel>/<size>/threads:<t>     kernel read, write, ntwrite, copy or triad
// Sizes are each cache tier's own (half of L1, L2 and L3 as core 0 sees them, from hwloc) and DRAM (4x
// the last-level cache, at least 128 MiB); like `tiermark tiers`, a size is the working set of all
// arrays of all threads. bytes_per_second counts as STREAM does (read + written, no write-allocate:
// copy 16 B, triad 24 B per element). Each benchmark thread is pinned to its own core with hwloc and
// maps and first-touches its own arrays (tiers/tier_measure.h KernelBuffers) outside the timed loop;
// every result is verified after the loop and a wrong one fails the row (SkipWithError).
// Google Benchmark's own repetitions and min_time replace tiermark's sampling here.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/size_units.h"
#include "tiers/kernels.h"
#include "tiers/size_sweep.h"
#include "tiers/tier_measure.h"
#include "tiers/topology.h"
#include "benchmarks/bench_main.h"

namespace tiermark {
namespace {

const Topology& topology() {
  static const Topology kTopology;
  return kTopology;
}

void BM_TierKernel(benchmark::State& state, Kernel kernel, std::uint64_t size_bytes) {
  const int threads = state.threads();
  if (!topology().bind_thread_to_core(unsigned(state.thread_index()))) state.counters["unpinned"] = 1;
  KernelBuffers buffers(kernel, size_bytes / std::uint64_t(threads), best_isa(), &topology());
  buffers.run_pass();  // warm: the working set is in the tier it is meant to measure
  for (auto _ : state) buffers.run_pass();
  if (!buffers.verify()) state.SkipWithError("the kernel computed a wrong result");
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(buffers.counted_bytes()));
}

std::vector<std::uint64_t> tier_sizes() {
  std::vector<std::uint64_t> sizes;
  std::uint64_t last_level = 0;
  for (const CoreCache& cache : topology().caches_above_core(0)) {
    if (cache.size_bytes == 0) continue;
    sizes.push_back(round_to_granule(double(cache.size_bytes) / 2));
    last_level = cache.size_bytes * std::uint64_t(std::max(cache.instances, 1));
  }
  sizes.push_back(std::max<std::uint64_t>(4 * last_level, std::uint64_t{128} << 20));
  return sizes;
}

void register_all() {
  const int cores = std::max<int>(1, int(topology().cores().size()));
  for (const Kernel kernel : kAllKernels) {
    for (const std::uint64_t size : tier_sizes()) {
      auto* row = benchmark::RegisterBenchmark(
          (std::string("tiers/") + kernel_name(kernel) + "/" + format_size(size)).c_str(),
          [kernel, size](benchmark::State& state) { BM_TierKernel(state, kernel, size); });
      row->UseRealTime();
      for (int t = 1; t <= cores; ++t) row->Threads(t);
    }
  }
}

}  // namespace
}  // namespace tiermark

int main(int argc, char** argv) {
  return tiermark::run_benchmark_main(
      argc, argv, tiermark::register_all,
      {{"tiermark_isa", std::string(tiermark::isa_name(tiermark::best_isa()))},
       {"tiermark_byte_counting", "STREAM: read + written, no write-allocate; copy 16 B, triad 24 B per element"}});
}
