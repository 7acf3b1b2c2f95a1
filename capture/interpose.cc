// The interposed allocation functions of libtiermark_capture.so: malloc, calloc, realloc, free,
// posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, and every global
// operator new and delete (plain, array, nothrow, sized, aligned). Each forwards to the next
// definition in the lookup order (glibc's, libstdc++'s), found with dlsym(RTLD_NEXT), and records
// the call unless the calling thread's guard is set.
//
// Bootstrap: the real functions are looked up at the first call, and dlsym may itself call malloc
// or calloc. Calls made before the lookup is complete are served from a static arena; arena blocks
// are never handed to the real free (free ignores them, realloc moves them out).
//
// Ordering: a free is recorded before the real free and an allocation after the real allocation
// returns, so a reused address's free always has the smaller seq (capture_record.h).
#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "capture/recorder.h"

#define TIERMARK_CAPTURE_EXPORT __attribute__((visibility("default")))

namespace tiermark::capture {
namespace {

// What malloc and the default operator new guarantee on x86-64 (alignof(max_align_t), and
// __STDCPP_DEFAULT_NEW_ALIGNMENT__ in g++).
constexpr std::size_t kMallocAlignment = 16;

struct RealFunctions {
  void* (*malloc)(std::size_t);
  void* (*calloc)(std::size_t, std::size_t);
  void* (*realloc)(void*, std::size_t);
  void (*free)(void*);
  int (*posix_memalign)(void**, std::size_t, std::size_t);
  void* (*aligned_alloc)(std::size_t, std::size_t);
  void* (*memalign)(std::size_t, std::size_t);
  void* (*valloc)(std::size_t);
  void* (*pvalloc)(std::size_t);
  std::size_t (*malloc_usable_size)(void*);

