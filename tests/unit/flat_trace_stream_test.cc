// Streamed traces (replay/flat_trace.h): a trace over the in-memory budget is read again for each
// pass, a buffer at a time, and must replay exactly as the same trace held in memory.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "replay/flat_trace.h"
#include "replay/replay_runner.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

// About 43,000 events, streamed in buffers of kChunk ops: several buffers, the last one partial.
constexpr const char* kSpec = "transformer/gpt2-small:steps=20,b=1,s=64";
constexpr std::size_t kChunk = 10'000;

TraceEmitter emitter() {
  return [](TraceSink& sink) { generate_workload(kSpec, sink); };
}

bool same_op(const ReplayOp& a, const ReplayOp& b) {
  return a.size == b.size && a.slot == b.slot && a.stream == b.stream && a.tag == b.tag && a.thread == b.thread &&
         a.align_log2 == b.align_log2 && a.kind == b.kind;
}

TEST(FlatTraceStream, OverBudgetTraceIsStreamedWithTheSameFacts) {
  const FlatTrace held = flatten_emitted(emitter(), kSpec, UINT64_MAX);
  const FlatTrace streamed = flatten_emitted(emitter(), kSpec, 1000, kChunk);
  ASSERT_FALSE(held.streamed());
  ASSERT_TRUE(streamed.streamed());
  EXPECT_TRUE(streamed.ops.empty());
  ASSERT_GT(held.events, 3 * kChunk);  // several buffers
  EXPECT_EQ(held.ops.size(), held.events);
  EXPECT_EQ(streamed.events, held.events);
  EXPECT_EQ(streamed.peak_requested_bytes, held.peak_requested_bytes);
  EXPECT_EQ(streamed.peak_op, held.peak_op);
  EXPECT_EQ(streamed.slots, held.slots);
  EXPECT_EQ(streamed.counters.size(), held.counters.size());
  EXPECT_EQ(streamed.leftovers.size(), held.leftovers.size());
  EXPECT_TRUE(planner_buffers(streamed).empty() || !streamed.streamed());
}

TEST(FlatTraceStream, ChunksReproduceEveryOpInOrder) {
  const FlatTrace held = flatten_emitted(emitter(), kSpec, UINT64_MAX);
  const FlatTrace streamed = flatten_emitted(emitter(), kSpec, 1000, kChunk);
  std::uint64_t next = 0, chunks = 0, mismatches = 0;
  for_each_chunk(streamed, [&](std::span<const ReplayOp> ops, std::uint64_t first) {
    EXPECT_EQ(first, next);
    EXPECT_LE(ops.size(), kChunk);
    for (std::size_t k = 0; k < ops.size(); ++k) mismatches += same_op(ops[k], held.ops[first + k]) ? 0 : 1;
    next += ops.size();
    ++chunks;
    return true;
  });
  EXPECT_EQ(next, held.events);
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(chunks, (held.events + kChunk - 1) / kChunk);
  EXPECT_NE(held.events % kChunk, 0u);  // a partial last buffer was exercised
}

TEST(FlatTraceStream, ACallbackStopsTheReadingEarly) {
  const FlatTrace streamed = flatten_emitted(emitter(), kSpec, 1000, kChunk);
  int calls = 0;
  for_each_chunk(streamed, [&](std::span<const ReplayOp>, std::uint64_t) { return ++calls < 1; });
  EXPECT_EQ(calls, 1);
}

TEST(FlatTraceStream, ReplaysMeasureTheSameMemoryAsTheTraceInMemory) {
  const FlatTrace held = flatten_emitted(emitter(), kSpec, UINT64_MAX);
  const FlatTrace streamed = flatten_emitted(emitter(), kSpec, 1000, kChunk);
  ReplaySettings settings;
  settings.upstream_spec = "simulated:capacity=80GiB";
  for (const char* spec : {"caching.pytorch", "buddy", "caching.vmm"}) {
    SCOPED_TRACE(spec);
    auto a = make_runner(spec, held, settings);
    auto b = make_runner(spec, streamed, settings);
    const MemoryObservation ma = a->observe_memory(), mb = b->observe_memory();
    EXPECT_EQ(ma.at_peak.reserved_bytes.current, mb.at_peak.reserved_bytes.current);
    EXPECT_EQ(ma.unreturnable_bytes_at_peak, mb.unreturnable_bytes_at_peak);
    ASSERT_EQ(ma.timeline.size(), mb.timeline.size());
    for (std::size_t i = 0; i < ma.timeline.size(); ++i) {
      EXPECT_EQ(ma.timeline[i].reserved_bytes, mb.timeline[i].reserved_bytes) << i;
    }
    const RepetitionResult ra = a->repetition(true), rb = b->repetition(true);
    EXPECT_EQ(ra.stats.reserved_bytes.peak, rb.stats.reserved_bytes.peak);
    EXPECT_EQ(ra.stats.allocs, rb.stats.allocs);
    EXPECT_EQ(ra.alloc_ns.count(), rb.alloc_ns.count());
    EXPECT_EQ(rb.alloc_ns.count(), held.allocs);
  }
}

}  // namespace
}  // namespace tiermark
