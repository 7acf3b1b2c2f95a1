// What the system.* rows of every command share (`tiermark replay`'s and `tiermark stress`'s): the
// malloc libraries and where they are found, the child process that runs with one of them preloaded
// (`/proc/self/exe <hidden command> ...`, LD_PRELOAD set to the library, or removed for glibc), and
// what such a child checks and measures about itself.
//
// Why VmHWM and not getrusage's ru_maxrss for a child's peak: on Linux a child's ru_maxrss starts at
// the high-water mark of the process it was spawned from (exec keeps the old address space's maximum
// in the signal struct), so a 1.5 MB child of a 500 MB parent reports 500 MB (measured on Debian 12,
// kernel 6.1, with posix_spawn). VmHWM in /proc/self/status is the child's own address space only,
// and writing "5" to /proc/self/clear_refs resets it to the current RSS (proc(5)).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tiermark {

// A system.* row whose library is not installed: it is skipped with this note (naming the file and
// the Debian package), even when named explicitly, and the run goes on.
class MallocLibraryMissing : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The system.* row names, in the order `--allocator all` runs them.
std::vector<std::string> system_malloc_specs();
bool is_system_malloc_spec(std::string_view spec);

// The file of shared library `file_name` (`libjemalloc.so.2`): the first directory holding it of
// TIERMARK_MALLOC_LIBRARY_DIRS (a colon list, which replaces the default search when set: tests use
// it to simulate a missing library) or else the multiarch and plain library directories of this
// system (/usr/lib/x86_64-linux-gnu, /lib/..., /usr/local/lib, /usr/lib, /usr/lib64).
std::optional<std::string> find_malloc_library(std::string_view file_name);

// A system.* row resolved: its name, the malloc that must serve its child (what active_malloc_name()
// says: glibc, jemalloc, ...) and the library file to preload ("" for glibc).
struct SystemMalloc {
  std::string spec;
  std::string malloc;
  std::string preload;
};
// Throws InputError for an unknown name or options (there are none), MallocLibraryMissing for a
// library that is not installed.
SystemMalloc resolve_system_malloc(std::string_view spec);

// Runs `/proc/self/exe args...` (the very binary running now, even if rebuilt since) with LD_PRELOAD
// = `preload` (removed when empty) and returns what it printed on stdout; its stderr is this
// process's. Throws PassFailure unless it exits with 0.
std::string run_malloc_child(const std::vector<std::string>& args, const std::string& preload);

// --- In the child. ---

// Throws InputError "<command>: malloc here is X, not Y (LD_PRELOAD='...')" unless `expected` serves
// this process: a library that was not preloaded must not be measured as itself.
void require_active_malloc(std::string_view command, const std::string& expected);
// The object that defines the malloc this process calls, as the dynamic linker found it.
std::string malloc_object();
// Resets VmHWM to the current RSS; false when the kernel has no /proc/self/clear_refs.
bool reset_peak_rss();

}  // namespace tiermark
