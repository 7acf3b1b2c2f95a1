// The recorder: where intercepted calls go between the interposed functions (interpose.cc) and the
// trace written at exit (spill_converter.h).
//
// Each thread appends raw records to its own buffer (mmap'ed, TIERMARK_CAPTURE_BUFFER records); a
// full buffer is written under one mutex to the spill file, an unnamed file (O_TMPFILE, or created
// and unlinked at once) next to the output, so memory stays bounded for any run length and the spill
// vanishes however the process ends. A thread's buffer is flushed by a pthread key destructor when
// it exits; calls it makes after that (other libraries' key destructors, glibc's own teardown) go to
// a shared orphan buffer under the mutex. At exit the remaining buffers are flushed and the spill is
// converted to the trace.
//
// Invariants: a thread appends to its buffer without a lock; only the mutex holder resets a
// buffer's count or writes the spill, and the exit snapshot reads a buffer's first `count` records
// under the mutex (the owner writes a record before publishing the count). The per-thread guard is
// set whenever the library itself runs, so its own allocations (buffers index, the writer) and the
// runtime's allocations inside an interposed call (operator new calling malloc) are never recorded.
#pragma once

#include <atomic>
#include <cstdint>

#include "capture/capture_record.h"

namespace tiermark::capture {

struct ThreadBuffer;

// Plain data in initial-exec TLS: no constructor and no TLS wrapper call, so it is usable from the
// first malloc of the process, before any constructor ran and inside the dynamic loader's calls.
struct ThreadState {
  bool guard;             // the library (or the real function under an interposed call) is running
  bool fork_saved_guard;  // `guard` across fork(): the fork handlers set it
  std::uint8_t phase;     // ThreadPhase
  std::uint32_t index;    // recorder thread index, given at the thread's first record
  ThreadBuffer* buffer;
};

enum ThreadPhase : std::uint8_t {
  kThreadNew = 0,      // no record yet
  kThreadBuffered = 1, // records go to `buffer`
  kThreadOrphan = 2,   // exiting (its buffer was flushed) or no buffer could be mapped: the orphan buffer
};

extern __thread ThreadState tl_thread __attribute__((tls_model("initial-exec")));
extern std::atomic<bool> g_recording;  // set once initialised; cleared at exit or on a spill error

inline bool should_record() { return !tl_thread.guard && g_recording.load(std::memory_order_relaxed); }

// Sets the guard for a scope that was entered with it clear.
class GuardScope {
 public:
  GuardScope() { tl_thread.guard = true; }
  ~GuardScope() { tl_thread.guard = false; }
  GuardScope(const GuardScope&) = delete;
  GuardScope& operator=(const GuardScope&) = delete;
};

// The records of one intercepted call. In the orphan phase it holds the recorder mutex for its
// lifetime, so that the orphan buffer, shared by threads, still receives seqs in ascending order.
class RecordScope {
 public:
  RecordScope();
  ~RecordScope();
  RecordScope(const RecordScope&) = delete;
  RecordScope& operator=(const RecordScope&) = delete;

  std::uint64_t take_seq() { return g_seq.fetch_add(1, std::memory_order_relaxed); }
  void add(CallOp op, CallKind kind, const void* address, std::uint64_t size, std::uint64_t alignment, std::uint64_t seq);

 private:
  static std::atomic<std::uint64_t> g_seq;
  ThreadBuffer* buffer_ = nullptr;  // nullptr: the orphan buffer
};

// An allocation that returned `address`; call after the real function.
inline void record_alloc(CallKind kind, const void* address, std::uint64_t size, std::uint64_t alignment) {
  RecordScope scope;
  scope.add(CallOp::kAlloc, kind, address, size, alignment, scope.take_seq());
}

// A free of `address`; call before the real function.
inline void record_free(CallKind kind, const void* address) {
  RecordScope scope;
  scope.add(CallOp::kFree, kind, address, 0, 0, scope.take_seq());
}

// Once, at the first intercepted call, with the guard set: reads the environment and registers the
// thread-exit and fork handlers. Allocation-free apart from pthread_atfork's own.
void recorder_init();
// From the library constructor: fixes the output file name (see docs/capture.md for the rule).
void recorder_choose_output();
// From the library destructor: flushes every buffer, converts the spill, writes the trace.
void recorder_finish();

}  // namespace tiermark::capture
