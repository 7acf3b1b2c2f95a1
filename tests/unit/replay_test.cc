// The replay engine against traces small enough to work out by hand: FlatTrace's facts (slots, peak,
// leftovers, counters, tags, planner lifetimes), what AllocatorRunner's memory and throughput passes
// measure for allocators whose rounding rules are simple (buddy, pool.fixed, pool.sizeclass,
// pool.coalescing, caching.pytorch), the JSON made from them (harness/replay_results.h), and the
// LatencyHistogram's bucket layout and accuracy. Every expected number is derived in a comment.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "harness/replay_results.h"
#include "harness/trace_files.h"
#include "replay/flat_trace.h"
#include "replay/latency_histogram.h"
#include "replay/replay_runner.h"
#include "workloads/trace_recorder.h"

namespace tiermark {
namespace {

using json = nlohmann::ordered_json;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * 1024;

TraceEvent alloc(SlotId id, std::uint64_t size, TagId tag = kNoTag) {
  TraceEvent e;
  e.kind = EventKind::kAlloc;
  e.id = id;
  e.size = size;
  e.tag = tag;
  return e;
}

TraceEvent free_of(SlotId id) {
  TraceEvent e;
  e.kind = EventKind::kFree;
  e.id = id;
  e.size = 0;  // implied: the allocation's size
  return e;
}

TraceEvent counter(TagId tag, std::uint64_t value) {
  TraceEvent e;
  e.kind = EventKind::kCounter;
  e.tag = tag;
  e.size = value;
  return e;
}

// A hand-made trace through the same path a file takes: RecordedTraceSource -> flatten_trace (which
// validates it).
FlatTrace flat(std::vector<TraceEvent> events, std::vector<std::string> tags = {""}, TraceMetadata metadata = {}) {
  const TraceRecorder recorder(std::move(metadata), std::move(tags), std::move(events));
  RecordedTraceSource source(recorder, "hand-made");
  return flatten_trace(source);
}

TraceMetadata ends_empty_false() {
  TraceMetadata m;
  m.set("ends_empty", "false");
  return m;
}

ReplaySettings settings_every_op() {
  ReplaySettings s;
  s.upstream_spec = "simulated:capacity=1GiB";
  s.sample_every = 1;
  return s;
}

// ---------------------------------------------------------------------------------------------
// FlatTrace

// Tags: 1 "w", 2 "act", 3 "c" (a counter).
//   op 0 alloc 10 100 w    slot 0   live 100
//   (counter c = 5, before op 1)
//   op 1 alloc 20 200 act  slot 1   live 300
//   op 2 free 10           slot 0 free -> live 200
//   op 3 alloc 30 300 act  slot 0 (reused)  live 500
//   op 4 alloc 40 50 w     slot 2   live 550   <- peak, first reached here
//   op 5 free 20           slot 1 free -> live 350
//   op 6 alloc 50 150 ""   slot 1 (reused)  live 500
//   op 7 alloc 60 50 w     slot 3   live 550   (ties the peak: peak_op stays 4)
//   (counter c = 7, after the last op)
FlatTrace sample_trace() {
  return flat({alloc(10, 100, 1), counter(3, 5), alloc(20, 200, 2), free_of(10), alloc(30, 300, 2), alloc(40, 50, 1),
               free_of(20), alloc(50, 150), alloc(60, 50, 1), counter(3, 7)},
              {"", "w", "act", "c"});
}

TEST(FlatTrace, CountsSlotsAndReusesFreedSlots) {
  const FlatTrace t = sample_trace();
  EXPECT_EQ(t.name, "hand-made");
  ASSERT_EQ(t.ops.size(), 8u);
  EXPECT_EQ(t.allocs, 6u);
  EXPECT_EQ(t.frees, 2u);
  EXPECT_EQ(t.threads, 1u);
  EXPECT_EQ(t.slots, 4u);  // at most 4 blocks live at once (after op 7)
  const std::vector<std::uint32_t> slots = {0, 1, 0, 0, 2, 1, 1, 3};
  const std::vector<ReplayOpKind> kinds = {ReplayOpKind::kAlloc, ReplayOpKind::kAlloc, ReplayOpKind::kFree,
                                           ReplayOpKind::kAlloc, ReplayOpKind::kAlloc, ReplayOpKind::kFree,
                                           ReplayOpKind::kAlloc, ReplayOpKind::kAlloc};
  for (std::size_t i = 0; i < t.ops.size(); ++i) {
    EXPECT_EQ(t.ops[i].slot, slots[i]) << "op " << i;
    EXPECT_EQ(t.ops[i].kind, kinds[i]) << "op " << i;
    EXPECT_EQ(t.ops[i].alignment(), 16u) << "op " << i;
  }
  // A free carries its allocation's size and tag.
  EXPECT_EQ(t.ops[2].size, 100u);
  EXPECT_EQ(t.ops[2].tag, 1u);
  EXPECT_EQ(t.ops[5].size, 200u);
  EXPECT_EQ(t.ops[5].tag, 2u);
}

TEST(FlatTrace, PeakIsFirstReachAndEndLiveBytesAreLeftovers) {
  const FlatTrace t = sample_trace();
  EXPECT_EQ(t.peak_requested_bytes, 550u);
  EXPECT_EQ(t.peak_op, 4u);
  EXPECT_EQ(t.end_live_bytes, 550u);  // 300 + 50 + 150 + 50
  ASSERT_EQ(t.leftovers.size(), 4u);
  // In slot order: slot 0 = id 30 (300, act), slot 1 = id 50 (150, ""), slot 2 = id 40 (50, w), slot 3 = id 60.
  const std::vector<std::uint64_t> sizes = {300, 150, 50, 50};
  const std::vector<TagId> tags = {2, 0, 1, 1};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(t.leftovers[i].slot, i);
    EXPECT_EQ(t.leftovers[i].kind, ReplayOpKind::kFree);
    EXPECT_EQ(t.leftovers[i].size, sizes[i]);
    EXPECT_EQ(t.leftovers[i].tag, tags[i]);
  }
  EXPECT_TRUE(t.meant_to_end_empty());  // no metadata says otherwise
}

TEST(FlatTrace, CountersKeepTheOpIndexTheyPrecede) {
  const FlatTrace t = sample_trace();
  ASSERT_EQ(t.counters.size(), 2u);
  EXPECT_EQ(t.counters[0].op_index, 1u);  // before op 1 (the alloc of id 20)
  EXPECT_EQ(t.counters[0].tag, 3u);
  EXPECT_EQ(t.counters[0].value, 5u);
  EXPECT_EQ(t.counters[1].op_index, 8u);  // == ops.size(): after the last op
  EXPECT_EQ(t.counters[1].value, 7u);
  EXPECT_EQ(t.counter_tag("c"), 3u);
  EXPECT_EQ(t.counter_tag("absent"), kNoTag);
  EXPECT_EQ(t.counter_tag(""), kNoTag);
}

TEST(FlatTrace, LiveByTagAtPeakAndLeftoversByTag) {
  const FlatTrace t = sample_trace();
  // Just after op 4: act = id 20 (200) + id 30 (300) = 500 in 2 blocks; w = id 40 (50).
  const std::vector<TagBytes> at_peak = live_by_tag_after(t, t.peak_op, 10);
  ASSERT_EQ(at_peak.size(), 2u);
  EXPECT_EQ(at_peak[0].tag, "act");
  EXPECT_EQ(at_peak[0].bytes, 500u);
  EXPECT_EQ(at_peak[0].blocks, 2u);
  EXPECT_EQ(at_peak[1].tag, "w");
  EXPECT_EQ(at_peak[1].bytes, 50u);
  EXPECT_EQ(at_peak[1].blocks, 1u);
  ASSERT_EQ(live_by_tag_after(t, t.peak_op, 1).size(), 1u);
  // Just after op 2: act 200; w had 100 and freed it, so it is absent.
  const std::vector<TagBytes> early = live_by_tag_after(t, 2, 10);
  ASSERT_EQ(early.size(), 1u);
  EXPECT_EQ(early[0].tag, "act");
  EXPECT_EQ(early[0].bytes, 200u);

  // Leftovers: act 300 (1), "" 150 (1), w 100 (2).
  const std::vector<TagBytes> leaks = leftovers_by_tag(t, 10);
  ASSERT_EQ(leaks.size(), 3u);
  EXPECT_EQ(leaks[0].tag, "act");
  EXPECT_EQ(leaks[0].bytes, 300u);
  EXPECT_EQ(leaks[1].tag, "");
  EXPECT_EQ(leaks[1].bytes, 150u);
  EXPECT_EQ(leaks[2].tag, "w");
  EXPECT_EQ(leaks[2].bytes, 100u);
  EXPECT_EQ(leaks[2].blocks, 2u);
}

TEST(FlatTrace, PlannerBuffersLiveFromAllocToFreeOrToTheEnd) {
  const FlatTrace t = sample_trace();
  const std::vector<PlannedBuffer> b = planner_buffers(t);
  ASSERT_EQ(b.size(), 6u);
  const std::vector<std::uint64_t> size = {100, 200, 300, 50, 150, 50};
  const std::vector<std::uint64_t> first = {0, 1, 3, 4, 6, 7};
  const std::vector<std::uint64_t> last = {2, 5, 8, 8, 8, 8};  // never freed: ops.size()
  for (std::size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(b[i].size, size[i]) << i;
    EXPECT_EQ(b[i].alignment, 16u) << i;
    EXPECT_EQ(b[i].first_use, first[i]) << i;
    EXPECT_EQ(b[i].last_use, last[i]) << i;
  }
}

TEST(FlatTrace, WorkloadJsonAndLeaksFollowEndsEmpty) {
  const FlatTrace leaking = sample_trace();
  const json w = workload_json(leaking, "trace", std::uint64_t{600}, 0.5);
  EXPECT_EQ(w["name"], "hand-made");
  EXPECT_EQ(w["source"], "trace");
  EXPECT_EQ(w["events"], 8);
  EXPECT_EQ(w["allocs"], 6);
  EXPECT_EQ(w["frees"], 2);
  EXPECT_EQ(w["lower_bound_bytes"], 550);
  EXPECT_EQ(w["peak_op"], 4);
  EXPECT_EQ(w["planner_bytes"], 600);
  EXPECT_EQ(w["end_live_bytes"], 550);
  EXPECT_EQ(w["meant_to_end_empty"], true);
  ASSERT_EQ(w["top_consumers"].size(), 2u);
  EXPECT_EQ(w["top_consumers"][0]["tag"], "act");
  EXPECT_EQ(w["top_consumers"][0]["bytes"], 500);
  ASSERT_EQ(w["leaks"].size(), 3u);
  EXPECT_EQ(w["leaks"][2]["tag"], "w");
  EXPECT_EQ(w["leaks"][2]["blocks"], 2);

  const FlatTrace kept = flat({alloc(1, 64, 1)}, {"", "weights"}, ends_empty_false());
  EXPECT_FALSE(kept.meant_to_end_empty());
  const json k = workload_json(kept, "trace", std::nullopt, 0);
  EXPECT_TRUE(k["planner_bytes"].is_null());
  EXPECT_EQ(k["meant_to_end_empty"], false);
  EXPECT_TRUE(k["leaks"].empty());
  EXPECT_EQ(k["metadata"]["ends_empty"], "false");
}

TEST(FlatTrace, FromACsvFileAsReplayReadsIt) {
  // The sample trace again, as CSV text through TraceFile: same ops, counters, tags and facts.
  const std::string path = ::testing::TempDir() + "/replay_test." + std::to_string(::getpid()) + ".csv";
  {
    std::ofstream out(path);
    out << "#meta ends_empty=false\n"
           "op,id,size,align,stream,thread,tag\n"
           "alloc,10,100,,,,w\n"
           "counter,,5,,,,c\n"
           "alloc,20,200,,,,act\n"
           "free,10,,,,,\n"
           "phase,,,,,,middle\n"
           "alloc,30,300,,,,act\n"
           "alloc,40,50,4096,,,w\n"
           "free,20,,,,,\n"
           "alloc,50,150,,,,\n"
           "alloc,60,50,,,,w\n"
           "counter,,7,,,,c\n";
  }
  TraceFile file(path);
  const FlatTrace t = flatten_trace(file.source());
  std::remove(path.c_str());
  EXPECT_EQ(t.ops.size(), 8u);
  EXPECT_EQ(t.slots, 4u);
  EXPECT_EQ(t.peak_requested_bytes, 550u);
  EXPECT_EQ(t.peak_op, 4u);
  EXPECT_EQ(t.end_live_bytes, 550u);
  EXPECT_EQ(t.ops[4].alignment(), 4096u);
  EXPECT_FALSE(t.meant_to_end_empty());
  ASSERT_EQ(t.counters.size(), 2u);
  EXPECT_EQ(t.counters[0].op_index, 1u);
  EXPECT_EQ(t.counters[1].op_index, 8u);
  EXPECT_EQ(t.counters[0].tag, t.counter_tag("c"));
  const std::vector<TagBytes> at_peak = live_by_tag_after(t, t.peak_op, 10);
  ASSERT_EQ(at_peak.size(), 2u);
  EXPECT_EQ(at_peak[0].tag, "act");
  EXPECT_EQ(at_peak[0].bytes, 500u);
  // Not meant to end empty: no leaks in the workload record, and leaked_bytes 0 for every row.
  EXPECT_TRUE(workload_json(t, "trace", std::nullopt, 0)["leaks"].empty());
}

// ---------------------------------------------------------------------------------------------
// AllocatorRunner: memory and throughput passes

TEST(ReplayRunner, BuddyRoundsToPowersOfTwoInSmallArenas) {
  // min_block 512, arena 4 KiB, no cache:
  //   1000 -> 1 KiB block in arena 1 (4 KiB; split 4K -> 2K+2K -> 1K+1K), free there: 1K + 2K
  //   3000 -> 4 KiB block: arena 1 cannot serve it -> arena 2 (4 KiB)
  //    600 -> 1 KiB: arena 1's free 1 KiB buddy
  //   5000 -> 8 KiB: above the arena, a dedicated 8 KiB arena
  // Peak requested 9600; allocated 1K + 4K + 1K + 8K = 14336; reserved 4K + 4K + 8K = 16384;
  // free 2048 = one 2 KiB block in arena 1, so no external fragmentation.
  const FlatTrace t = flat({alloc(1, 1000), alloc(2, 3000), alloc(3, 600), alloc(4, 5000), free_of(1), free_of(2),
                            free_of(3), free_of(4)});
  auto runner = make_runner("buddy:min_block=512,arena=4KiB,cache=0", t, settings_every_op());
  EXPECT_EQ(runner->name(), "buddy");
  const MemoryObservation m = runner->observe_memory();
  EXPECT_EQ(m.at_peak.requested_bytes.current, 9600u);
  EXPECT_EQ(m.at_peak.allocated_bytes.current, 14336u);
  EXPECT_EQ(m.at_peak.reserved_bytes.current, 16384u);
  EXPECT_EQ(m.at_peak.free_bytes, 2048u);
  EXPECT_EQ(m.at_peak.largest_free_block, 2048u);
  EXPECT_EQ(m.timeline.size(), 8u);  // sample_every = 1

  const RepetitionResult r = runner->repetition(false);
  EXPECT_EQ(r.stats.requested_bytes.peak, 9600u);
  EXPECT_EQ(r.stats.allocated_bytes.peak, 14336u);
  EXPECT_EQ(r.stats.reserved_bytes.peak, 16384u);
  EXPECT_EQ(r.stats.failed_requests, 0u);
  EXPECT_FALSE(r.latency_measured);
  const json metrics = repetition_metrics(r);
  EXPECT_DOUBLE_EQ(metrics["efficiency"].get<double>(), 9600.0 / 16384.0);
  EXPECT_EQ(metrics["peak_reserved_bytes"], 16384);
  EXPECT_FALSE(metrics.contains("latency_ns"));

  json all = metrics;
  add_memory_metrics(all, m, t, std::nullopt);
  EXPECT_DOUBLE_EQ(all["internal_fragmentation_at_peak"].get<double>(), 1.0 - 9600.0 / 14336.0);
  EXPECT_EQ(all["reserved_bytes_at_peak"], 16384);
  EXPECT_DOUBLE_EQ(all["external_fragmentation_at_peak"].get<double>(), 0.0);
  EXPECT_EQ(all["leaked_bytes"], 0);
  EXPECT_EQ(all["lower_bound_bytes"], 9600);
}

TEST(ReplayRunner, BuddyExternalFragmentationOfAlternateFreeBlocks) {
  // min_block 1 KiB, arena 4 KiB, no cache: A B C D of 1 KiB tile the arena; free B and D:
  // free = 2 KiB, largest free block 1 KiB (B's and D's buddies, A and C, are live) -> (2K - 1K) / 2K.
  const FlatTrace t = flat({alloc(1, 1024), alloc(2, 1024), alloc(3, 1024), alloc(4, 1024), free_of(2), free_of(4)},
                           {""}, ends_empty_false());
  auto runner = make_runner("buddy:min_block=1KiB,arena=4KiB,cache=0", t, settings_every_op());
  const MemoryObservation m = runner->observe_memory();
  ASSERT_EQ(m.timeline.size(), 6u);
  EXPECT_DOUBLE_EQ(m.timeline[4].external_fragmentation, 0.0);  // only B free
  EXPECT_DOUBLE_EQ(m.timeline[5].external_fragmentation, 0.5);
  EXPECT_DOUBLE_EQ(m.max_external_fragmentation, 0.5);
  EXPECT_EQ(m.max_external_fragmentation_op, 5u);
  EXPECT_DOUBLE_EQ(m.at_peak.external_fragmentation(), 0.0);  // at the peak the arena is full
}

TEST(ReplayRunner, CoalescingPoolExternalFragmentation) {
  // initial chunk 1 MiB, granularity 64: A 128K, B 256K, C 128K, D 512K fill it exactly.
  //   free B: free 256K, largest 256K -> 0
  //   free D: free 768K, largest 512K -> 256/768 = 1/3
  //   free A: A merges with B (384K); free 896K, largest 512K -> 384/896 = 3/7
  //   free C: one free 1 MiB block -> 0 (the floor chunk stays: release applies to other chunks)
  const FlatTrace t = flat({alloc(1, 128 * kKiB), alloc(2, 256 * kKiB), alloc(3, 128 * kKiB), alloc(4, 512 * kKiB),
                            free_of(2), free_of(4), free_of(1), free_of(3)});
  auto runner = make_runner("pool.coalescing:initial=1MiB", t, settings_every_op());
  const MemoryObservation m = runner->observe_memory();
  ASSERT_EQ(m.timeline.size(), 8u);
  EXPECT_EQ(m.at_peak.reserved_bytes.current, kMiB);
  EXPECT_EQ(m.at_peak.allocated_bytes.current, kMiB);
  EXPECT_DOUBLE_EQ(m.timeline[4].external_fragmentation, 0.0);
  EXPECT_DOUBLE_EQ(m.timeline[5].external_fragmentation, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.timeline[6].external_fragmentation, 3.0 / 7.0);
  EXPECT_DOUBLE_EQ(m.timeline[7].external_fragmentation, 0.0);
  EXPECT_DOUBLE_EQ(m.max_external_fragmentation, 3.0 / 7.0);
  EXPECT_EQ(m.max_external_fragmentation_op, 6u);
  EXPECT_EQ(m.timeline[7].reserved_bytes, kMiB);
  json metrics;
  add_memory_metrics(metrics, m, t, std::nullopt);
  EXPECT_DOUBLE_EQ(metrics["external_fragmentation_max"].get<double>(), 3.0 / 7.0);
  EXPECT_DOUBLE_EQ(metrics["external_fragmentation_at_peak"].get<double>(), 0.0);
  EXPECT_EQ(metrics["unreturnable_bytes_at_peak"], 0);  // nothing is free at the peak
}

TEST(ReplayRunner, FixedPoolReservesWholeChunksAndCountsOversizeRequests) {
  // block 1 KiB, 4 blocks per chunk (4 KiB): five 100-byte blocks take two chunks; a 2000-byte request
  // is larger than a block: a counted failure, its free skipped.
  const FlatTrace t = flat({alloc(1, 100), alloc(2, 100), alloc(3, 100), alloc(4, 100), alloc(5, 100), alloc(6, 2000),
                            free_of(6), free_of(1), free_of(2), free_of(3), free_of(4), free_of(5)});
  auto runner = make_runner("pool.fixed:block_size=1KiB,blocks_per_chunk=4", t, settings_every_op());
  const RepetitionResult r = runner->repetition(false);
  EXPECT_EQ(r.stats.failed_requests, 1u);
  EXPECT_EQ(r.stats.requested_bytes.peak, 500u);
  EXPECT_EQ(r.stats.allocated_bytes.peak, 5 * kKiB);
  EXPECT_EQ(r.stats.reserved_bytes.peak, 8 * kKiB);
  EXPECT_EQ(r.upstream.allocs, 2u);
  const json metrics = repetition_metrics(r);
  EXPECT_EQ(metrics["oom_count"], 1);
  EXPECT_DOUBLE_EQ(metrics["efficiency"].get<double>(), 500.0 / 8192.0);

  // The trace's peak (op 5, 2500 requested) is the failed request: the allocator holds 500 B then.
  const MemoryObservation m = runner->observe_memory();
  EXPECT_EQ(t.peak_op, 5u);
  EXPECT_EQ(m.at_peak.requested_bytes.current, 500u);
  EXPECT_EQ(m.at_peak.reserved_bytes.current, 8 * kKiB);
  // Chunks with live blocks cannot go back: 8 KiB reserved - 5 KiB allocated.
  EXPECT_EQ(m.unreturnable_bytes_at_peak, 3 * kKiB);
}

TEST(ReplayRunner, SizeClassPoolChunksPerClass) {
  // chunk 1 KiB: class 112 (for 100 B) has max(2, 1024 / 112) = 9 blocks = 1008 B per chunk; class 32
  // (for 20 B) has 32 blocks = 1024 B per chunk. Ten 100 B blocks -> 2 chunks of class 112 (2016 B);
  // one 20 B block -> 1 chunk of class 32. Reserved 3040, allocated 10 x 112 + 32 = 1152, requested 1020.
  std::vector<TraceEvent> events;
  for (SlotId id = 0; id < 10; ++id) events.push_back(alloc(id, 100));
  events.push_back(alloc(10, 20));
  for (SlotId id = 0; id <= 10; ++id) events.push_back(free_of(id));
  const FlatTrace t = flat(events);
  auto runner = make_runner("pool.sizeclass:chunk=1KiB", t, settings_every_op());
  const RepetitionResult r = runner->repetition(false);
  EXPECT_EQ(r.stats.requested_bytes.peak, 1020u);
  EXPECT_EQ(r.stats.allocated_bytes.peak, 1152u);
  EXPECT_EQ(r.stats.reserved_bytes.peak, 3040u);
  EXPECT_EQ(r.upstream.allocs, 3u);
  const MemoryObservation m = runner->observe_memory();
  EXPECT_EQ(m.at_peak.allocated_bytes.current, 1152u);
  // At the peak: 8 free blocks of class 112 and 31 of class 32: free 3040 - 1152 = 1888, largest 112.
  EXPECT_EQ(m.at_peak.free_bytes, 1888u);
  EXPECT_EQ(m.at_peak.largest_free_block, 112u);
  EXPECT_EQ(m.unreturnable_bytes_at_peak, 1888u);
}

TEST(ReplayRunner, PytorchSegmentThatCannotGoBackAtThePeak) {
  // Large pool, 20 MiB segments below 10 MiB requests; the remainder of a split is > 1 MiB, so it splits.
  //   op 0 A 3 MiB: new 20 MiB segment: [A 3][free 17]
  //   op 1 B 3 MiB: best fit 17 -> [A 3][B 3][free 14]
  //   op 2 free A:  [free 3][B 3][free 14]      (A's neighbour B is live: no merge)
  //   op 3 C 4 MiB: best fit is the 14 MiB block (3 is too small) -> [free 3][B 3][C 4][free 10]
  //                 requested 7 MiB: the peak
  // trim() at the peak returns nothing (the only segment has live blocks): unreturnable = 20 - 7 = 13 MiB;
  // external fragmentation at the peak = (13 - 10) / 13.
  const FlatTrace t = flat({alloc(1, 3 * kMiB), alloc(2, 3 * kMiB), free_of(1), alloc(3, 4 * kMiB), free_of(2), free_of(3)});
  EXPECT_EQ(t.peak_op, 3u);
  auto runner = make_runner("caching.pytorch", t, settings_every_op());
  const MemoryObservation m = runner->observe_memory();
  EXPECT_EQ(m.at_peak.reserved_bytes.current, 20 * kMiB);
  EXPECT_EQ(m.at_peak.allocated_bytes.current, 7 * kMiB);
  EXPECT_EQ(m.at_peak.largest_free_block, 10 * kMiB);
  EXPECT_EQ(m.unreturnable_bytes_at_peak, 13 * kMiB);
  json metrics;
  add_memory_metrics(metrics, m, t, std::nullopt);
  EXPECT_EQ(metrics["unreturnable_bytes_at_peak"], 13 * kMiB);
  EXPECT_DOUBLE_EQ(metrics["external_fragmentation_at_peak"].get<double>(), 3.0 / 13.0);
  EXPECT_EQ(metrics["requested_bytes_at_peak"], 7 * kMiB);
  EXPECT_EQ(metrics["leaked_bytes"], 0);
}

TEST(ReplayRunner, LeakedBytesFollowEndsEmpty) {
  const std::vector<TraceEvent> events = {alloc(1, 1000, 1), alloc(2, 24, 2), free_of(2)};
  const FlatTrace leaking = flat(events, {"", "w", "tmp"});
  auto runner = make_runner("pool.coalescing:initial=64KiB", leaking, settings_every_op());
  json metrics;
  add_memory_metrics(metrics, runner->observe_memory(), leaking, std::nullopt);
  EXPECT_EQ(metrics["leaked_bytes"], 1000);  // no metadata: meant to end empty, 1000 B still live
  runner->repetition(false);                 // leftovers are released after each pass: runs again cleanly
  runner->repetition(false);

  const FlatTrace kept = flat(events, {"", "w", "tmp"}, ends_empty_false());
  auto kept_runner = make_runner("pool.coalescing:initial=64KiB", kept, settings_every_op());
  json kept_metrics;
  add_memory_metrics(kept_metrics, kept_runner->observe_memory(), kept, std::nullopt);
  EXPECT_EQ(kept_metrics["leaked_bytes"], 0);
}

TEST(ReplayRunner, KvUtilisationIsTimeWeighted) {
  // Tags: 1 weights, 2 kv, 3 kv.token_bytes, 4 kv.committed_bytes, 5 sim.step_ns. Pool: one 1 MiB chunk.
  //   op 0 alloc 1000 (weights); op 1 alloc 4000 (kv)
  //   step 1 (before op 2): token 1000, committed 4000, dt 10; requested 5000, non-KV 1000
  //   op 2 alloc 4000 (kv)
  //   step 2 (after the end): token 3000, committed 8000, dt 30; requested 9000, non-KV 1000
  // kv_utilisation = (1000*10 + 3000*30) / (4000*10 + 8000*30) = 100000 / 280000 = 5/14
  // of reserved: reserved - non-KV = 1 MiB - 1000 in both steps -> 100000 / ((1 MiB - 1000) * 40)
  const FlatTrace t = flat({alloc(1, 1000, 1), alloc(2, 4000, 2), counter(3, 1000), counter(4, 4000), counter(5, 10),
                            alloc(3, 4000, 2), counter(3, 3000), counter(4, 8000), counter(5, 30)},
                           {"", "weights", "kv", "kv.token_bytes", "kv.committed_bytes", "sim.step_ns"},
                           ends_empty_false());
  auto runner = make_runner("pool.coalescing:initial=1MiB", t, settings_every_op());
  const MemoryObservation m = runner->observe_memory();
  EXPECT_TRUE(m.kv_counters);
  EXPECT_DOUBLE_EQ(m.kv_token_time, 100000.0);
  EXPECT_DOUBLE_EQ(m.kv_committed_time, 280000.0);
  const double reserved_minus_non_kv = static_cast<double>(kMiB - 1000);
  EXPECT_DOUBLE_EQ(m.kv_reserved_time, reserved_minus_non_kv * 40);
  json metrics;
  add_memory_metrics(metrics, m, t, std::nullopt);
  EXPECT_DOUBLE_EQ(metrics["kv_utilisation"].get<double>(), 5.0 / 14.0);
  EXPECT_DOUBLE_EQ(metrics["kv_utilisation_of_reserved"].get<double>(), 100000.0 / (reserved_minus_non_kv * 40));

  // Without all three counters there is no KV metric.
  const FlatTrace partial = flat({alloc(1, 1000), counter(1, 5), free_of(1)}, {"", "kv.token_bytes"});
  auto partial_runner = make_runner("pool.coalescing:initial=1MiB", partial, settings_every_op());
  const MemoryObservation pm = partial_runner->observe_memory();
  EXPECT_FALSE(pm.kv_counters);
  json partial_metrics;
  add_memory_metrics(partial_metrics, pm, partial, std::nullopt);
  EXPECT_FALSE(partial_metrics.contains("kv_utilisation"));
}

TEST(ReplayRunner, ModelErrorAgainstRecordedReservedBytes) {
  // pool.coalescing with a 1 MiB first chunk holds 1 MiB at the peak (op 1). The recorded value in
  // force at the peak op is the last counter at or before it: 2 MiB (the 5 after the peak is ignored).
  // model_error = (1 MiB - 2 MiB) / 2 MiB = -0.5.
  const FlatTrace t = flat({counter(1, 7), alloc(1, 1000), counter(1, 2 * kMiB), alloc(2, 2000), counter(1, 5),
                            free_of(1), free_of(2)},
                           {"", "reference.reserved_bytes"});
  EXPECT_EQ(t.peak_op, 1u);
  auto runner = make_runner("pool.coalescing:initial=1MiB", t, settings_every_op());
  json metrics;
  add_memory_metrics(metrics, runner->observe_memory(), t, std::nullopt);
  EXPECT_EQ(metrics["recorded_reserved_bytes"], 2 * kMiB);
  EXPECT_DOUBLE_EQ(metrics["model_error"].get<double>(), -0.5);

  // 768 KiB recorded: (1024 - 768) / 768 = 1/3.
  const FlatTrace over = flat({alloc(1, 1000), counter(1, 768 * kKiB), alloc(2, 2000), free_of(1), free_of(2)},
                              {"", "reference.reserved_bytes"});
  auto over_runner = make_runner("pool.coalescing:initial=1MiB", over, settings_every_op());
  json over_metrics;
  add_memory_metrics(over_metrics, over_runner->observe_memory(), over, std::nullopt);
  EXPECT_DOUBLE_EQ(over_metrics["model_error"].get<double>(), 1.0 / 3.0);
}

TEST(ReplayRunner, TimelineColumnsHaveEqualLengthAndEndAtTheLastOp) {
  const FlatTrace t = sample_trace();
  ReplaySettings s = settings_every_op();
  s.sample_every = 3;  // ops 2, 5, the peak (4) and the last (7)
  auto runner = make_runner("pool.coalescing:initial=64KiB", t, s);
  json metrics;
  const json timeline = add_memory_metrics(metrics, runner->observe_memory(), t, std::uint64_t{600});
  EXPECT_EQ(timeline["op_index"], json({2, 4, 5, 7}));
  for (const auto& [key, column] : timeline.items()) EXPECT_EQ(column.size(), 4u) << key;
  EXPECT_EQ(timeline["requested_bytes"], json({200, 550, 350, 550}));
  EXPECT_EQ(metrics["planner_bytes"], 600);
}

TEST(ReplayResults, UnknownReservedLeavesOutReservedMetricsAndColumns) {
  // A row that cannot see its reserved memory (system.*): no reserved-based metric, and the timeline
  // keeps only the columns it has, all of one length.
  const FlatTrace t = sample_trace();
  MemoryObservation m;
  m.reserved_known = false;
  m.timeline = {{4, 550, 560, 0, 0.0}, {7, 550, 560, 0, 0.0}};
  m.at_peak.requested_bytes.current = 550;
  m.at_peak.allocated_bytes.current = 560;
  json metrics;
  const json timeline = add_memory_metrics(metrics, m, t, std::nullopt);
  for (const char* key : {"reserved_bytes_at_peak", "external_fragmentation_at_peak", "external_fragmentation_max",
                          "unreturnable_bytes_at_peak", "model_error"}) {
    EXPECT_FALSE(metrics.contains(key)) << key;
  }
  EXPECT_DOUBLE_EQ(metrics["internal_fragmentation_at_peak"].get<double>(), 1.0 - 550.0 / 560.0);
  EXPECT_EQ(metrics["leaked_bytes"], 550);
  EXPECT_EQ(timeline.size(), 3u);
  for (const auto& [key, column] : timeline.items()) EXPECT_EQ(column.size(), 2u) << key;
}

TEST(ReplayRunner, LatencyPassFillsHistogramsAndJson) {
  const FlatTrace t = sample_trace();
  auto runner = make_runner("pool.coalescing:initial=64KiB", t, settings_every_op());
  const RepetitionResult r = runner->repetition(true);
  EXPECT_TRUE(r.latency_measured);
  EXPECT_EQ(r.alloc_ns.count(), 6u);
  EXPECT_EQ(r.free_ns.count(), 2u);  // leftovers are released untimed
  const json metrics = repetition_metrics(r);
  for (const char* op : {"alloc", "free"}) {
    for (const char* key : {"p50", "p90", "p99", "p999", "max", "count"}) {
      EXPECT_TRUE(metrics["latency_ns"][op].contains(key)) << op << "." << key;
    }
  }
  EXPECT_EQ(metrics["latency_ns"]["alloc"]["count"], 6);
}

TEST(ReplayRunner, BadSpecsThrowInputErrorAtConstruction) {
  const FlatTrace t = sample_trace();
  EXPECT_ANY_THROW(make_runner("no.such.allocator", t, settings_every_op()));
  EXPECT_ANY_THROW(make_runner("buddy:arena=3KiB", t, settings_every_op()));
  ReplaySettings touch = settings_every_op();
  touch.touch = Touch::kFull;
  EXPECT_ANY_THROW(make_runner("bump", t, touch));  // simulated memory cannot be written
  EXPECT_ANY_THROW(parse_touch("some"));
  EXPECT_EQ(parse_touch("first"), Touch::kFirst);
}

// ---------------------------------------------------------------------------------------------
// Aggregation over repetitions

TEST(ReplayResults, AggregateMedianMinMaxCv) {
  std::vector<json> reps;
  for (int v : {3, 1, 4, 2}) reps.push_back(json{{"x", v}, {"nested", {{"y", v * 10}}}, {"s", "text"}});
  const Aggregate a = aggregate_repetitions(reps);
  EXPECT_DOUBLE_EQ(a.metrics["x"].get<double>(), 2.5);  // median of 1, 2, 3, 4
  EXPECT_EQ(a.metrics["nested"]["y"], 25);              // whole medians stay integers
  EXPECT_FALSE(a.metrics.contains("s"));                // only numbers are aggregated
  const json& x = a.statistics["x"];
  EXPECT_DOUBLE_EQ(x["median"].get<double>(), 2.5);
  EXPECT_EQ(x["min"], 1);
  EXPECT_EQ(x["max"], 4);
  EXPECT_EQ(x["n"], 4);
  // mean 2.5, sample variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3, cv = sqrt(5/3) / 2.5
  EXPECT_DOUBLE_EQ(x["cv"].get<double>(), std::sqrt(5.0 / 3.0) / 2.5);
  EXPECT_DOUBLE_EQ(a.statistics["nested.y"]["cv"].get<double>(), std::sqrt(500.0 / 3.0) / 25.0);

  const Aggregate odd = aggregate_repetitions({json{{"x", 5}}, json{{"x", 1}}, json{{"x", 3}}});
  EXPECT_EQ(odd.metrics["x"], 3);
  const Aggregate one = aggregate_repetitions({json{{"x", 0}}});
  EXPECT_DOUBLE_EQ(one.statistics["x"]["cv"].get<double>(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// LatencyHistogram

TEST(LatencyHistogram, SmallValuesAreExact) {
  for (std::uint64_t v = 0; v < 64; ++v) {
    LatencyHistogram h;
    h.record(v);
    EXPECT_EQ(LatencyHistogram::bucket_of(v), v);
    EXPECT_EQ(LatencyHistogram::lower(v), v);
    EXPECT_EQ(LatencyHistogram::upper(v), v + 1);
    EXPECT_DOUBLE_EQ(h.percentile(0.5), static_cast<double>(v));
    EXPECT_DOUBLE_EQ(h.percentile(1.0), static_cast<double>(v));
    EXPECT_EQ(h.max(), v);
  }
  LatencyHistogram h;
  for (std::uint64_t v = 1; v <= 10; ++v) h.record(v);
  EXPECT_DOUBLE_EQ(h.percentile(0.5), 5.0);   // nearest rank ceil(5) = 5th
  EXPECT_DOUBLE_EQ(h.percentile(0.9), 9.0);   // 9th
  EXPECT_DOUBLE_EQ(h.percentile(0.91), 10.0); // ceil(9.1) = 10th
  EXPECT_DOUBLE_EQ(h.percentile(0.001), 1.0); // at least the 1st
  EXPECT_EQ(h.count(), 10u);
  EXPECT_DOUBLE_EQ(LatencyHistogram().percentile(0.5), 0.0);
}

TEST(LatencyHistogram, BucketsAreContiguousAndMonotoneOverTheWholeRange) {
  EXPECT_EQ(LatencyHistogram::lower(0), 0u);
  for (std::size_t i = 0; i + 1 < LatencyHistogram::kBuckets; ++i) {
    ASSERT_LT(LatencyHistogram::lower(i), LatencyHistogram::upper(i)) << i;
    ASSERT_EQ(LatencyHistogram::lower(i + 1), LatencyHistogram::upper(i)) << i;
    // Each bucket's bounds map back to it; width at most 1/32 of the lower bound above 64.
    ASSERT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::lower(i)), i) << i;
    ASSERT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::upper(i) - 1), i) << i;
    if (i >= 64) {
      ASSERT_LE((LatencyHistogram::upper(i) - LatencyHistogram::lower(i)) * 32, LatencyHistogram::lower(i)) << i;
    }
  }
  const std::size_t last = LatencyHistogram::kBuckets - 1;
  EXPECT_EQ(LatencyHistogram::bucket_of(UINT64_MAX), last);
  EXPECT_EQ(LatencyHistogram::upper(last), UINT64_MAX);  // saturated
  EXPECT_EQ(LatencyHistogram::bucket_of(LatencyHistogram::lower(last)), last);
  LatencyHistogram h;
  h.record(UINT64_MAX);
  EXPECT_EQ(h.max(), UINT64_MAX);
  EXPECT_EQ(h.bucket_count(last), 1u);
}

