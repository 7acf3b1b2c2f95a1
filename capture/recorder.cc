#include "capture/recorder.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "capture/spill_converter.h"
#include "workloads/binary_trace.h"

namespace tiermark::capture {

__thread ThreadState tl_thread __attribute__((tls_model("initial-exec"))) = {};
std::atomic<bool> g_recording{false};
std::atomic<std::uint64_t> RecordScope::g_seq{0};

// A thread's buffer: this header, then `capacity` records, in one private anonymous mapping (pages
// are touched only as records arrive, and the mapping is outside the heap the program sees).
struct ThreadBuffer {
  ThreadBuffer* prev = nullptr;  // registry links, under g_mutex
  ThreadBuffer* next = nullptr;
  std::size_t mapped_bytes = 0;
  std::uint32_t capacity = 0;
  std::atomic<std::uint32_t> count{0};  // written by the owner (reset by the mutex holder), read by the exit snapshot

  static constexpr std::size_t kHeaderBytes = 64;
  CaptureRecord* records() { return reinterpret_cast<CaptureRecord*>(reinterpret_cast<char*>(this) + kHeaderBytes); }
};
static_assert(sizeof(ThreadBuffer) <= ThreadBuffer::kHeaderBytes);

namespace {

// 4096 records = 128 KiB per thread: each spill write moves 128 KiB, and a thousand threads still
// map only what they fill.
constexpr std::uint32_t kDefaultBufferRecords = 4096;
constexpr std::uint32_t kMinBufferRecords = 16;
constexpr std::uint32_t kMaxBufferRecords = 1u << 24;
constexpr std::uint32_t kOrphanRecords = 256;
constexpr const char* kOutputVariable = "TIERMARK_CAPTURE_OUTPUT";
constexpr const char* kBufferVariable = "TIERMARK_CAPTURE_BUFFER";
constexpr const char* kVerboseVariable = "TIERMARK_CAPTURE_VERBOSE";
// Set by the first process that loads the library with TIERMARK_CAPTURE_OUTPUT set, inherited by
// its children: only that process writes the exact name, every other one appends its pid.
constexpr const char* kRootPidVariable = "TIERMARK_CAPTURE_ROOT_PID";

// Everything below is constant-initialised and trivially destructible: the library runs before
// constructors and after destructors of other objects, and must not depend on their order.
constinit std::mutex g_mutex;
ThreadBuffer* g_buffers = nullptr;  // registry of live buffers
CaptureRecord g_orphan[kOrphanRecords];
std::uint32_t g_orphan_count = 0;
int g_spill_fd = -1;
struct stat g_spill_identity = {};  // what g_spill_fd must still be: the program may close or dup2 over it
std::uint64_t g_spill_bytes = 0;
bool g_spill_failed = false;
alignas(std::vector<SpillChunk>) unsigned char g_chunks_storage[sizeof(std::vector<SpillChunk>)];
std::vector<SpillChunk>* g_chunks = nullptr;  // placement-new'd at init, never destroyed
bool g_initialized = false;
bool g_finishing = false;
bool g_verbose = false;
std::uint32_t g_buffer_records = kDefaultBufferRecords;
std::atomic<std::uint32_t> g_next_thread{0};
pthread_key_t g_thread_key;
pid_t g_pid = 0;
pid_t g_fork_parent = 0;  // non-zero in a child made by fork() without exec
char g_cwd[PATH_MAX] = ".";
char g_spill_dir[PATH_MAX] = ".";
char g_output_base[PATH_MAX] = "";  // absolute TIERMARK_CAPTURE_OUTPUT, or empty
bool g_output_root = true;
char g_output[PATH_MAX + 32] = "";

void message(const char* text, const char* detail = "") { std::fprintf(stderr, "tiermark-capture: %s%s\n", text, detail); }

// Makes `path` absolute against the working directory at start (the program may chdir later).
void absolute_path(const char* path, char* out, std::size_t size) {
  if (path[0] == '/') {
    std::snprintf(out, size, "%s", path);
  } else {
    std::snprintf(out, size, "%s/%s", g_cwd, path);
  }
}

void choose_output_locked() {
  if (g_output_base[0] == '\0') {
    std::snprintf(g_output, sizeof g_output, "%s/tiermark-capture.%d.tmt", g_cwd, static_cast<int>(g_pid));
  } else if (g_output_root) {
    std::snprintf(g_output, sizeof g_output, "%s", g_output_base);
  } else {
    std::snprintf(g_output, sizeof g_output, "%s.%d", g_output_base, static_cast<int>(g_pid));
  }
}

void fail_locked(const char* what) {
  if (!g_spill_failed) message(what, std::strerror(errno));
  g_spill_failed = true;
  g_recording.store(false, std::memory_order_relaxed);
}

// Lowest descriptor number for the spill: far from the 0-255 that programs dup2() onto by
// convention (bash keeps its script on 255).
constexpr int kSpillDescriptorFloor = 600;

bool open_spill_locked() {
  // O_TMPFILE: an inode without a name, so the spill disappears however the process ends.
  int fd = ::open(g_spill_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    char path[PATH_MAX + 64];
    std::snprintf(path, sizeof path, "%s/.tiermark-capture-spill.%d.XXXXXX", g_spill_dir, static_cast<int>(g_pid));
    fd = ::mkostemp(path, O_CLOEXEC);
    if (fd >= 0) ::unlink(path);
  }
  if (fd < 0) return false;
  if (const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, kSpillDescriptorFloor); high >= 0) {
    ::close(fd);
    fd = high;
  }
  g_spill_fd = fd;
  return ::fstat(fd, &g_spill_identity) == 0;
}

// False when the program closed the spill's descriptor or put another file on its number: writing
// on would damage the program's file, and the records written so far are gone. The inode number
// alone does not tell: a file created right after the spill was closed may reuse it. A file the
// program opened has a name (the spill has none), and dup2() clears close-on-exec.
bool spill_intact_locked() {
  struct stat now;
  const int flags = ::fcntl(g_spill_fd, F_GETFD);
  return flags >= 0 && (flags & FD_CLOEXEC) != 0 && ::fstat(g_spill_fd, &now) == 0 && now.st_nlink == 0 &&
         now.st_dev == g_spill_identity.st_dev && now.st_ino == g_spill_identity.st_ino &&
         static_cast<std::uint64_t>(now.st_size) == g_spill_bytes;
}

void write_chunk_locked(const CaptureRecord* records, std::uint32_t count) {
  if (count == 0 || g_spill_failed) return;
  if (g_spill_fd < 0 && !open_spill_locked()) return fail_locked("cannot create the spill file next to the output, recording stops: ");
  if (!spill_intact_locked()) {
    g_spill_fd = -1;  // no longer ours: never write, read or close it
    errno = EBADF;
    return fail_locked("the program closed or replaced the spill file's descriptor, recording stops: ");
  }
  const std::size_t bytes = std::size_t{count} * sizeof(CaptureRecord);
  const char* p = reinterpret_cast<const char*>(records);
  for (std::size_t done = 0; done < bytes;) {
    const ssize_t n = ::pwrite(g_spill_fd, p + done, bytes - done, static_cast<off_t>(g_spill_bytes + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_locked("cannot write the spill file, recording stops: ");
    done += static_cast<std::size_t>(n);
  }
  g_chunks->push_back(SpillChunk{g_spill_bytes, count, records[0].seq});
  g_spill_bytes += bytes;
}

void flush_full(ThreadBuffer* buffer) {
  std::lock_guard lock(g_mutex);
  if (!g_finishing) write_chunk_locked(buffer->records(), buffer->count.load(std::memory_order_relaxed));
  buffer->count.store(0, std::memory_order_relaxed);
}

void unlink_buffer_locked(ThreadBuffer* buffer) {
  if (buffer->prev != nullptr) buffer->prev->next = buffer->next;
  if (buffer->next != nullptr) buffer->next->prev = buffer->prev;
  if (g_buffers == buffer) g_buffers = buffer->next;
}

ThreadBuffer* map_buffer() {
  const std::size_t bytes = ThreadBuffer::kHeaderBytes + std::size_t{g_buffer_records} * sizeof(CaptureRecord);
  void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  auto* buffer = new (memory) ThreadBuffer;
  buffer->mapped_bytes = bytes;
  buffer->capacity = g_buffer_records;
  return buffer;
}

// pthread key destructor: the thread is exiting. Flush and drop its buffer; whatever it records
// after this (later key destructors, glibc's teardown) goes through the orphan buffer.
void on_thread_exit(void* value) {
  ThreadState& t = tl_thread;
  const bool saved_guard = t.guard;
  t.guard = true;
  auto* buffer = static_cast<ThreadBuffer*>(value);
  t.phase = kThreadOrphan;
  t.buffer = nullptr;
  {
    std::lock_guard lock(g_mutex);
    if (!g_finishing) write_chunk_locked(buffer->records(), buffer->count.load(std::memory_order_relaxed));
    unlink_buffer_locked(buffer);
  }
  ::munmap(buffer, buffer->mapped_bytes);
  t.guard = saved_guard;
}

// Fork: the child must not inherit a held mutex, nor the parent's unflushed records (the parent
// writes those itself), nor the parent's spill (a shared file offset and index). The prepare
// handler sets the guard so that allocations by fork handlers that run after it are not recorded
// (and cannot try to take the mutex this thread already holds).
void fork_prepare() {
  tl_thread.fork_saved_guard = tl_thread.guard;
  tl_thread.guard = true;
  g_mutex.lock();
}

void fork_parent() {
  g_mutex.unlock();
  tl_thread.guard = tl_thread.fork_saved_guard;
}

void fork_child() {
  ThreadBuffer* mine = tl_thread.phase == kThreadBuffered ? tl_thread.buffer : nullptr;
  for (ThreadBuffer* b = g_buffers; b != nullptr;) {
    ThreadBuffer* next = b->next;
    if (b != mine) ::munmap(b, b->mapped_bytes);  // those threads do not exist in the child
    b = next;
  }
  g_buffers = mine;
  if (mine != nullptr) {
    mine->prev = mine->next = nullptr;
    mine->count.store(0, std::memory_order_relaxed);
  }
  g_orphan_count = 0;
  if (g_spill_fd >= 0) ::close(g_spill_fd);
  g_spill_fd = -1;
  g_spill_bytes = 0;
  g_chunks->clear();
  g_fork_parent = g_pid;
  g_pid = ::getpid();
  g_output_root = false;
  choose_output_locked();
  g_mutex.unlock();
  tl_thread.guard = tl_thread.fork_saved_guard;
}

std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && text.back() == '\0') text.pop_back();
  // Arguments are NUL-separated; metadata values are one line.
  std::replace_if(text.begin(), text.end(), [](char c) { return c == '\0' || c == '\n' || c == '\r'; }, ' ');
  return text;
}

}  // namespace