  // Index 0: operator new / delete, index 1: operator new[] / delete[].
  void* (*new_plain[2])(std::size_t);
  void* (*new_nothrow[2])(std::size_t, const std::nothrow_t&);
  void* (*new_aligned[2])(std::size_t, std::align_val_t);
  void* (*new_aligned_nothrow[2])(std::size_t, std::align_val_t, const std::nothrow_t&);
  void (*delete_plain[2])(void*);
  void (*delete_nothrow[2])(void*, const std::nothrow_t&);
  void (*delete_sized[2])(void*, std::size_t);
  void (*delete_aligned[2])(void*, std::align_val_t);
  void (*delete_aligned_nothrow[2])(void*, std::align_val_t, const std::nothrow_t&);
  void (*delete_sized_aligned[2])(void*, std::size_t, std::align_val_t);
};
constinit RealFunctions real{};
std::size_t g_page_size = 4096;

// ---- bootstrap arena ----

// glibc 2.36's dlsym allocates a few hundred bytes at most (its error state); 64 KiB leaves room for
// a loader that does more.
constexpr std::size_t kArenaBytes = 64 * 1024;
alignas(4096) constinit unsigned char g_arena[kArenaBytes] = {};
constinit std::atomic<std::size_t> g_arena_used{0};

bool in_arena(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  return b >= g_arena && b < g_arena + kArenaBytes;
}

// Each block is preceded by its size, for realloc and malloc_usable_size. Never reused, so the
// arena's zero initialisation makes calloc free of work.
void* arena_alloc(std::size_t size, std::size_t alignment) {
  alignment = std::max(alignment, kMallocAlignment);
  std::size_t used = g_arena_used.load(std::memory_order_relaxed);
  while (true) {
    const std::size_t start = (used + sizeof(std::size_t) + alignment - 1) / alignment * alignment;
    if (start > kArenaBytes || size > kArenaBytes - start) {
      errno = ENOMEM;
      return nullptr;
    }
    if (g_arena_used.compare_exchange_weak(used, start + size, std::memory_order_relaxed)) {
      std::memcpy(g_arena + start - sizeof(std::size_t), &size, sizeof size);
      return g_arena + start;
    }
  }
}

std::size_t arena_size(const void* p) {
  std::size_t size;
  std::memcpy(&size, static_cast<const unsigned char*>(p) - sizeof size, sizeof size);
  return size;
}

// ---- looking up the real functions ----

template <class Function>
void resolve(Function& function, const char* name, bool required) {
  void* symbol = ::dlsym(RTLD_NEXT, name);
  if (symbol == nullptr && required) {
    static const char kPrefix[] = "tiermark-capture: cannot find the real ";
    [[maybe_unused]] ssize_t ignored = ::write(2, kPrefix, sizeof kPrefix - 1);
    ignored = ::write(2, name, std::strlen(name));
    ignored = ::write(2, "\n", 1);
    std::abort();
  }
  function = reinterpret_cast<Function>(symbol);
}

void resolve_all() {
  resolve(real.malloc, "malloc", true);
  resolve(real.calloc, "calloc", true);
  resolve(real.realloc, "realloc", true);
  resolve(real.free, "free", true);
  resolve(real.posix_memalign, "posix_memalign", true);
  resolve(real.aligned_alloc, "aligned_alloc", true);
  resolve(real.memalign, "memalign", true);
  resolve(real.valloc, "valloc", true);
  resolve(real.pvalloc, "pvalloc", true);
  resolve(real.malloc_usable_size, "malloc_usable_size", true);
  // Itanium C++ ABI manglings; libstdc++ has had every one since GCC 7 (aligned new).
  resolve(real.new_plain[0], "_Znwm", true);
  resolve(real.new_plain[1], "_Znam", true);
  resolve(real.new_nothrow[0], "_ZnwmRKSt9nothrow_t", true);
  resolve(real.new_nothrow[1], "_ZnamRKSt9nothrow_t", true);
  resolve(real.new_aligned[0], "_ZnwmSt11align_val_t", true);
  resolve(real.new_aligned[1], "_ZnamSt11align_val_t", true);
  resolve(real.new_aligned_nothrow[0], "_ZnwmSt11align_val_tRKSt9nothrow_t", true);
  resolve(real.new_aligned_nothrow[1], "_ZnamSt11align_val_tRKSt9nothrow_t", true);
  resolve(real.delete_plain[0], "_ZdlPv", true);
  resolve(real.delete_plain[1], "_ZdaPv", true);
  resolve(real.delete_nothrow[0], "_ZdlPvRKSt9nothrow_t", true);
  resolve(real.delete_nothrow[1], "_ZdaPvRKSt9nothrow_t", true);
  resolve(real.delete_sized[0], "_ZdlPvm", true);
  resolve(real.delete_sized[1], "_ZdaPvm", true);
  resolve(real.delete_aligned[0], "_ZdlPvSt11align_val_t", true);
  resolve(real.delete_aligned[1], "_ZdaPvSt11align_val_t", true);
  resolve(real.delete_aligned_nothrow[0], "_ZdlPvSt11align_val_tRKSt9nothrow_t", true);
  resolve(real.delete_aligned_nothrow[1], "_ZdaPvSt11align_val_tRKSt9nothrow_t", true);
  resolve(real.delete_sized_aligned[0], "_ZdlPvmSt11align_val_t", true);
  resolve(real.delete_sized_aligned[1], "_ZdaPvmSt11align_val_t", true);
}

enum : int { kUninitialised, kResolving, kReady };
constinit std::atomic<int> g_state{kUninitialised};

[[gnu::noinline]] bool initialise() {
  int expected = kUninitialised;
  if (!g_state.compare_exchange_strong(expected, kResolving, std::memory_order_acq_rel)) {
    return expected == kReady;  // kResolving: a call from inside dlsym (or a racing thread) uses the arena
  }
  resolve_all();
  if (const long page = ::sysconf(_SC_PAGESIZE); page > 0) g_page_size = static_cast<std::size_t>(page);
  g_state.store(kReady, std::memory_order_release);
  const bool saved_guard = tl_thread.guard;
  tl_thread.guard = true;
  recorder_init();
  tl_thread.guard = saved_guard;
  return true;
}

// True once the real functions are known (looking them up at the first call).
inline bool ready() { return g_state.load(std::memory_order_acquire) == kReady || initialise(); }

// Runs `call` (the real allocation), recording its result as an allocation of `size` bytes.
template <class Call>
inline void* traced_alloc(CallKind kind, std::size_t size, std::size_t alignment, Call call) {
  if (!should_record()) return call();
  GuardScope guard;
  void* p = call();
  if (p != nullptr) record_alloc(kind, p, size, alignment);
  return p;
}

// Records a free of `p`, then runs `call` (the real free) under the guard: libstdc++'s sized delete
// calls the plain one and every delete calls free, none of which may be recorded again.
template <class Call>
inline void traced_free(CallKind kind, void* p, Call call) {
  if (!should_record()) return call();
  GuardScope guard;
  record_free(kind, p);
  call();
}

void* arena_new(std::size_t size, std::size_t alignment) {
  void* p = arena_alloc(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

inline int array(CallKind kind) { return kind == CallKind::kNewArray ? 1 : 0; }
inline CallKind delete_kind(int a) { return a == 0 ? CallKind::kDelete : CallKind::kDeleteArray; }

void* new_plain(CallKind kind, std::size_t size) {
  if (!ready()) return arena_new(size, kMallocAlignment);
  return traced_alloc(kind, size, kMallocAlignment, [&] { return real.new_plain[array(kind)](size); });
}

void* new_nothrow(CallKind kind, std::size_t size, const std::nothrow_t& tag) noexcept {
  if (!ready()) return arena_alloc(size, kMallocAlignment);
  return traced_alloc(kind, size, kMallocAlignment, [&] { return real.new_nothrow[array(kind)](size, tag); });
}

void* new_aligned(CallKind kind, std::size_t size, std::align_val_t alignment) {
  if (!ready()) return arena_new(size, static_cast<std::size_t>(alignment));
  return traced_alloc(kind, size, static_cast<std::size_t>(alignment),
                      [&] { return real.new_aligned[array(kind)](size, alignment); });
}

void* new_aligned_nothrow(CallKind kind, std::size_t size, std::align_val_t alignment, const std::nothrow_t& tag) noexcept {
  if (!ready()) return arena_alloc(size, static_cast<std::size_t>(alignment));
  return traced_alloc(kind, size, static_cast<std::size_t>(alignment),
                      [&] { return real.new_aligned_nothrow[array(kind)](size, alignment, tag); });
}

// Deletes: an arena block (only dlsym's, in practice never deleted) is simply dropped.
template <class Call>
inline void delete_any(int a, void* p, Call call) {
  if (in_arena(p) || !ready()) return;
  traced_free(delete_kind(a), p, call);
}

}  // namespace
}  // namespace tiermark::capture

using namespace tiermark::capture;  // NOLINT: the exported definitions below must be global

extern "C" {

TIERMARK_CAPTURE_EXPORT void* malloc(std::size_t size) noexcept {
  if (!ready()) return arena_alloc(size, kMallocAlignment);
  return traced_alloc(CallKind::kMalloc, size, kMallocAlignment, [&] { return real.malloc(size); });
}

TIERMARK_CAPTURE_EXPORT void* calloc(std::size_t count, std::size_t size) noexcept {
  std::size_t bytes;
  if (__builtin_mul_overflow(count, size, &bytes)) bytes = SIZE_MAX;  // the real calloc fails; nothing is recorded
  if (!ready()) return bytes == SIZE_MAX ? nullptr : arena_alloc(bytes, kMallocAlignment);
  return traced_alloc(CallKind::kCalloc, bytes, kMallocAlignment, [&] { return real.calloc(count, size); });
}

TIERMARK_CAPTURE_EXPORT void free(void* p) noexcept {
  if (in_arena(p) || !ready()) return;
  traced_free(CallKind::kFree, p, [&] { real.free(p); });
}

TIERMARK_CAPTURE_EXPORT void* realloc(void* p, std::size_t size) noexcept {
  if (in_arena(p)) {
    // Moved out of the arena, to a real block: recorded as an allocation (the arena block was not).
    void* q = ready() ? malloc(size) : arena_alloc(size, kMallocAlignment);
    if (q != nullptr) std::memcpy(q, p, std::min(size, arena_size(p)));
    return q;
  }
  if (!ready()) return arena_alloc(size, kMallocAlignment);  // p is null: nothing real exists yet
  if (!should_record()) return real.realloc(p, size);
  GuardScope guard;
  if (p == nullptr) {
    void* q = real.realloc(nullptr, size);
    if (q != nullptr) record_alloc(CallKind::kRealloc, q, size, kMallocAlignment);
    return q;
  }
  RecordScope scope;
  const std::uint64_t free_seq = scope.take_seq();
  void* q = real.realloc(p, size);
  if (q != nullptr) {
    scope.add(CallOp::kFree, CallKind::kRealloc, p, 0, 0, free_seq);
    scope.add(CallOp::kAlloc, CallKind::kRealloc, q, size, kMallocAlignment, scope.take_seq());
  } else if (size == 0) {
    scope.add(CallOp::kFree, CallKind::kRealloc, p, 0, 0, free_seq);  // glibc: realloc(p, 0) frees p
  }
  return q;
}

TIERMARK_CAPTURE_EXPORT int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  if (!ready()) {
    void* p = arena_alloc(size, alignment);
    if (p == nullptr) return ENOMEM;
    *out = p;
    return 0;
  }
  if (!should_record()) return real.posix_memalign(out, alignment, size);
  GuardScope guard;
  const int result = real.posix_memalign(out, alignment, size);
  if (result == 0) record_alloc(CallKind::kPosixMemalign, *out, size, alignment);
  return result;
}

TIERMARK_CAPTURE_EXPORT void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  if (!ready()) return arena_alloc(size, alignment);
  return traced_alloc(CallKind::kAlignedAlloc, size, alignment, [&] { return real.aligned_alloc(alignment, size); });
}

TIERMARK_CAPTURE_EXPORT void* memalign(std::size_t alignment, std::size_t size) noexcept {
  if (!ready()) return arena_alloc(size, alignment);
  return traced_alloc(CallKind::kMemalign, size, alignment, [&] { return real.memalign(alignment, size); });
}

TIERMARK_CAPTURE_EXPORT void* valloc(std::size_t size) noexcept {
  if (!ready()) return arena_alloc(size, 4096);
  return traced_alloc(CallKind::kValloc, size, g_page_size, [&] { return real.valloc(size); });
}

TIERMARK_CAPTURE_EXPORT void* pvalloc(std::size_t size) noexcept {
  if (!ready()) return arena_alloc(size, 4096);
  // pvalloc rounds the size up to whole pages (glibc manual), and that is what the caller may use.
  const std::size_t rounded = size == 0 ? g_page_size : (size + g_page_size - 1) / g_page_size * g_page_size;
  return traced_alloc(CallKind::kPvalloc, rounded, g_page_size, [&] { return real.pvalloc(size); });
}

TIERMARK_CAPTURE_EXPORT std::size_t malloc_usable_size(void* p) noexcept {
  if (in_arena(p)) return arena_size(p);
  if (!ready()) return 0;
  return real.malloc_usable_size(p);
}

}  // extern "C"

