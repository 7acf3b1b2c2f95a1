#include "harness/malloc_child.h"
#include "harness/proc_files.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "allocators/system_allocator.h"
#include "common/input_error.h"
#include "common/spec.h"
#include "replay/replay_runner.h"

extern char** environ;

namespace tiermark {
namespace {

struct MallocLibrary {
  std::string_view spec;     // system.jemalloc
  std::string_view malloc;   // what active_malloc_name() says when it serves the process
  std::string_view file;     // "" for glibc: nothing is preloaded
  std::string_view package;  // the Debian package with `file` (tools/install-deps.sh installs them)
};

// tcmalloc is gperftools' minimal build (no heap profiler), as tools/suite.sh preloads it.
constexpr MallocLibrary kLibraries[] = {
    {"system.glibc", "glibc", "", ""},
    {"system.jemalloc", "jemalloc", "libjemalloc.so.2", "libjemalloc2"},
    {"system.mimalloc", "mimalloc", "libmimalloc.so.2", "libmimalloc2.0"},
    {"system.tcmalloc", "tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"},
};

const MallocLibrary* library_of(std::string_view name) {
  for (const MallocLibrary& library : kLibraries) {
    if (library.spec == name) return &library;
  }
  return nullptr;
}

// "exited with status 2", "was killed by signal 11 (Segmentation fault)".
std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    return "was killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

}  // namespace

std::vector<std::string> system_malloc_specs() {
  std::vector<std::string> out;
  for (const MallocLibrary& library : kLibraries) out.emplace_back(library.spec);
  return out;
}

bool is_system_malloc_spec(std::string_view spec) { return spec.starts_with("system."); }

std::optional<std::string> find_malloc_library(std::string_view file_name) {
  std::vector<std::string> dirs;
  if (const char* override_dirs = std::getenv("TIERMARK_MALLOC_LIBRARY_DIRS"); override_dirs != nullptr) {
    std::istringstream in(override_dirs);
    for (std::string dir; std::getline(in, dir, ':');) {
      if (!dir.empty()) dirs.push_back(dir);
    }
  } else {
    // CMake's CMAKE_LIBRARY_ARCHITECTURE, the multiarch tuple (x86_64-linux-gnu) on Debian.
    const std::string arch = TIERMARK_LIBRARY_ARCHITECTURE;
    if (!arch.empty()) dirs = {"/usr/lib/" + arch, "/lib/" + arch};
    dirs.insert(dirs.end(), {"/usr/local/lib", "/usr/lib", "/lib", "/usr/lib64", "/lib64"});
  }
  for (const std::string& dir : dirs) {
    const std::filesystem::path path = std::filesystem::path(dir) / file_name;
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec) && access(path.c_str(), R_OK) == 0) return path.string();
  }
  return std::nullopt;
}

SystemMalloc resolve_system_malloc(std::string_view spec) {
  const Spec parsed = parse_spec(spec);
  const MallocLibrary* library = library_of(parsed.name);
  if (library == nullptr) {
    std::string known;
    for (const MallocLibrary& l : kLibraries) known += (known.empty() ? "" : ", ") + std::string(l.spec);
    throw InputError("unknown system allocator '" + parsed.name + "' (known: " + known + ")");
  }
  if (!parsed.preset.empty() || !parsed.settings.empty()) {
    throw InputError(parsed.name + " takes no options: '" + std::string(spec) + "'");
  }
  SystemMalloc out{std::string(library->spec), std::string(library->malloc), ""};
  if (!library->file.empty()) {
    const std::optional<std::string> path = find_malloc_library(library->file);
    if (!path) {
      throw MallocLibraryMissing(std::string(library->file) + " not found (apt-get install " + std::string(library->package) + ")");
    }
    out.preload = *path;
  }
  return out;
}

std::string run_malloc_child(const std::vector<std::string>& args, const std::string& preload) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("LD_PRELOAD=")) env.emplace_back(*e);
  }
  if (!preload.empty()) env.push_back("LD_PRELOAD=" + preload);
  std::vector<char*> envp, argv;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string argv0 = "tiermark";
  argv.push_back(argv0.data());
  std::vector<std::string> owned = args;
  for (std::string& a : owned) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw PassFailure(std::string("cannot create a pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);  // dup2 clears close-on-exec
  pid_t pid = 0;
  const int spawn_error = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (spawn_error != 0) {
    close(fds[0]);
    throw PassFailure(std::string("cannot start the child process: ") + std::strerror(spawn_error));
  }
  std::string output;
  char buffer[65536];
  for (;;) {
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n > 0) {
      output.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw PassFailure(std::string("cannot wait for the child process: ") + std::strerror(errno));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw PassFailure("child process " + describe_status(status));
  return output;
}

void require_active_malloc(std::string_view command, const std::string& expected) {
  const std::string active = active_malloc_name();
  if (active != expected) {
    throw InputError(std::string(command) + ": malloc here is " + active + ", not " + expected + " (LD_PRELOAD='" +
                     (std::getenv("LD_PRELOAD") != nullptr ? std::getenv("LD_PRELOAD") : "") + "')");
  }
}

std::string malloc_object() {
  Dl_info info{};
  void* symbol = dlsym(RTLD_DEFAULT, "malloc");
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  return info.dli_fname;
}

bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  return static_cast<bool>(clear << "5" << std::flush);
}

}  // namespace tiermark
