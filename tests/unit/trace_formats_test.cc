// The trace formats: CSV and binary (.tmt) read exactly what was written, every malformed input is
// one InputError naming the line or byte offset, RMM logs import, and the statistics are exact.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/input_error.h"
#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/rmm_log.h"
#include "workloads/trace_recorder.h"
#include "workloads/trace_stats.h"
#include "workloads/trace_validator.h"

namespace tiermark {
namespace {

// A trace held in memory; tag ids index its tag_names().
using Trace = TraceRecorder;

Trace read_csv(const std::string& text) {
  std::istringstream in(text);
  CsvTraceReader reader(in, "t.csv");
  TraceRecorder recorder;
  pump(reader, recorder);
  return recorder;
}

Trace read_binary(const std::string& bytes) {
  std::istringstream in(bytes);
  BinaryTraceReader reader(in, "t.tmt");
  TraceRecorder recorder;
  pump(reader, recorder);
  return recorder;
}

std::string write_csv(const Trace& trace) {
  RecordedTraceSource source(trace);
  std::ostringstream out;
  CsvTraceWriter writer(out);
  pump(source, writer);
  return out.str();
}

std::string write_binary(const Trace& trace) {
  RecordedTraceSource source(trace);
  std::ostringstream out;
  BinaryTraceWriter writer(out);
  pump(source, writer);
  return out.str();
}

// Events equal with tags compared by name (tag ids may be renumbered by a format).
void expect_same_trace(const Trace& a, const Trace& b) {
  EXPECT_EQ(a.metadata().items(), b.metadata().items());
  ASSERT_EQ(a.events().size(), b.events().size());
  for (std::size_t i = 0; i < a.events().size(); ++i) {
    TraceEvent x = a.events()[i], y = b.events()[i];
    ASSERT_EQ(a.tag(x), b.tag(y)) << "event " << i;
    x.tag = y.tag = 0;
    ASSERT_EQ(x, y) << "event " << i;
  }
}

// A valid random trace exercising every field: sequential and scattered ids, repeated and fresh
// sizes, alignments, streams, threads, tags, frees with and without sizes, phases and counters.
Trace random_trace(std::uint64_t seed, int count) {
  std::mt19937_64 rng(seed);
  TraceMetadata metadata;
  metadata.set("generator", "random");
  metadata.set("seed", std::to_string(seed));
  // Tag names also probe the component coding of .tmt: empty components, a lone dot, a component
  // repeated within a name, a name that is a prefix of another.
  const std::vector<std::string> tag_names = {"", "layer0.attn.q", "adam.exp_avg", "kv.req42", "with,comma", "quote\"d", "step",
                     "a..b", ".", "a.b.a", "layer0.attn", "layer0.attn.q.grad", "adam.", ".adam"};
  std::vector<TraceEvent> events;
  std::vector<std::pair<SlotId, std::uint64_t>> live;
  SlotId next_id = 0;
  const std::uint64_t common_sizes[] = {512, 4096, 1 << 20, 3 << 20, 8519680};
  for (int i = 0; i < count; ++i) {
    const unsigned r = rng() % 100;
    TraceEvent e;
    if (r < 3) {
      e.kind = EventKind::kPhase;
      e.tag = 6;
    } else if (r < 6) {
      e.kind = EventKind::kCounter;
      e.tag = 3;
      e.size = rng() % 3 == 0 ? 0 : rng() % (std::uint64_t{1} << 40);
    } else if (r < 55 || live.empty()) {
      e.kind = EventKind::kAlloc;
      e.id = rng() % 10 == 0 ? next_id + 1000 + rng() % 100000 : next_id;
      next_id = e.id + 1;
      e.size = rng() % 2 == 0 ? common_sizes[rng() % 5] : 1 + rng() % (std::uint64_t{1} << (rng() % 40));
      e.alignment = rng() % 8 == 0 ? std::uint64_t{1} << (rng() % 31) : kDefaultAlignment;
      e.stream = rng() % 10 == 0 ? static_cast<StreamId>(rng() % 4) : 0;
      e.thread = rng() % 10 == 0 ? static_cast<ThreadId>(rng()) : 0;
      e.tag = static_cast<TagId>(rng() % tag_names.size());
      if (e.tag == 6) e.tag = 0;
      live.emplace_back(e.id, e.size);
    } else {
      const std::size_t pick = rng() % 3 == 0 ? live.size() - 1 : rng() % live.size();
      e.kind = EventKind::kFree;
      e.id = live[pick].first;
      e.size = rng() % 4 == 0 ? live[pick].second : 0;
      e.tag = rng() % 5 == 0 ? 1 : 0;
      e.stream = rng() % 10 == 0 ? 2 : 0;
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
    }
    events.push_back(e);
  }
  return Trace(metadata, tag_names, events);
}

// The message of the InputError `action` throws; fails the test when it throws none.
template <class F>
std::string input_error(F action) {
  try {
    action();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError";
  return "";
}

TEST(CsvTrace, ReadsMinimalColumnsMetadataCommentsQuotesAndCrlf) {
  const Trace trace = read_csv(
      "#meta generator=hand\r\n# a comment\n\nop,id,size\nalloc,7,100\n# mid comment\nfree,7,\n");
  EXPECT_EQ(trace.metadata().get("generator"), "hand");
  ASSERT_EQ(trace.events().size(), 2u);
  EXPECT_EQ(trace.events()[0], (TraceEvent{EventKind::kAlloc, 7, 100, kDefaultAlignment, 0, 0, kNoTag}));
  EXPECT_EQ(trace.events()[1], (TraceEvent{EventKind::kFree, 7, 0, kDefaultAlignment, 0, 0, kNoTag}));

  const Trace full = read_csv("op,id,size,tag,thread,stream,align\nalloc,1,64,\"a,\"\"b\"\"\",3,2,4096\nfree,1,64,,3,,\n");
  ASSERT_EQ(full.events().size(), 2u);
  EXPECT_EQ(full.events()[0].alignment, 4096u);
  EXPECT_EQ(full.events()[0].stream, 2u);
  EXPECT_EQ(full.events()[0].thread, 3u);
  EXPECT_EQ(full.tag(full.events()[0]), "a,\"b\"");
  EXPECT_EQ(full.events()[1].size, 64u);
}

TEST(CsvTrace, RoundTripIsExactAndStable) {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const Trace original = random_trace(seed, 5000);
    const std::string text = write_csv(original);
    const Trace back = read_csv(text);
    expect_same_trace(original, back);
    EXPECT_EQ(write_csv(back), text) << "a CSV read and written again is byte-identical";
  }
}

TEST(BinaryTrace, RoundTripIsExact) {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const Trace original = random_trace(seed, 20000);
    const std::string bytes = write_binary(original);
    const Trace back = read_binary(bytes);
    expect_same_trace(original, back);
    EXPECT_EQ(write_binary(back), bytes);
    EXPECT_EQ(write_csv(back), write_csv(original)) << "CSV -> binary -> CSV is unchanged";
  }
}

TEST(BinaryTrace, SequentialAllocsAndLifoFreesCostAboutTwoBytesAndOne) {
  std::vector<TraceEvent> events;
  for (SlotId id = 0; id < 1000; ++id) events.push_back({EventKind::kAlloc, id, id % 2 == 0 ? 4096u : 512u, 16, 0, 0, TagId(1 + id % 2)});
  for (SlotId id = 1000; id-- > 0;) events.push_back({EventKind::kFree, id, 0, 16, 0, 0, kNoTag});
  const Trace trace({}, {"", "x", "y"}, events);
  const std::string bytes = write_binary(trace);
  // 2 bytes per alloc (header, tag delta), 1 per free, plus a header and end record of tens of bytes.
  EXPECT_LE(bytes.size(), 3000u + 64u);
  expect_same_trace(trace, read_binary(bytes));
}

TEST(BinaryTrace, EveryTruncationIsOneInputErrorNamingAByteOffset) {
  const std::string bytes = write_binary(random_trace(9, 300));
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    const std::string message = input_error([&] { read_binary(bytes.substr(0, length)); });
    EXPECT_NE(message.find("t.tmt: byte "), std::string::npos) << length << ": " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
  }
}

