// Multi-thread replay (replay/threaded_replay.h): per-thread streams, each op's turn on its slot, and
// replays whose every allocation is freed exactly once however the threads interleave.
#include <gtest/gtest.h>

#include <random>

#include "common/input_error.h"
#include "replay/replay_runner.h"
#include "replay/threaded_replay.h"
#include "workloads/trace_recorder.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

// Random churn on `threads` trace threads, half the frees on another thread than the alloc's.
FlatTrace churn(std::uint32_t threads, std::size_t events, std::uint32_t seed) {
  TraceRecorder recorder;
  TraceMetadata metadata;
  TagTable tags;
  recorder.begin(metadata, tags);
  std::mt19937 random(seed);
  std::vector<SlotId> live;
  SlotId next = 1;
  for (std::size_t i = 0; i < events; ++i) {
    const auto thread = static_cast<ThreadId>(random() % threads);
    if (!live.empty() && random() % 2 == 0) {
      const std::size_t j = random() % live.size();
      TraceEvent e;
      e.kind = EventKind::kFree;
      e.id = live[j];
      e.thread = thread;
      recorder.event(e);
      live[j] = live.back();
      live.pop_back();
    } else {
      TraceEvent e;
      e.kind = EventKind::kAlloc;
      e.id = next;
      e.size = std::size_t{64} << (random() % 12);
      e.thread = thread;
      recorder.event(e);
      live.push_back(next++);
    }
  }
  recorder.end();
  RecordedTraceSource source(recorder, "churn");
  return flatten_trace(source);
}

TEST(ThreadedReplay, SplitKeepsEachThreadsOpsInOrderWithTheirTurns) {
  const FlatTrace trace = churn(3, 5000, 1);
  const std::vector<ThreadOps> streams = split_by_thread(trace, 2);  // trace threads 0 and 2 share stream 0
  std::size_t total = 0;
  for (const ThreadOps& s : streams) total += s.ops.size();
  EXPECT_EQ(total, trace.events);
  // Turns count the earlier ops on the same slot, in trace order.
  std::vector<std::uint32_t> seen(trace.slots, 0);
  std::vector<std::size_t> cursor(2, 0);
  for (const ReplayOp& op : trace.ops) {
    const ThreadOps& s = streams[op.thread % 2];
    const std::size_t i = cursor[op.thread % 2]++;
    ASSERT_EQ(s.ops[i].slot, op.slot);
    ASSERT_EQ(s.turns[i], seen[op.slot]++);
  }
}

TEST(ThreadedReplay, EveryBlockIsFreedOnceWhateverTheInterleaving) {
  const FlatTrace trace = churn(4, 40'000, 7);
  for (const std::size_t threads : {2u, 4u, 8u}) {
    for (const char* spec : {"caching.pytorch", "buddy", "pool.coalescing", "caching.vmm"}) {
      SCOPED_TRACE(std::string(spec) + " threads " + std::to_string(threads));
      ReplaySettings settings;
      settings.upstream_spec = "simulated:capacity=64GiB";
      settings.threads = threads;
      auto runner = make_runner(spec, trace, settings);
      const RepetitionResult r = runner->repetition(true);
      EXPECT_EQ(r.stats.failed_requests, 0u);
      EXPECT_EQ(r.stats.allocs, trace.allocs);
      EXPECT_EQ(r.stats.frees, trace.frees);  // leftovers are released after the stats are taken
      EXPECT_EQ(r.stats.requested_bytes.current, trace.end_live_bytes);
      EXPECT_EQ(r.alloc_ns.count(), trace.allocs);
      EXPECT_EQ(r.free_ns.count(), trace.frees);
      EXPECT_GT(r.ops_per_second, 0);
    }
  }
}

TEST(ThreadedReplay, ThePlannerAndStreamedTracesRefuseThreads) {
  const FlatTrace trace = churn(2, 1000, 3);
  ReplaySettings settings;
  settings.upstream_spec = "simulated:capacity=1GiB";
  settings.threads = 2;
  const std::vector<PlannedBuffer> buffers = planner_buffers(trace);
  const MemoryPlan plan = plan_greedy_by_size(buffers);
  EXPECT_THROW(make_planner_runner(trace, buffers, plan, settings), InputError);
  const FlatTrace streamed = flatten_emitted(
      [](TraceSink& sink) { generate_workload("transformer/gpt2-small:steps=1,b=1,s=64", sink); }, "gpt2", 100, 1000);
  ASSERT_TRUE(streamed.streamed());
  EXPECT_THROW(make_runner("caching.pytorch", streamed, settings), InputError);
}

}  // namespace
}  // namespace tiermark
