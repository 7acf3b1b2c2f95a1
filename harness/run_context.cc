// run_context(): each fact is read from the one source that states it (procfs, sysfs, uname, hwloc,
// the version macros of the compiler and libraries tiermark was built with). A missing or unreadable
// source gives null, so a result never carries a plausible-looking default.
#include "harness/run_context.h"

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

// /proc/meminfo states sizes in "kB", which the kernel means as KiB.
Json meminfo_bytes(std::string_view key) {
  const auto value = field("/proc/meminfo", key, ':');
  if (!value || !value->ends_with(" kB")) return nullptr;
  std::uint64_t kibibytes = 0;
  const auto [end, error] = std::from_chars(value->data(), value->data() + value->size() - 3, kibibytes);
  if (error != std::errc{} || end != value->data() + value->size() - 3) return nullptr;
  return kibibytes * 1024;
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

class Topology {
 public:
  Topology() {
    if (hwloc_topology_init(&topology_) != 0) {
      topology_ = nullptr;
    } else if (hwloc_topology_load(topology_) != 0) {
      hwloc_topology_destroy(topology_);
      topology_ = nullptr;
    }
  }
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;
  ~Topology() {
    if (topology_ != nullptr) hwloc_topology_destroy(topology_);
  }

  // Objects the process may use: hwloc leaves out PUs outside its allowed cpuset (containers, taskset).
  Json count(hwloc_obj_type_t type) const {
    if (topology_ == nullptr) return nullptr;
    const int objects = hwloc_get_nbobjs_by_type(topology_, type);
    return objects > 0 ? Json(objects) : Json(nullptr);
  }

  Json caches() const {
    Json items = Json::array();
    if (topology_ == nullptr) return items;
    constexpr std::array<hwloc_obj_type_t, 3> kLevels = {HWLOC_OBJ_L1CACHE, HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L3CACHE};
    for (std::size_t level = 0; level < kLevels.size(); ++level) {
      for (const auto kind : {HWLOC_OBJ_CACHE_DATA, HWLOC_OBJ_CACHE_UNIFIED}) {
        Json item = {{"level", "L" + std::to_string(level + 1)},
                     {"type", kind == HWLOC_OBJ_CACHE_DATA ? "data" : "unified"}};
        int instances = 0;
        for (hwloc_obj_t cache = hwloc_get_next_obj_by_type(topology_, kLevels[level], nullptr); cache != nullptr;
             cache = hwloc_get_next_obj_by_type(topology_, kLevels[level], cache)) {
          if (cache->attr->cache.type != kind) continue;
          merge(item, describe(cache), instances++ == 0);
        }
        if (instances == 0) continue;
        item["count"] = instances;
        items.push_back(std::move(item));
      }
    }
    return items;
  }

 private:
  // hwloc writes 0 for every attribute it could not read.
  static Json describe(hwloc_obj_t cache) {
    const auto& attributes = cache->attr->cache;
    const int pus = cache->cpuset != nullptr ? hwloc_bitmap_weight(cache->cpuset) : -1;
    return {{"size_bytes", attributes.size > 0 ? Json(attributes.size) : Json(nullptr)},
            {"line_bytes", attributes.linesize > 0 ? Json(attributes.linesize) : Json(nullptr)},
            {"associativity", attributes.associativity != 0 ? Json(attributes.associativity) : Json(nullptr)},
            {"shared_by_pus", pus > 0 ? Json(pus) : Json(nullptr)}};
  }

  // Caches of one level and type differ on hybrid CPUs (an E-core cluster's L2 is not a P-core's);
  // a field the instances disagree on is null rather than one instance's value.
  static void merge(Json& item, const Json& instance, bool first) {
    for (const auto& [key, value] : instance.items()) {
      if (first) {
        item[key] = value;
      } else if (item[key] != value) {
        item[key] = nullptr;
      }
    }
  }

  hwloc_topology_t topology_ = nullptr;
};

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
  context["cores"] = topology.count(HWLOC_OBJ_CORE);
  context["threads"] = topology.count(HWLOC_OBJ_PU);
  context["numa_nodes"] = topology.count(HWLOC_OBJ_NUMANODE);
  context["caches"] = topology.caches();
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