TEST(BinaryTrace, EveryCorruptByteIsCaught) {
  const std::string bytes = write_binary(random_trace(11, 300));
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80, 0xFF}) {
      std::string corrupt = bytes;
      corrupt[i] = static_cast<char>(corrupt[i] ^ flip);
      const std::string message = input_error([&] { read_binary(corrupt); });
      EXPECT_NE(message.find("t.tmt: byte "), std::string::npos) << i << ": " << message;
    }
  }
  std::string extra = bytes + "x";
  EXPECT_NE(input_error([&] { read_binary(extra); }).find("bytes after the end record"), std::string::npos);
}

// Random byte edits to a valid text file: every result is either a valid trace or one InputError
// naming a line; nothing crashes, hangs or throws anything else.
template <class Read>
void survive_mutations(const std::string& valid, const std::string& name, Read read) {
  std::mt19937_64 rng(7);
  const std::string alphabet = "0123456789,-\"\n\r#=abcdefghijklmnopqrstuvwxyz. xX";
  for (int i = 0; i < 3000; ++i) {
    std::string text = valid;
    for (int edits = 1 + static_cast<int>(rng() % 4); edits > 0; --edits) {
      const std::size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0: text[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: text.erase(at, 1 + rng() % 3); break;
        default: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
      }
      if (text.empty()) text = "x";
    }
    try {
      read(text);
    } catch (const InputError& e) {
      const std::string message = e.what();
      ASSERT_EQ(message.rfind(name + ": line ", 0), 0u) << message;
      ASSERT_EQ(message.find('\n'), std::string::npos) << message;
    }
  }
}

