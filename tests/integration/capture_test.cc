// libtiermark_capture.so end to end: capture_target runs under LD_PRELOAD, and the .tmt it leaves
// is read back through pump(), so every trace checked here is also a valid one (no double free, every
// free names a live id). The sequence test checks the exact events of the program's own region; the
// others check that threads, fork, exec and exit() from a thread neither hang nor lose the trace.
//
// Skipped under sanitizers: an LD_PRELOAD malloc and the sanitizer runtime's own malloc cannot both
// be first, and the library itself is then built instrumented.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "capture/spill_converter.h"
#include "workloads/binary_trace.h"
#include "workloads/trace_recorder.h"
#include "workloads/trace_validator.h"

namespace tiermark {
namespace {

namespace fs = std::filesystem;

class CaptureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string_view(TIERMARK_CAPTURE_SANITIZER) != "") {
      GTEST_SKIP() << "built with -fsanitize=" << TIERMARK_CAPTURE_SANITIZER
                   << ": an LD_PRELOAD allocator cannot run under the sanitizer's runtime";
    }
    std::string pattern = ::testing::TempDir() + "tiermark_capture_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Runs capture_target with `args` under the library; returns its exit code (124 when it hung and
  // was stopped), stdout in `out`. `env` execs the target in its own process, so the target is the
  // first process to load the library and writes the unsuffixed name.
  int run(const std::string& args, std::string* out = nullptr, const std::string& env = "") {
    const std::string out_path = dir_ + "/stdout.txt";
    const std::string command = "timeout -k 5 120 env LD_PRELOAD=" + std::string(TIERMARK_CAPTURE_LIBRARY) +
                                " TIERMARK_CAPTURE_OUTPUT=" + trace_path() + " " + env + " " + TIERMARK_CAPTURE_TARGET + " " + args +
                                " >" + out_path;
    const int status = std::system(command.c_str());
    if (out != nullptr) {
      std::ifstream in(out_path);
      *out = std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string trace_path() const { return dir_ + "/capture.tmt"; }

  // Reads and validates a trace; fails the test when it is not a valid .tmt.
  static TraceRecorder read(const std::string& path) {
    TraceRecorder recorder;
    std::ifstream in(path, std::ios::binary);
    EXPECT_TRUE(in.good()) << path << " was not written";
    if (!in) return recorder;
    try {
      BinaryTraceReader reader(in, path);
      pump(reader, recorder);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
    return recorder;
  }

  std::string dir_;
};

std::uint64_t metadata_number(const TraceRecorder& trace, std::string_view key) {
  const auto value = trace.metadata().get(key);
  EXPECT_TRUE(value.has_value()) << key;
  return value ? std::stoull(*value) : 0;
}

std::size_t find_alloc(const TraceRecorder& trace, std::uint64_t size) {
  const auto& events = trace.events();
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (events[i].kind == EventKind::kAlloc && events[i].size == size) return i;
  }
  return events.size();
}

// One expected event: `frees` names the position (within the region) of the alloc being freed.
struct Expected {
  EventKind kind;
  std::uint64_t size;
  std::uint64_t alignment;
  std::string_view tag;
  char thread;  // 'M' main, 'A' and 'B' the two threads
  int frees = -1;
};

TEST_F(CaptureTest, RecordsTheExactSequenceOfEveryInterposedCall) {
  ASSERT_EQ(run("sequence"), 0);
  const TraceRecorder trace = read(trace_path());
  constexpr auto kA = EventKind::kAlloc;
  constexpr auto kF = EventKind::kFree;
  const std::vector<Expected> expected = {
      {kA, 100, 16, "malloc", 'M'},                //  0
      {kA, 120, 16, "calloc", 'M'},                //  1: calloc(3, 40)
      {kF, 0, 16, "realloc", 'M', 0},              //  2: realloc(p, 300) frees the old block...
      {kA, 300, 16, "realloc", 'M'},               //  3: ...and allocates the new one
      {kA, 50, 16, "realloc", 'M'},                //  4: realloc(NULL, 50)
      {kF, 0, 16, "realloc", 'M', 4},              //  5: realloc(r, 0)
      {kA, 40, 16, "new[]", 'M'},                  //  6: new int[10]
      {kA, 256, 64, "new", 'M'},                   //  7: operator new(256, align_val_t{64})
      {kA, 7, 16, "new[]", 'M'},                   //  8: new (nothrow) char[7]
      {kA, 1000, 4096, "posix_memalign", 'M'},     //  9
      {kA, 512, 256, "aligned_alloc", 'M'},        // 10
      {kA, 70, 64, "memalign", 'M'},               // 11
      {kA, 10, 4096, "valloc", 'M'},               // 12
      {kA, 4096, 4096, "pvalloc", 'M'},            // 13: pvalloc(10) rounds up to a page
      {kF, 0, 16, "free", 'M', 1},                 // 14 (free(NULL), delete nullptr, free of a foreign block: no event)
      {kF, 0, 16, "delete[]", 'M', 6},             // 15
      {kF, 0, 64, "delete", 'M', 7},               // 16: sized aligned delete
      {kF, 0, 16, "delete[]", 'M', 8},             // 17: nothrow delete[]
      {kF, 0, 4096, "free", 'M', 9},               // 18
      {kF, 0, 256, "free", 'M', 10},               // 19
      {kF, 0, 64, "free", 'M', 11},                // 20
      {kF, 0, 4096, "free", 'M', 12},              // 21
      {kF, 0, 4096, "free", 'M', 13},              // 22
      {kA, 4, 16, "new", 'M'},                     // 23: new int(5)
      {kF, 0, 16, "delete", 'M', 23},              // 24: sized delete
      {kF, 0, 16, "free", 'M', 3},                 // 25
      {kA, 2001, 16, "malloc", 'A'},               // 26
      {kA, 2002, 16, "malloc", 'B'},               // 27
      {kF, 0, 16, "free", 'B', 26},                // 28: B frees A's block
      {kF, 0, 16, "free", 'M', 27},                // 29: main frees B's block
      {kA, 555, 16, "malloc", 'M'},                // 30: live at exit
  };

  const auto& events = trace.events();
  const std::size_t start = find_alloc(trace, 123457);
  const std::size_t end = find_alloc(trace, 123458);
  ASSERT_LT(start, events.size()) << "start marker not found";
  ASSERT_LT(end, events.size()) << "end marker not found";
  ASSERT_EQ(end - start - 1, expected.size()) << "events between the markers";
  const ThreadId main_thread = events[start].thread;
  std::map<char, ThreadId> threads = {{'M', main_thread}};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const TraceEvent& e = events[start + 1 + i];
    const Expected& x = expected[i];
    SCOPED_TRACE("event " + std::to_string(i) + " (" + std::string(x.tag) + ")");
    EXPECT_EQ(e.kind, x.kind);
    EXPECT_EQ(e.size, x.size);  // 0 for a free: the alloc's size is implied
    EXPECT_EQ(e.alignment, x.alignment);
    EXPECT_EQ(trace.tag(e), x.tag);
    EXPECT_EQ(e.stream, 0u);
    if (x.frees >= 0) {
      EXPECT_EQ(e.id, events[start + 1 + static_cast<std::size_t>(x.frees)].id);
    }
    const auto [it, first] = threads.try_emplace(x.thread, e.thread);
    EXPECT_EQ(e.thread, it->second) << "thread " << x.thread;
  }
  EXPECT_NE(threads.at('A'), main_thread);
  EXPECT_NE(threads.at('B'), main_thread);
  EXPECT_NE(threads.at('A'), threads.at('B'));

  const TraceMetadata& m = trace.metadata();
  EXPECT_EQ(m.get("source"), "capture");
  EXPECT_EQ(m.get("ends_empty"), "false");
  EXPECT_NE(m.get("capture.command").value_or("").find("capture_target sequence"), std::string::npos);
  EXPECT_GT(metadata_number(trace, "capture.pid"), 0u);
  EXPECT_GE(metadata_number(trace, "capture.threads"), 3u);
  EXPECT_GE(metadata_number(trace, "capture.null_frees"), 2u);       // free(NULL), operator delete(nullptr)
  EXPECT_GE(metadata_number(trace, "capture.unmatched_frees"), 1u);  // the __libc_malloc block
  EXPECT_GE(metadata_number(trace, "capture.live_blocks"), 1u);      // the 555-byte block
  // Thread ids are numbered in order of first appearance.
  ThreadId highest = 0;
  for (const TraceEvent& e : events) {
    EXPECT_LE(e.thread, highest + 1);
    highest = std::max(highest, e.thread);
  }
  EXPECT_EQ(highest + 1, metadata_number(trace, "capture.threads"));
  // Nothing is left next to the trace: the spill had no name, the temporary was renamed.
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir_)) files.push_back(entry.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"capture.tmt", "stdout.txt"}));
}

