// PageLru (replay/page_lru.h), the cache model of the locality pass, and the pass itself on traces
// whose answer is known: a caching allocator hands a freed block's memory out again (resident), a
// bump allocator never does, and memory returned to the operating system is forgotten.
#include <gtest/gtest.h>

#include "replay/page_lru.h"
#include "replay/replay_runner.h"
#include "workloads/trace_recorder.h"

namespace tiermark {
namespace {

constexpr std::uint64_t kPage = PageLru::kPage;

TEST(PageLru, HoldsTheMostRecentPagesUpToItsCapacity) {
  PageLru lru(2 * kPage);
  EXPECT_EQ(lru.touch(0, kPage), 0u);          // page 0: new
  EXPECT_EQ(lru.touch(kPage, kPage), 0u);      // page 1: new
  EXPECT_EQ(lru.touch(0, kPage), kPage);       // page 0 held; now most recent
  EXPECT_EQ(lru.touch(2 * kPage, 100), 0u);    // page 2 evicts page 1, the least recent
  EXPECT_EQ(lru.touch(kPage + 10, 50), 0u);    // page 1 was evicted (and now evicts page 0)
  EXPECT_EQ(lru.touch(2 * kPage + 200, 300), 300u);  // bytes, not pages: the part of the range held
  EXPECT_EQ(lru.pages_held(), 2u);
}

TEST(PageLru, ARangeLargerThanTheCacheKeepsItsTail) {
  PageLru lru(4 * kPage);
  EXPECT_EQ(lru.touch(0, 10 * kPage), 0u);
  EXPECT_EQ(lru.touch(0, 10 * kPage), 0u);  // every page was evicted by later pages of the same range
  EXPECT_EQ(lru.touch(6 * kPage, 4 * kPage), 4 * kPage);
}

TEST(PageLru, ForgetDropsWholePagesInTheRange) {
  PageLru lru(8 * kPage);
  lru.touch(0, 4 * kPage);
  lru.forget(kPage / 2, 2 * kPage);  // wholly inside: page 1 only
  EXPECT_EQ(lru.touch(0, 4 * kPage), 3 * kPage);
  lru.forget(0, 100 * kPage);  // larger than what is held
  EXPECT_EQ(lru.pages_held(), 0u);
}

FlatTrace reuse_trace() {
  TraceRecorder recorder;
  TraceMetadata metadata;
  TagTable tags;
  recorder.begin(metadata, tags);
  const auto event = [&](EventKind kind, SlotId id, std::uint64_t size) {
    TraceEvent e;
    e.kind = kind;
    e.id = id;
    e.size = size;
    recorder.event(e);
  };
  event(EventKind::kAlloc, 1, 64 * 1024);
  event(EventKind::kFree, 1, 0);
  event(EventKind::kAlloc, 2, 64 * 1024);
  event(EventKind::kFree, 2, 0);
  recorder.end();
  RecordedTraceSource source(recorder, "reuse");
  return flatten_trace(source);
}

TEST(LocalityPass, CachingReuseIsResidentBumpIsNot) {
  const FlatTrace trace = reuse_trace();
  ReplaySettings settings;
  settings.upstream_spec = "host";
  settings.touch = Touch::kFull;
  settings.cache_bytes = 1 << 20;
  const auto caching = make_runner("caching.pytorch", trace, settings)->observe_locality();
  ASSERT_TRUE(caching.has_value());
  EXPECT_EQ(caching->touched_bytes, 128u * 1024);
  EXPECT_EQ(caching->resident_bytes, 64u * 1024);  // the second block is the first one's memory
  EXPECT_EQ(caching->hot_bytes, 64u * 1024);
  EXPECT_GT(caching->touch_seconds, 0);
  const auto bump = make_runner("bump", trace, settings)->observe_locality();
  ASSERT_TRUE(bump.has_value());
  EXPECT_EQ(bump->resident_bytes, 0u);  // never reuses an address
  // No locality pass without a full touch or a cache size.
  settings.cache_bytes = 0;
  EXPECT_FALSE(make_runner("bump", trace, settings)->observe_locality().has_value());
}

TEST(LocalityPass, MemoryGivenBackToTheSystemIsNotResident) {
  // pool.sizeclass passes blocks above max_size straight to the upstream and back: the same
  // address may come back from mmap, but as fresh pages.
  const FlatTrace trace = reuse_trace();
  ReplaySettings settings;
  settings.upstream_spec = "host";
  settings.touch = Touch::kFull;
  settings.cache_bytes = 1 << 20;
  const auto direct = make_runner("pool.sizeclass:max_size=16KiB", trace, settings)->observe_locality();
  ASSERT_TRUE(direct.has_value());
  EXPECT_EQ(direct->resident_bytes, 0u);
}

}  // namespace
}  // namespace tiermark