TEST(CsvTrace, RandomEditsGiveAValidTraceOrOneLineError) {
  survive_mutations(write_csv(random_trace(13, 40)), "t.csv", [](const std::string& text) { read_csv(text); });
}

TEST(RmmLog, RandomEditsGiveAValidTraceOrOneLineError) {
  const std::string log =
      "Thread,Time,Action,Pointer,Size,Stream\n"
      "1,0.1,allocate,0x1000,256,0x0\n1,0.2,allocate,0x2000,64,0x7f00\n2,0.3,free,0x1000,256,0x0\n"
      "2,0.4,allocate failure,0x0,999,0x0\n1,0.5,deallocate,0x2000,64,0x7f00\n";
  survive_mutations(log, "log.csv", [](const std::string& text) {
    std::istringstream in(text);
    RmmLogReader reader(in, "log.csv");
    TraceRecorder recorder;
    pump(reader, recorder);
  });
}

TEST(BinaryTrace, WrongVersionAndMagicAreNamed) {
  std::string bytes = write_binary(random_trace(3, 10));
  std::string future = bytes;
  future[8] = 2;
  EXPECT_EQ(input_error([&] { read_binary(future); }),
            "t.tmt: byte 8: format version 2, but this tiermark reads version 1");
  EXPECT_EQ(input_error([&] { read_binary("op,id,size\n"); }), "t.tmt: byte 0: not a tiermark binary trace (bad magic number)");
}

// Tags are one line in every format: a .tmt tag holding a line feed would make a CSV that cannot be
// read back (found by binary_trace_fuzzer, docs/fuzzing.md finding 3), so the reader refuses it.
TEST(BinaryTrace, ATagHoldingALineFeedIsCorrupt) {
  TraceEvent alloc;
  alloc.kind = EventKind::kAlloc;
  alloc.size = 64;
  alloc.tag = 1;
  const Trace trace(TraceMetadata(), {"", "two\nlines"}, {alloc});
  const std::string error = input_error([&] { read_binary(write_binary(trace)); });
  EXPECT_NE(error.find("corrupt tag component (holds a line feed)"), std::string::npos) << error;
}

struct BadCsv {
  std::string body;      // rows after the header `op,id,size,align`
  std::string expected;  // the whole message
};

