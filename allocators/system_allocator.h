// SystemAllocator (`system`): this process's malloc and free, whichever library provides them (glibc,
// or jemalloc, mimalloc or tcmalloc when preloaded). It ignores the upstream: the C library gets its
// memory from the kernel itself. Allocated bytes are measured with malloc_usable_size; reserved
// memory is invisible from inside the process, so stats().reserved_known is false (the replay
// issue reads peak RSS from a child process instead).
#pragma once

#include <malloc.h>

#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "allocators/allocator.h"

namespace tiermark {

class SystemAllocator final {
 public:
  static constexpr std::string_view kName = "system";
  static constexpr std::string_view kDescription =
      "this process's malloc/free (glibc, or jemalloc/mimalloc/tcmalloc when preloaded); ignores the upstream";
  static std::span<const OptionSpec> option_specs();

  SystemAllocator(const Options& options, Upstream& upstream);

  void* allocate(std::size_t size, std::size_t alignment, StreamId /*stream*/) noexcept {
    void* p = nullptr;
    if (alignment <= kDefaultAlignment) {
      p = std::malloc(size);
    } else if (posix_memalign(&p, alignment, size) != 0) {
      p = nullptr;
    }
    if (p == nullptr) {
      stats_.on_failure();
      return nullptr;
    }
    stats_.on_allocate(size, malloc_usable_size(p));
    return p;
  }

  void deallocate(void* p, std::size_t size, std::size_t /*alignment*/, StreamId /*stream*/) noexcept {
    stats_.on_deallocate(size, malloc_usable_size(p));
    std::free(p);
  }

  AllocatorStats stats() const { return stats_.snapshot(0, /*reserved_known=*/false); }
  std::string check_invariants() const;
  void trim() { malloc_trim(0); }

 private:
  StatsRecorder stats_;
};

// Which malloc serves this process: "jemalloc", "tcmalloc", "mimalloc" or "glibc", found by looking
// for each library's own entry points (mallctl, tc_malloc, mi_malloc) among the loaded symbols.
std::string active_malloc_name();

}  // namespace tiermark