// ---- C++ operators ----

TIERMARK_CAPTURE_EXPORT void* operator new(std::size_t size) { return new_plain(CallKind::kNew, size); }
TIERMARK_CAPTURE_EXPORT void* operator new[](std::size_t size) { return new_plain(CallKind::kNewArray, size); }
TIERMARK_CAPTURE_EXPORT void* operator new(std::size_t size, const std::nothrow_t& tag) noexcept {
  return new_nothrow(CallKind::kNew, size, tag);
}
TIERMARK_CAPTURE_EXPORT void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept {
  return new_nothrow(CallKind::kNewArray, size, tag);
}
TIERMARK_CAPTURE_EXPORT void* operator new(std::size_t size, std::align_val_t alignment) {
  return new_aligned(CallKind::kNew, size, alignment);
}
TIERMARK_CAPTURE_EXPORT void* operator new[](std::size_t size, std::align_val_t alignment) {
  return new_aligned(CallKind::kNewArray, size, alignment);
}
TIERMARK_CAPTURE_EXPORT void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t& tag) noexcept {
  return new_aligned_nothrow(CallKind::kNew, size, alignment, tag);
}
TIERMARK_CAPTURE_EXPORT void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t& tag) noexcept {
  return new_aligned_nothrow(CallKind::kNewArray, size, alignment, tag);
}