TEST_F(CaptureTest, ManyThreadsWithSmallBuffersGiveAValidCompleteTrace) {
  // 64-record buffers: thousands of spill chunks, interleaved across threads, for the merge.
  constexpr int kWorkers = 8, kRounds = 3;
  ASSERT_EQ(run("threads " + std::to_string(kWorkers) + " " + std::to_string(kRounds) + " 20000", nullptr, "TIERMARK_CAPTURE_BUFFER=64"), 0);
  const TraceRecorder trace = read(trace_path());
  std::uint64_t counted = 0;
  for (const TraceEvent& e : trace.events()) counted += e.kind == EventKind::kAlloc && e.size == 77777;
  EXPECT_EQ(counted, std::uint64_t{kWorkers} * kRounds * 10);
  EXPECT_GT(trace.events().size(), 200000u);
  EXPECT_GE(metadata_number(trace, "capture.threads"), std::uint64_t{kWorkers} * kRounds + 1);
  // Every free the program made was recorded in order: no address was reused while still live.
  EXPECT_EQ(metadata_number(trace, "capture.missed_frees"), 0u);
}

TEST_F(CaptureTest, ExitFromAThreadWhileOthersAllocate) {
  ASSERT_EQ(run("exit-from-thread"), 0);
  const TraceRecorder trace = read(trace_path());
  EXPECT_GT(trace.events().size(), 100u);
}