RecordScope::RecordScope() {
  ThreadState& t = tl_thread;
  if (t.phase == kThreadBuffered) [[likely]] {
    buffer_ = t.buffer;
    return;
  }
  if (t.phase == kThreadNew) {
    t.index = g_next_thread.fetch_add(1, std::memory_order_relaxed);
    t.phase = kThreadOrphan;
    if (ThreadBuffer* buffer = map_buffer()) {
      {
        std::lock_guard lock(g_mutex);
        buffer->next = g_buffers;
        if (g_buffers != nullptr) g_buffers->prev = buffer;
        g_buffers = buffer;
      }
      ::pthread_setspecific(g_thread_key, buffer);
      t.buffer = buffer_ = buffer;
      t.phase = kThreadBuffered;
      return;
    }
  }
  g_mutex.lock();
}

RecordScope::~RecordScope() {
  if (buffer_ == nullptr) g_mutex.unlock();
}

void RecordScope::add(CallOp op, CallKind kind, const void* address, std::uint64_t size, std::uint64_t alignment,
                      std::uint64_t seq) {
  const CaptureRecord record{
      seq,
      reinterpret_cast<std::uintptr_t>(address),
      size,
      tl_thread.index,
      op,
      kind,
      static_cast<std::uint8_t>(alignment <= 1 ? 0 : std::countr_zero(std::bit_ceil(alignment))),
      0,
  };
  if (buffer_ != nullptr) {
    const std::uint32_t n = buffer_->count.load(std::memory_order_relaxed);
    buffer_->records()[n] = record;
    buffer_->count.store(n + 1, std::memory_order_release);
    if (n + 1 == buffer_->capacity) flush_full(buffer_);
    return;
  }
  if (g_finishing) return;  // the mutex is held: see the constructor
  g_orphan[g_orphan_count++] = record;
  if (g_orphan_count == kOrphanRecords) {
    write_chunk_locked(g_orphan, g_orphan_count);
    g_orphan_count = 0;
  }
}

