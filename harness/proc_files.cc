#include "harness/proc_files.h"

#include <fstream>
#include <sstream>
#include <string>

namespace tiermark {

std::optional<std::uint64_t> proc_kib_field(const char* path, std::string_view key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with(key) || line.size() <= key.size() || line[key.size()] != ':') continue;
    std::istringstream rest(line.substr(key.size() + 1));
    std::uint64_t kib = 0;
    std::string unit;
    if (rest >> kib >> unit && unit == "kB") return kib * 1024;
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> available_memory_bytes() { return proc_kib_field("/proc/meminfo", "MemAvailable"); }

}  // namespace tiermark
