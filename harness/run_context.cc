// run_context(): each fact is read from the one source that states it (procfs, sysfs, uname, hwloc,
// the version macros of the compiler and libraries tiermark was built with). A missing or unreadable
// source gives null, so a result never carries a plausible-looking default.
#include "harness/run_context.h"
#include "harness/proc_files.h"

#include <gnu/libc-version.h>
#include <hwloc.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <boost/version.hpp>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <optional>
#include <string_view>

#include "tiers/topology.h"

namespace tiermark {
namespace {

using Json = nlohmann::ordered_json;

Json string_or_null(const std::optional<std::string>& value) { return value ? Json(*value) : Json(nullptr); }

std::string_view trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

std::optional<std::string> first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  return std::string(trimmed(line));
}

// The value of the first "<key> <separator> <value>" line of a file such as /proc/cpuinfo
// ("model name\t: AMD EPYC"), /proc/meminfo ("MemTotal:  16318012 kB") or os-release ("NAME=...").
std::optional<std::string> field(const char* path, std::string_view key, char separator) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::string_view rest(line);
    if (!rest.starts_with(key)) continue;
    rest = trimmed(rest.substr(key.size()));
    if (rest.empty() || rest.front() != separator) continue;
    return std::string(trimmed(rest.substr(1)));
  }
  return std::nullopt;
}

Json meminfo_bytes(const char* key) {
  const std::optional<std::uint64_t> bytes = proc_kib_field("/proc/meminfo", key);
  return bytes ? Json(*bytes) : Json(nullptr);
}

// cpu0's frequency at the moment of reading; it moves with the governor and turbo, so it is a hint
// about the machine class, not a constant of the run.
Json cpu_mhz() {
  const auto value = field("/proc/cpuinfo", "cpu MHz", ':');
  if (!value) return nullptr;
  double mhz = 0;
  const auto [end, error] = std::from_chars(value->data(), value->data() + value->size(), mhz);
  if (error != std::errc{} || end != value->data() + value->size() || mhz <= 0) return nullptr;
  return mhz;
}

// os-release(5): /etc/os-release, falling back to /usr/lib/os-release; the value may be quoted.
Json os_name() {
  auto name = field("/etc/os-release", "PRETTY_NAME", '=');
  if (!name) name = field("/usr/lib/os-release", "PRETTY_NAME", '=');
  if (!name) return nullptr;
  if (name->size() >= 2 && (name->front() == '"' || name->front() == '\'') && name->back() == name->front()) {
    *name = name->substr(1, name->size() - 2);
  }
  return *name;
}

// The sysfs transparent-hugepage files list every choice and bracket the active one:
// "always [madvise] never".
Json active_choice(const char* path) {
  const auto line = first_line(path);
  if (!line) return nullptr;
  const auto open = line->find('[');
  const auto close = line->find(']', open);
  if (open == std::string::npos || close == std::string::npos) return nullptr;
  return line->substr(open + 1, close - open - 1);
}

Json date_utc() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  std::array<char, 32> text{};
  if (gmtime_r(&now, &utc) == nullptr || std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &utc) == 0) {
    return nullptr;
  }
  return text.data();
}

Json raw_host() {
  std::array<char, 256> name{};
  // gethostname does not promise a terminator when the name is truncated; the last byte stays '\0'.
  if (gethostname(name.data(), name.size() - 1) != 0 || name[0] == '\0') return nullptr;
  return name.data();
}

Json kernel() {
  utsname system{};
  if (uname(&system) != 0) return nullptr;
  return std::string(system.sysname) + " " + system.release;
}

Json compiler() {
#if defined(__clang__)
  return "Clang " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__) + "." +
         std::to_string(__clang_patchlevel__);
#elif defined(__GNUC__)
  return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return nullptr;
#endif
}

Json library_versions() {
  Json versions = Json::object();
  // The release of the headers built against: hwloc's run-time call only reports the API version,
  // which lags the release (hwloc 2.9.0 reports API 2.8.0).
#if defined(HWLOC_VERSION)
  versions["hwloc"] = HWLOC_VERSION;
#else
  const unsigned api = hwloc_get_api_version();
  versions["hwloc"] = std::to_string(api >> 16) + "." + std::to_string((api >> 8) & 0xff) + "." +
                      std::to_string(api & 0xff);
#endif
  versions["glibc"] = gnu_get_libc_version();
  // libstdc++ names only its major release and the date of its snapshot: "12 (20220819)".
#if defined(_GLIBCXX_RELEASE) && defined(__GLIBCXX__)
  versions["libstdc++"] = std::to_string(_GLIBCXX_RELEASE) + " (" + std::to_string(__GLIBCXX__) + ")";
#else
  versions["libstdc++"] = nullptr;
#endif
  versions["nlohmann_json"] = std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                              std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                              std::to_string(NLOHMANN_JSON_VERSION_PATCH);
  versions["boost"] = std::to_string(BOOST_VERSION / 100000) + "." + std::to_string(BOOST_VERSION / 100 % 1000) +
                      "." + std::to_string(BOOST_VERSION % 100);
  return versions;
}