namespace {

// Reads TIERMARK_CAPTURE_OUTPUT into g_output_base and the spill directory.
void read_output_variable() {
  const char* output = std::getenv(kOutputVariable);
  if (output != nullptr && *output != '\0') {
    absolute_path(output, g_output_base, sizeof g_output_base);
    std::snprintf(g_spill_dir, sizeof g_spill_dir, "%s", g_output_base);
    *std::strrchr(g_spill_dir, '/') = '\0';  // absolute, so there is a slash
    if (g_spill_dir[0] == '\0') std::snprintf(g_spill_dir, sizeof g_spill_dir, "/");
  } else {
    g_output_base[0] = '\0';
    std::snprintf(g_spill_dir, sizeof g_spill_dir, "%s", g_cwd);
  }
}

}  // namespace

void recorder_init() {
  g_pid = ::getpid();
  if (::getcwd(g_cwd, sizeof g_cwd) == nullptr) std::snprintf(g_cwd, sizeof g_cwd, ".");
  if (const char* records = std::getenv(kBufferVariable); records != nullptr && *records != '\0') {
    const unsigned long value = std::strtoul(records, nullptr, 10);
    g_buffer_records = static_cast<std::uint32_t>(std::clamp<unsigned long>(value, kMinBufferRecords, kMaxBufferRecords));
  }
  if (const char* verbose = std::getenv(kVerboseVariable); verbose != nullptr && *verbose != '\0' && *verbose != '0') g_verbose = true;
  read_output_variable();
  g_chunks = new (g_chunks_storage) std::vector<SpillChunk>();
  if (::pthread_key_create(&g_thread_key, on_thread_exit) != 0) {
    message("no pthread key left; nothing is recorded");
    return;
  }
  ::pthread_atfork(fork_prepare, fork_parent, fork_child);
  g_initialized = true;
  g_recording.store(true, std::memory_order_relaxed);
}