TEST(LatencyHistogram, PercentilesWithinOnePointSixPercentOfExact) {
  std::mt19937_64 rng(42);
  // Log-uniform over 1 ns .. ~1 s: every group of buckets is exercised.
  std::uniform_real_distribution<double> exponent(0.0, 30.0);
  std::vector<std::uint64_t> values(20'000);
  LatencyHistogram h;
  for (std::uint64_t& v : values) {
    v = static_cast<std::uint64_t>(std::exp2(exponent(rng)));
    h.record(v);
  }
  std::vector<std::uint64_t> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  for (double q : {0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0}) {
    const auto rank = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size()))));
    const double exact = static_cast<double>(sorted[rank - 1]);
    EXPECT_LE(std::fabs(h.percentile(q) - exact), 0.016 * exact) << "q " << q << " exact " << exact;
  }
  EXPECT_EQ(h.max(), sorted.back());
  EXPECT_LE(h.percentile(1.0), static_cast<double>(sorted.back()));  // never above the exact maximum
}

TEST(LatencyHistogram, MergeAddsCountsAndKeepsTheLargerMax) {
  LatencyHistogram a, b, both;
  for (std::uint64_t v : {5, 70, 1000, 123456}) {
    a.record(v);
    both.record(v);
  }
  for (std::uint64_t v : {3, 64, 999'999'999}) {
    b.record(v);
    both.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), 7u);
  EXPECT_EQ(a.max(), 999'999'999u);
  for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) ASSERT_EQ(a.bucket_count(i), both.bucket_count(i)) << i;
  for (double q : {0.1, 0.5, 0.9, 1.0}) EXPECT_DOUBLE_EQ(a.percentile(q), both.percentile(q));

  // add_bucket_count rebuilds a histogram from its buckets exactly.
  LatencyHistogram rebuilt;
  for (std::size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
    if (a.bucket_count(i) != 0) rebuilt.add_bucket_count(i, a.bucket_count(i), a.max());
  }
  EXPECT_EQ(rebuilt.count(), a.count());
  EXPECT_EQ(rebuilt.max(), a.max());
  EXPECT_DOUBLE_EQ(rebuilt.percentile(0.5), a.percentile(0.5));
}

}  // namespace
}  // namespace tiermark