TEST(CsvTrace, EveryBadInputIsOneLineNamingTheLine) {
  const std::vector<BadCsv> cases = {
      {"free,3,,\n", "t.csv: line 2: free of id 3, which was never allocated"},
      {"alloc,1,8,\nfree,1,,\nfree,1,,\n", "t.csv: line 4: double free of id 1 (it is no longer live)"},
      {"alloc,1,8,\nalloc,1,8,\n", "t.csv: line 3: id 1 is allocated again while live"},
      {"alloc,1,0,\n", "t.csv: line 2: alloc of id 1 has size 0"},
      {"alloc,1,-5,\n", "t.csv: line 2: size '-5' is negative"},
      {"alloc,1,99999999999999999999,\n", "t.csv: line 2: size '99999999999999999999' overflows 64 bits"},
      {"alloc,1,72057594037927937,\n", "t.csv: line 2: size 72057594037927937 is above the largest accepted (72057594037927936)"},
      {"alloc,1,8,24\n", "t.csv: line 2: alloc of id 1 has alignment 24, not a power of two up to 1GiB"},
      {"alloc,1,8,0\n", "t.csv: line 2: alloc of id 1 has alignment 0, not a power of two up to 1GiB"},
      {"malloc,1,8,\n", "t.csv: line 2: unknown op 'malloc' (expected alloc, free, phase or counter)"},
      {"alloc,1,8\n", "t.csv: line 2: 3 fields where the header has 4"},
      {"alloc,x,8,\n", "t.csv: line 2: id 'x' is not a number"},
      {"alloc,1,,\n", "t.csv: line 2: alloc of id 1 without a size"},
      {"alloc,1,8,\nfree,1,9,\n", "t.csv: line 3: free of id 1 says size 9 but it was allocated with 8"},
      {"alloc,1,8,\n#meta late=1\n", "t.csv: line 3: metadata after the header (put #meta lines first)"},
  };
  for (const BadCsv& c : cases) {
    EXPECT_EQ(input_error([&] { read_csv("op,id,size,align\n" + c.body); }), c.expected) << c.body;
  }
  EXPECT_EQ(input_error([&] { read_csv(""); }), "t.csv: line 0: no header line (expected op,id,size[,align,stream,thread,tag])");
  EXPECT_EQ(input_error([&] { read_csv("id,op,size\n"); }),
            "t.csv: line 1: bad header 'id,op,size' (expected op,id,size[,align,stream,thread,tag])");
  EXPECT_EQ(input_error([&] { read_csv("op,id,size,colour\n"); }),
            "t.csv: line 1: bad header: unknown column 'colour' (known: op,id,size,align,stream,thread,tag)");
  EXPECT_EQ(input_error([&] { read_csv("op,id,size,tag\nphase,,,\n"); }), "t.csv: line 2: phase without a name in the tag column");
  EXPECT_EQ(input_error([&] { read_csv("op,id,size,tag\nalloc,1,8,\"open\n"); }), "t.csv: line 2: broken quotes");
}

TEST(TraceValidator, TellsDoubleFreesFromNeverAllocatedIdsLikeAModel) {
  // Ids in runs and at random, so the interval set merges, splits nothing and extends both ways.
  std::mt19937_64 rng(5);
  TraceValidator validator;
  std::set<SlotId> ever, live;
  for (int i = 0; i < 20000; ++i) {
    const SlotId id = rng() % 3 == 0 ? rng() % 4000 : (i / 2) % 4000;
    const bool alloc = rng() % 2 == 0;
    const TraceEvent event{alloc ? EventKind::kAlloc : EventKind::kFree, id, alloc ? 8u : 0u, 16, 0, 0, kNoTag};
    const std::string problem = validator.check(event, 1);
    if (alloc) {
      EXPECT_EQ(problem.empty(), !live.contains(id)) << problem;
      if (problem.empty()) ever.insert(id), live.insert(id);
    } else if (live.contains(id)) {
      EXPECT_EQ(problem, "");
      live.erase(id);
    } else if (ever.contains(id)) {
      EXPECT_EQ(problem, "double free of id " + std::to_string(id) + " (it is no longer live)");
    } else {
      EXPECT_EQ(problem, "free of id " + std::to_string(id) + ", which was never allocated");
    }
  }
  EXPECT_EQ(validator.live_blocks(), live.size());
}

TEST(RmmLog, ImportsAllocationsFreesFailuresThreadsAndStreams) {
  std::istringstream in(
      "Thread,Time,Action,Pointer,Size,Stream\n"
      "140573312345856,1634567890.1,allocate,0x7f8a40000000,1024,0x0\n"
      "140573312345856,1634567890.2,allocate,0x7f8a40000400,2048,0x7f8a38001020\n"
      "140573312349999,1634567890.3,free,0x7f8a40000000,1024,0x0\n"
      "140573312349999,1634567890.4,allocate failure,0x0,1099511627776,0x0\n"
      "140573312345856,1634567890.5,deallocate,0x7f8a40000400,2048,0x7f8a38001020\n"
      "140573312345856,1634567890.6,allocate,0x7f8a40000000,64,0x0\n");
  RmmLogReader reader(in, "log.csv");
  TraceRecorder recorder;
  pump(reader, recorder);
  const auto& e = recorder.events();
  ASSERT_EQ(e.size(), 6u);
  EXPECT_EQ(e[0], (TraceEvent{EventKind::kAlloc, 0, 1024, 16, 0, 0, kNoTag}));
  EXPECT_EQ(e[1], (TraceEvent{EventKind::kAlloc, 1, 2048, 16, 1, 0, kNoTag}));
  EXPECT_EQ(e[2], (TraceEvent{EventKind::kFree, 0, 1024, 16, 0, 1, kNoTag}));
  EXPECT_EQ(e[3].kind, EventKind::kCounter);
  EXPECT_EQ(recorder.tag(e[3]), "rmm.allocate_failure");
  EXPECT_EQ(e[3].size, std::uint64_t{1} << 40);
  EXPECT_EQ(e[4], (TraceEvent{EventKind::kFree, 1, 2048, 16, 1, 0, kNoTag}));
  EXPECT_EQ(e[5], (TraceEvent{EventKind::kAlloc, 2, 64, 16, 0, 0, kNoTag})) << "a reused address gets a fresh id";
  EXPECT_EQ(recorder.metadata().get("source"), "rmm-log");
}