TIERMARK_CAPTURE_EXPORT void operator delete(void* p) noexcept {
  delete_any(0, p, [&] { real.delete_plain[0](p); });
}
TIERMARK_CAPTURE_EXPORT void operator delete[](void* p) noexcept {
  delete_any(1, p, [&] { real.delete_plain[1](p); });
}
TIERMARK_CAPTURE_EXPORT void operator delete(void* p, const std::nothrow_t& tag) noexcept {
  delete_any(0, p, [&] { real.delete_nothrow[0](p, tag); });
}
TIERMARK_CAPTURE_EXPORT void operator delete[](void* p, const std::nothrow_t& tag) noexcept {
  delete_any(1, p, [&] { real.delete_nothrow[1](p, tag); });
}
TIERMARK_CAPTURE_EXPORT void operator delete(void* p, std::size_t size) noexcept {
  delete_any(0, p, [&] { real.delete_sized[0](p, size); });
}
TIERMARK_CAPTURE_EXPORT void operator delete[](void* p, std::size_t size) noexcept {
  delete_any(1, p, [&] { real.delete_sized[1](p, size); });
}
TIERMARK_CAPTURE_EXPORT void operator delete(void* p, std::align_val_t alignment) noexcept {
  delete_any(0, p, [&] { real.delete_aligned[0](p, alignment); });
}
TIERMARK_CAPTURE_EXPORT void operator delete[](void* p, std::align_val_t alignment) noexcept {
  delete_any(1, p, [&] { real.delete_aligned[1](p, alignment); });
}
TIERMARK_CAPTURE_EXPORT void operator delete(void* p, std::align_val_t alignment, const std::nothrow_t& tag) noexcept {
  delete_any(0, p, [&] { real.delete_aligned_nothrow[0](p, alignment, tag); });
}
TIERMARK_CAPTURE_EXPORT void operator delete[](void* p, std::align_val_t alignment, const std::nothrow_t& tag) noexcept {
  delete_any(1, p, [&] { real.delete_aligned_nothrow[1](p, alignment, tag); });
}
TIERMARK_CAPTURE_EXPORT void operator delete(void* p, std::size_t size, std::align_val_t alignment) noexcept {
  delete_any(0, p, [&] { real.delete_sized_aligned[0](p, size, alignment); });
}
TIERMARK_CAPTURE_EXPORT void operator delete[](void* p, std::size_t size, std::align_val_t alignment) noexcept {
  delete_any(1, p, [&] { real.delete_sized_aligned[1](p, size, alignment); });
}

// ---- library lifetime ----

namespace {

// Runs before main (and after the libraries this one depends on); the first allocation may
// already have initialised the recorder, in which case only the output name is left to fix.
__attribute__((constructor)) void capture_load() {
  if (!ready()) return;
  const bool saved_guard = tl_thread.guard;
  tl_thread.guard = true;
  recorder_choose_output();
  tl_thread.guard = saved_guard;
}

// Runs in exit(), after the program's atexit handlers and its own destructors (the dynamic loader
// finalises this library after the executable), so their frees are in the trace.
__attribute__((destructor)) void capture_unload() { recorder_finish(); }

}  // namespace
