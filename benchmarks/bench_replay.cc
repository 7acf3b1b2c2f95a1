// bench_replay: generated traces replayed against every tiermark allocator on a simulated device.
//   replay/<workload>/<allocator>   one iteration replays the whole trace once on a fresh allocator
//   replay/<workload>/planner       the offline greedy-by-size plan of the trace (planned untimed,
//                                   once), replayed through PlannedAllocator: the practical oracle
//
// Per row: items_per_second (alloc + free events per second; nothing but the operations in the timed
// loop), then from a second, separate pass that times each operation with std::chrono::steady_clock
// (minus the measured cost of reading the clock) alloc_p50_ns, alloc_p99_ns, free_p50_ns and
// free_p99_ns, and from the allocator's stats after a full replay the metrics of shared/REFERENCE.md
// section 6: peak_requested_bytes, peak_reserved_bytes, efficiency, failed_requests. lower_bound_bytes
// is the trace's own peak of live requested bytes, the floor any allocator is measured against.
//
// Invariants of the replay: the trace is flattened before any timing into ReplayOps whose slots are
// dense indices into a vector<void*> (ids of any value are remapped, and a freed id's slot is reused,
// so the vector is as long as the peak number of live blocks); a free carries the size, alignment and
// stream of its allocation, as the allocator contract asks; a failed allocation is counted by the
// allocator, its free is skipped, and the row reports the failures instead of being dropped.
// Allocator construction, destruction and the release of blocks still live at the end of a trace are
// outside the timed region (PauseTiming). Nothing is asserted: the numbers are measured.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "allocators/allocator_types.h"
#include "allocators/offline_planner.h"
#include "allocators/registry.h"
#include "replay/flat_trace.h"
#include "replay/replay_loop.h"
#include "benchmarks/bench_main.h"

namespace tiermark {
namespace {

// An A100/H100-sized device (80 GiB), so that every workload here fits with room to spare and a
// failure says something about the allocator, not the device.
constexpr const char* kUpstreamSpec = "simulated:capacity=80GiB";

struct WorkloadSpec {
  const char* label;  // the row's <workload>: no regex metacharacters, so filters stay simple
  const char* spec;
};
// Small but representative: about 10^5 events each (the same configurations as bench_traces).
constexpr WorkloadSpec kWorkloads[] = {
    {"transformer-train", "transformer/cs336-2.7b:steps=2"},
    // The per-parameter AdamW loop: its peak (51 GiB) is what REFERENCE's real 2.7B runs imply.
    {"transformer-train-loop", "transformer/cs336-2.7b:steps=2,foreach=false"},
    {"transformer-inference", "transformer/cs336-2.7b:steps=2,mode=inference"},
    {"cnn-resnet50", "cnn/resnet50:batch=32,steps=2"},
    {"llm-serve-paged", "llm-serve/llama2-7b:requests=200,kv=paged"},
    {"llm-serve-exact", "llm-serve/llama2-7b:requests=200,kv=exact"},
};

// A generated workload flattened for replay (replay/flat_trace.h), with the offline planner's input
// and plan when the planner row asks for them.
struct Replay {
  FlatTrace trace;
  std::vector<PlannedBuffer> buffers;
  MemoryPlan plan;
};

// Generated on first use rather than at startup, once per process, so a filtered run (the smoke
// test, `--benchmark_filter=llm-serve`) only pays for the workloads it replays.
class WorkloadCache {
 public:
  explicit WorkloadCache(const char* spec) : spec_(spec) {}
  const Replay& get() {
    if (!replay_) replay_ = std::make_unique<Replay>(Replay{flatten_workload(spec_), {}, {}});
    return *replay_;
  }
  // The trace with its greedy-by-size plan, made on first use (untimed, outside every replay).
  const Replay& planned() {
    get();
    if (replay_->buffers.empty()) {
      replay_->buffers = planner_buffers(replay_->trace);
      replay_->plan = plan_greedy_by_size(replay_->buffers);
    }
    return *replay_;
  }

 private:
  std::string spec_;
  std::unique_ptr<Replay> replay_;
};

// A fresh allocator of type T on its own simulated device, for one replay.
template <class T>
struct DeviceFixture {
  std::unique_ptr<Upstream> upstream = make_upstream(kUpstreamSpec);
  T allocator{make_options(std::string(T::kName), T::kName, T::option_specs()), *upstream};
};

// The replay's plan served by PlannedAllocator on its own simulated device.
struct PlannerFixture {
  explicit PlannerFixture(const Replay& replay) : allocator(replay.plan, replay.buffers, *upstream) {}
  std::unique_ptr<Upstream> upstream = make_upstream(kUpstreamSpec);
  PlannedAllocator allocator;
};

using Clock = std::chrono::steady_clock;

std::int64_t elapsed_ns(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
}

// Nearest-rank percentile q in (0, 1]; reorders `samples`. 0 when there are none.
double percentile(std::vector<std::int64_t>& samples, double q) {
  if (samples.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(samples.size())));
  const auto nth = samples.begin() + static_cast<std::ptrdiff_t>(std::max<std::size_t>(rank, 1) - 1);
  std::nth_element(samples.begin(), nth, samples.end());
  return static_cast<double>(*nth);
}

struct Latencies {
  std::vector<std::int64_t> alloc_ns;
  std::vector<std::int64_t> free_ns;
};

// The latency pass: the same replay with each operation timed on its own. The memory clobbers keep
// the compiler from moving the operation's stores out of the timed region.
template <class A>
Latencies time_ops(A& allocator, const Replay& replay, std::vector<void*>& slots, std::int64_t overhead) {
  Latencies out;
  out.alloc_ns.reserve(replay.trace.allocs);
  out.free_ns.reserve(replay.trace.frees);
  for (const ReplayOp& op : replay.trace.ops) {
    if (op.kind == ReplayOpKind::kAlloc) {
      const Clock::time_point t0 = Clock::now();
      benchmark::ClobberMemory();
      void* p = allocator.allocate(op.size, op.alignment(), op.stream);
      benchmark::DoNotOptimize(std::as_const(p));  // const: see bench_allocators.cc pair_loop
      benchmark::ClobberMemory();
      const Clock::time_point t1 = Clock::now();
      slots[op.slot] = p;
      out.alloc_ns.push_back(std::max<std::int64_t>(elapsed_ns(t0, t1) - overhead, 0));
    } else if (void* p = slots[op.slot]; p != nullptr) {
      const Clock::time_point t0 = Clock::now();
      benchmark::ClobberMemory();
      allocator.deallocate(p, op.size, op.alignment(), op.stream);
      benchmark::ClobberMemory();
      const Clock::time_point t1 = Clock::now();
      out.free_ns.push_back(std::max<std::int64_t>(elapsed_ns(t0, t1) - overhead, 0));
    }
  }
  return out;
}

benchmark::Counter bytes_counter(std::uint64_t bytes) {
  return benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kDefaults,
                            benchmark::Counter::OneK::kIs1024);
}