TEST_F(CaptureTest, EachProcessWritesItsOwnTraceAcrossForkAndExec) {
  std::string out;
  ASSERT_EQ(run("fork", &out), 0);
  std::istringstream lines(out);
  std::string word;
  int pid = 0;
  std::vector<int> forked;
  int exec_pid = 0;
  while (lines >> word >> pid) (word == "fork" ? forked.push_back(pid) : void(exec_pid = pid));
  ASSERT_EQ(forked.size(), 3u);
  ASSERT_NE(exec_pid, 0);

  const TraceRecorder parent = read(trace_path());
  EXPECT_LT(find_alloc(parent, 414141), parent.events().size());
  EXPECT_EQ(find_alloc(parent, 424242), parent.events().size()) << "a child's allocation in the parent's trace";
  for (int child : forked) {
    const TraceRecorder trace = read(trace_path() + "." + std::to_string(child));
    EXPECT_LT(find_alloc(trace, 424242), trace.events().size());
    EXPECT_EQ(trace.metadata().get("capture.pid"), std::to_string(child));
    EXPECT_EQ(trace.metadata().get("capture.forked"), "true");
  }
  const TraceRecorder exec_child = read(trace_path() + "." + std::to_string(exec_pid));
  EXPECT_LT(find_alloc(exec_child, 434343), exec_child.events().size());
  EXPECT_NE(exec_child.metadata().get("capture.command").value_or("").find("exec-child"), std::string::npos);
}