void recorder_choose_output() {
  std::lock_guard lock(g_mutex);
  // Again: a first allocation made before libc's own initialisation set `environ` saw no variables.
  if (g_spill_fd < 0) read_output_variable();
  if (g_output_base[0] != '\0') {
    if (const char* root = std::getenv(kRootPidVariable); root != nullptr) {
      g_output_root = std::strtol(root, nullptr, 10) == g_pid;
    } else {
      char pid[16];
      std::snprintf(pid, sizeof pid, "%d", static_cast<int>(g_pid));
      ::setenv(kRootPidVariable, pid, 1);
      g_output_root = true;
    }
  }
  choose_output_locked();
}

void recorder_finish() {
  tl_thread.guard = true;  // for good: this thread's remaining calls are the process's teardown
  std::vector<SpillChunk> chunks;
  int fd = -1;
  {
    std::lock_guard lock(g_mutex);
    if (!g_initialized || g_finishing) return;
    g_finishing = true;
    g_recording.store(false, std::memory_order_relaxed);
    // Threads still running keep appending to their buffers; the records they published before
    // this point are flushed, later ones are dropped (docs/capture.md).
    for (ThreadBuffer* b = g_buffers; b != nullptr; b = b->next) {
      write_chunk_locked(b->records(), b->count.load(std::memory_order_acquire));
    }
    write_chunk_locked(g_orphan, g_orphan_count);
    if (g_spill_fd >= 0 && !g_spill_failed && !spill_intact_locked()) {
      g_spill_fd = -1;
      errno = EBADF;
      fail_locked("the program closed or replaced the spill file's descriptor: ");
    }
    if (g_spill_failed) {
      message("no trace written");
      return;
    }
    if (g_output[0] == '\0') choose_output_locked();
    chunks = *g_chunks;
    fd = g_spill_fd;
  }

  const auto started = std::chrono::steady_clock::now();
  const std::string output = g_output;
  const std::string temporary = output + ".tmp-" + std::to_string(g_pid);
  try {
    TraceMetadata metadata;
    metadata.set("source", "capture");
    metadata.set("capture.command", command_line());
    metadata.set("capture.pid", std::to_string(g_pid));
    metadata.set("capture.ppid", std::to_string(g_fork_parent != 0 ? g_fork_parent : ::getppid()));
    if (g_fork_parent != 0) metadata.set("capture.forked", "true");
    ConversionSummary summary;
    std::uint64_t bytes = 0;
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error("cannot create " + temporary + ": " + std::strerror(errno));
      BinaryTraceWriter writer(out);
      summary = convert_spill(fd, std::move(chunks), std::move(metadata), writer);
      bytes = writer.bytes_written();
      out.close();
      if (!out) throw std::runtime_error("cannot write " + temporary);
    }
    // The trace appears under its name whole or not at all.
    if (std::rename(temporary.c_str(), output.c_str()) != 0) {
      throw std::runtime_error("cannot rename " + temporary + " to " + output + ": " + std::strerror(errno));
    }
    if (g_verbose) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::fprintf(stderr,
                   "tiermark-capture: %s: %llu events (%llu records, %llu threads, %llu unmatched frees), %llu bytes, "
                   "converted in %.3f s\n",
                   output.c_str(), static_cast<unsigned long long>(summary.events),
                   static_cast<unsigned long long>(summary.records), static_cast<unsigned long long>(summary.threads),
                   static_cast<unsigned long long>(summary.unmatched_frees), static_cast<unsigned long long>(bytes), seconds);
    }
  } catch (const std::exception& e) {
    ::unlink(temporary.c_str());
    message("no trace written: ", e.what());
  }
  if (fd >= 0) ::close(fd);
}

}  // namespace tiermark::capture