// `get_replay()` returns the Replay (generating or planning it on first use); `make_fixture(replay)`
// returns a fresh fixture whose `allocator` member the rows replay.
template <class GetReplay, class MakeFixture>
void replay_benchmark(benchmark::State& state, GetReplay get_replay, MakeFixture make_fixture) {
  const Replay* replay = nullptr;
  try {
    replay = &get_replay();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    for (auto _ : state) {
    }
    return;
  }
  const FlatTrace& trace = replay->trace;
  std::vector<void*> slots(trace.slots, nullptr);

  // Throughput: whole-trace replays, each on a fresh allocator built and torn down untimed.
  for (auto _ : state) {
    state.PauseTiming();
    auto fixture = make_fixture(*replay);
    state.ResumeTiming();
    run_ops<Touch::kNone>(fixture->allocator, trace.ops.data(), trace.ops.data() + trace.ops.size(), slots.data());
    state.PauseTiming();
    release_leftovers(fixture->allocator, trace, slots.data());
    fixture.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(trace.ops.size()));

  // Latency and memory: one more replay, untimed by the framework, on its own fresh allocator.
  const auto overhead = static_cast<std::int64_t>(timer_overhead_ns());  // replay_runner.h
  auto fixture = make_fixture(*replay);
  Latencies latencies = time_ops(fixture->allocator, *replay, slots, overhead);
  const AllocatorStats s = fixture->allocator.stats();  // after the full trace, before leftovers go
  release_leftovers(fixture->allocator, trace, slots.data());

  state.counters["alloc_p50_ns"] = percentile(latencies.alloc_ns, 0.50);
  state.counters["alloc_p99_ns"] = percentile(latencies.alloc_ns, 0.99);
  state.counters["free_p50_ns"] = percentile(latencies.free_ns, 0.50);
  state.counters["free_p99_ns"] = percentile(latencies.free_ns, 0.99);
  state.counters["timer_overhead_ns"] = static_cast<double>(overhead);
  state.counters["lower_bound_bytes"] = bytes_counter(trace.peak_requested_bytes);
  state.counters["peak_requested_bytes"] = bytes_counter(s.requested_bytes.peak);
  if (s.reserved_known) {
    state.counters["peak_reserved_bytes"] = bytes_counter(s.reserved_bytes.peak);
    if (s.reserved_bytes.peak != 0) {
      state.counters["efficiency"] = double(s.requested_bytes.peak) / double(s.reserved_bytes.peak);
    }
  }
  state.counters["failed_requests"] = static_cast<double>(s.failed_requests);
  state.counters["upstream_allocs"] = static_cast<double>(s.upstream_allocs);
  // Reported, not hidden: the row keeps its numbers and says that they describe a partial replay.
  if (s.failed_requests != 0) state.SetLabel("FAILED " + std::to_string(s.failed_requests) + " requests");
}

void register_all() {
  for (const WorkloadSpec& w : kWorkloads) {
    auto workload = std::make_shared<WorkloadCache>(w.spec);
    benchmark::AddCustomContext(std::string("tiermark_workload.") + w.label, w.spec);
    AllAllocatorTypes::for_each([&]<class T>(std::type_identity<T>) {
      // `system` is the process's malloc: it ignores the upstream and would back every byte of an
      // 80 GiB device trace with real host memory, so it has no place on the simulated device.
      if constexpr (std::is_same_v<T, SystemAllocator>) return;
      const std::string name = std::string("replay/") + w.label + "/" + std::string(T::kName);
      benchmark::RegisterBenchmark(name.c_str(), [workload](benchmark::State& state) {
        replay_benchmark(
            state, [&]() -> const Replay& { return workload->get(); },
            [](const Replay&) { return std::make_unique<DeviceFixture<T>>(); });
      })->Unit(benchmark::kMillisecond);
    });
    benchmark::RegisterBenchmark((std::string("replay/") + w.label + "/planner").c_str(), [workload](benchmark::State& state) {
      replay_benchmark(
          state, [&]() -> const Replay& { return workload->planned(); },
          [](const Replay& replay) { return std::make_unique<PlannerFixture>(replay); });
    })->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace tiermark

int main(int argc, char** argv) {
  return tiermark::run_benchmark_main(argc, argv, tiermark::register_all, {{"tiermark_upstream", tiermark::kUpstreamSpec}});
}