// The conversion alone, against a naive model: random calls from three threads over a small
// address pool (so addresses are reused and the address map grows, collides and shifts entries
// back), recorded into per-thread chunks of random lengths written to the spill in shuffled order.
TEST(CaptureConversion, MatchesANaiveModelOfTheAddressRules) {
  using capture::CallKind;
  using capture::CallOp;
  using capture::CaptureRecord;
  std::mt19937_64 random(42);
  constexpr int kThreads = 3;
  constexpr std::uint64_t kPool = 4096;
  std::vector<std::vector<CaptureRecord>> per_thread(kThreads);
  std::map<std::uint64_t, SlotId> live;  // the model: address -> id
  std::map<std::uint32_t, ThreadId> thread_ids;
  std::vector<TraceEvent> expected;
  SlotId next_id = 0;
  std::uint64_t unmatched = 0, nulls = 0, missed = 0;
  auto trace_thread = [&](std::uint32_t raw) { return thread_ids.try_emplace(raw, static_cast<ThreadId>(thread_ids.size())).first->second; };
  for (std::uint64_t seq = 0; seq < 60000; ++seq) {
    const auto thread = static_cast<std::uint32_t>(random() % kThreads) + 5;  // raw indexes need not start at 0
    const std::uint64_t address = 0x10000 + 16 * (random() % kPool);
    const bool grow = seq < 30000;  // first mostly allocations, then mostly frees
    const unsigned dice = random() % 100;
    CaptureRecord r{seq, address, 0, thread, CallOp::kFree, CallKind::kFree, 0, 0};
    if (dice < (grow ? 70u : 30u)) {
      r.op = CallOp::kAlloc;
      r.kind = dice % 2 == 0 ? CallKind::kMalloc : CallKind::kNew;
      r.size = random() % 3 == 0 ? 0 : random() % 5000;
      r.alignment_log2 = static_cast<std::uint8_t>(4 + random() % 3);
      if (auto it = live.find(address); it != live.end()) {
        ++missed;
        expected.push_back(TraceEvent{EventKind::kFree, it->second, 0, 0, 0, trace_thread(thread), 0});
        live.erase(it);
      }
      expected.push_back(TraceEvent{EventKind::kAlloc, next_id, std::max<std::uint64_t>(r.size, 1), std::uint64_t{1} << r.alignment_log2, 0,
                                    trace_thread(thread), 0});
      live[address] = next_id++;
    } else if (dice < 98) {
      if (auto it = live.find(address); it != live.end()) {
        expected.push_back(TraceEvent{EventKind::kFree, it->second, 0, 0, 0, trace_thread(thread), 0});
        live.erase(it);
      } else {
        ++unmatched;
      }
    } else {
      r.address = 0;
      ++nulls;
    }
    per_thread[thread - 5].push_back(r);
  }

  // Chunks of 1 to 300 records per thread, written to the spill in shuffled order.
  struct Pending {
    std::uint32_t thread;
    std::size_t begin, count;
  };
  std::vector<Pending> pending;
  for (std::uint32_t t = 0; t < kThreads; ++t) {
    for (std::size_t begin = 0; begin < per_thread[t].size();) {
      const std::size_t count = std::min<std::size_t>(random() % 300 + 1, per_thread[t].size() - begin);
      pending.push_back({t, begin, count});
      begin += count;
    }
  }
  std::shuffle(pending.begin(), pending.end(), random);
  FILE* spill = std::tmpfile();
  ASSERT_NE(spill, nullptr);
  std::vector<capture::SpillChunk> chunks;
  std::uint64_t offset = 0;
  for (const Pending& p : pending) {
    const CaptureRecord* first = &per_thread[p.thread][p.begin];
    ASSERT_EQ(std::fwrite(first, sizeof(CaptureRecord), p.count, spill), p.count);
    chunks.push_back({offset, p.count, first->seq});
    offset += p.count * sizeof(CaptureRecord);
  }
  std::fflush(spill);

  TraceMetadata metadata;
  metadata.set("source", "capture");
  TraceRecorder recorder;
  const capture::ConversionSummary summary = capture::convert_spill(fileno(spill), chunks, metadata, recorder);
  std::fclose(spill);

  ASSERT_EQ(recorder.events().size(), expected.size());
  TraceValidator validator;
  std::map<SlotId, std::uint64_t> alignment_of;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const TraceEvent& e = recorder.events()[i];
    SCOPED_TRACE("event " + std::to_string(i));
    ASSERT_EQ(validator.check(e, static_cast<TagId>(recorder.tag_names().size())), "");
    EXPECT_EQ(e.kind, expected[i].kind);
    EXPECT_EQ(e.id, expected[i].id);
    EXPECT_EQ(e.thread, expected[i].thread);
    if (e.kind == EventKind::kAlloc) {
      EXPECT_EQ(e.size, expected[i].size);
      EXPECT_EQ(e.alignment, expected[i].alignment);
      EXPECT_TRUE(recorder.tag(e) == "malloc" || recorder.tag(e) == "new");
      alignment_of[e.id] = e.alignment;
    } else {
      EXPECT_EQ(e.alignment, alignment_of[e.id]);  // a free carries its block's alignment
      EXPECT_TRUE(recorder.tag(e) == "free" || recorder.tag(e) == capture::kMissedFreeTag);
    }
  }
  EXPECT_EQ(summary.unmatched_frees, unmatched);
  EXPECT_EQ(summary.null_frees, nulls);
  EXPECT_EQ(summary.missed_frees, missed);
  EXPECT_EQ(summary.live_blocks, live.size());
  EXPECT_EQ(summary.threads, std::uint64_t{kThreads});
  const TraceMetadata& m = recorder.metadata();
  EXPECT_EQ(m.get("capture.unmatched_frees"), std::to_string(unmatched));
  EXPECT_EQ(m.get("capture.null_frees"), std::to_string(nulls));
  EXPECT_EQ(m.get("capture.missed_frees"), std::to_string(missed));
  EXPECT_EQ(m.get("capture.live_blocks"), std::to_string(live.size()));
  EXPECT_EQ(m.get("ends_empty"), live.empty() ? "true" : "false");
}

}  // namespace
}  // namespace tiermark