// The context's view of the hwloc topology (tiers/topology.h reads it): a count that cannot be read
// is null, and each cache item lists the same keys in the same order whatever hwloc could read.
Json count(const Topology& topology, hwloc_obj_type_t type) {
  const std::optional<int> objects = topology.count(type);
  return objects ? Json(*objects) : Json(nullptr);
}

template <typename T>
Json optional_json(const std::optional<T>& value) {
  return value ? Json(*value) : Json(nullptr);
}

Json caches(const Topology& topology) {
  Json items = Json::array();
  for (const CacheLevel& cache : topology.caches()) {
    items.push_back({{"level", "L" + std::to_string(cache.level)},
                     {"type", cache.data ? "data" : "unified"},
                     {"size_bytes", optional_json(cache.size_bytes)},
                     {"line_bytes", optional_json(cache.line_bytes)},
                     {"associativity", optional_json(cache.associativity)},
                     {"shared_by_pus", optional_json(cache.shared_by_pus)},
                     {"count", cache.count}});
  }
  return items;
}

Json page_size() {
  const long bytes = sysconf(_SC_PAGESIZE);
  return bytes > 0 ? Json(bytes) : Json(nullptr);
}

Json load_average() {
  std::array<double, 3> averages{};
  if (getloadavg(averages.data(), 3) != 3) return nullptr;
  return averages;
}

}  // namespace

std::string host_name() {
  const Json raw = raw_host();
  if (raw.is_null()) return "unknown";
  std::string name = raw.get<std::string>();
  name = name.substr(0, name.find('.'));
  for (char& c : name) {
    const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                         c == '-';
    if (!allowed) c = '-';
  }
  return name.empty() ? "unknown" : name;
}

std::string git_commit() {
  // CMake reads the commit only when it configures, so a build made after a new commit or an edit,
  // without re-configuring, still carries the old value. Scripts that know the exact commit
  // (nightly tracking, CI) set TIERMARK_GIT_COMMIT to state it.
  if (const char* from_environment = std::getenv("TIERMARK_GIT_COMMIT");
      from_environment != nullptr && *from_environment != '\0') {
    return from_environment;
  }
#if defined(TIERMARK_GIT_COMMIT)
  return TIERMARK_GIT_COMMIT;
#else
  return "unknown";
#endif
}

Json run_context() {
  const Topology topology;
  const std::string commit = git_commit();
  Json context;
  context["date"] = date_utc();
  context["host"] = raw_host();
  context["cpu"] = string_or_null(field("/proc/cpuinfo", "model name", ':'));
  context["cpu_mhz"] = cpu_mhz();
  context["cores"] = count(topology, HWLOC_OBJ_CORE);
  context["threads"] = count(topology, HWLOC_OBJ_PU);
  context["numa_nodes"] = count(topology, HWLOC_OBJ_NUMANODE);
  context["caches"] = caches(topology);
  context["memory_bytes"] = meminfo_bytes("MemTotal");
  context["memory_available_bytes"] = meminfo_bytes("MemAvailable");
  context["kernel"] = kernel();
  context["os"] = os_name();
  context["compiler"] = compiler();
#if defined(TIERMARK_BUILD_TYPE)
  context["build_type"] = TIERMARK_BUILD_TYPE;
#else
  context["build_type"] = nullptr;
#endif
#if defined(TIERMARK_SANITIZER)
  context["sanitizer"] = TIERMARK_SANITIZER;
#else
  context["sanitizer"] = nullptr;
#endif
#if defined(TIERMARK_VERSION)
  context["tiermark_version"] = TIERMARK_VERSION;
#else
  context["tiermark_version"] = nullptr;
#endif
  context["git_commit"] = commit == "unknown" ? Json(nullptr) : Json(commit);
  context["library_versions"] = library_versions();
  context["transparent_hugepage"] = active_choice("/sys/kernel/mm/transparent_hugepage/enabled");
  context["transparent_hugepage_defrag"] = active_choice("/sys/kernel/mm/transparent_hugepage/defrag");
  context["page_size"] = page_size();
  context["cpu_governor"] = string_or_null(first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"));
  context["load_average"] = load_average();
  return context;
}

}  // namespace tiermark