TEST(RmmLog, BadLogsAreOneLineNamingTheLine) {
  auto read = [](const std::string& text) {
    std::istringstream in(text);
    RmmLogReader reader(in, "log.csv");
    TraceRecorder recorder;
    pump(reader, recorder);
  };
  const std::string header = "Thread,Time,Action,Pointer,Size,Stream\n";
  EXPECT_EQ(input_error([&] { read("op,id,size\n"); }),
            "log.csv: line 1: not an RMM log header: no 'Thread' column (expected Thread,Time,Action,Pointer,Size,Stream)");
  EXPECT_EQ(input_error([&] { read(header + "1,0,free,0x10,8,0x0\n"); }), "log.csv: line 2: free of pointer 0x10, which is not live");
  EXPECT_EQ(input_error([&] { read(header + "1,0,allocate,0x10,8,0x0\n1,0,allocate,0x10,8,0x0\n"); }),
            "log.csv: line 3: pointer 0x10 allocated again while live");
  EXPECT_EQ(input_error([&] { read(header + "1,0,allocate,zz,8,0x0\n"); }), "log.csv: line 2: pointer 'zz' is not a hex address");
  EXPECT_EQ(input_error([&] { read(header + "1,0,grow,0x10,8,0x0\n"); }),
            "log.csv: line 2: unknown action 'grow' (expected allocate, allocate failure, free or deallocate)");
}

TEST(TraceStats, CountsPeaksLifetimesSizesAndTagsExactly) {
  const Trace trace = read_csv(
      "#meta generator=hand\n"
      "op,id,size,tag\n"
      "alloc,0,100,a\n"     // event 0
      "alloc,1,300,b\n"     // 1: live 400
      "free,0,,\n"          // 2: lifetime 2
      "alloc,2,100,a\n"     // 3: live 400
      "alloc,3,1000,b\n"    // 4: live 1400 (peak)
      "phase,,,mid\n"       // 5
      "free,3,,\n"          // 6: lifetime 2
      "free,1,,\n"          // 7: lifetime 6
      "counter,,7,c\n"      // 8
      "counter,,3,c\n");    // 9; id 2 stays live
  RecordedTraceSource source(trace);
  TraceStats stats;
  pump(source, stats);
  EXPECT_EQ(stats.events, 10u);
  EXPECT_EQ(stats.allocs, 4u);
  EXPECT_EQ(stats.frees, 3u);
  EXPECT_EQ(stats.phases, 1u);
  EXPECT_EQ(stats.counters, 2u);
  EXPECT_EQ(stats.peak_live_bytes, 1400u);
  EXPECT_EQ(stats.peak_live_blocks, 3u);
  EXPECT_EQ(stats.peak_event, 4u);
  EXPECT_EQ(stats.end_live_bytes, 100u);
  EXPECT_EQ(stats.end_live_blocks, 1u);
  EXPECT_EQ(stats.distinct_sizes, (std::map<std::uint64_t, std::uint64_t>{{100, 2}, {300, 1}, {1000, 1}}));
  EXPECT_EQ(stats.lifetime_percentile(50), 2u);
  EXPECT_EQ(stats.lifetime_percentile(90), 6u);
  ASSERT_EQ(stats.size_histogram.size(), 3u);
  EXPECT_EQ(stats.size_histogram[0].lower, 64u);
  EXPECT_EQ(stats.size_histogram[0].bytes, 200u);
  EXPECT_EQ(stats.size_histogram[2].lower, 512u);
  const auto tags = stats.top_tags(1);
  ASSERT_EQ(tags.size(), 1u);
  EXPECT_EQ(tags[0].tag, "b");
  EXPECT_EQ(tags[0].bytes, 1300u);
  ASSERT_EQ(stats.counter_summaries().size(), 1u);
  EXPECT_EQ(stats.counter_summaries()[0].max, 7u);
  EXPECT_EQ(stats.counter_summaries()[0].last, 3u);
  EXPECT_EQ(stats.metadata.get("generator"), "hand");
}

}  // namespace
}  // namespace tiermark
