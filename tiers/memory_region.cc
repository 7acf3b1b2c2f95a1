#include "tiers/memory_region.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace tiermark {

MemoryRegion::MemoryRegion(std::uint64_t bytes, PagePolicy policy, const Topology* topology, std::optional<unsigned> node)
    : bytes_(bytes) {
  // A huge-page region is mapped 2 MiB larger and used from its first 2 MiB boundary, and covers whole
  // huge pages: the kernel only backs 2 MiB-aligned, 2 MiB-sized ranges with a huge page.
  const std::uint64_t used = policy == PagePolicy::kHuge ? (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes
                                                         : std::max<std::uint64_t>(bytes, 1);
  mapping_bytes_ = used + (policy == PagePolicy::kHuge ? kHugePageBytes : 0);
  mapping_ = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    throw std::runtime_error("mmap of " + std::to_string(mapping_bytes_) + " bytes failed: " + std::strerror(errno));
  }
  auto address = reinterpret_cast<std::uintptr_t>(mapping_);
  if (policy == PagePolicy::kHuge) address = (address + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  data_ = reinterpret_cast<void*>(address);
  // madvise failing (a kernel without THP) is not an error: huge_page_bytes() reports what was obtained.
  if (policy == PagePolicy::kHuge) (void)madvise(data_, used, MADV_HUGEPAGE);
  if (policy == PagePolicy::kSmall) (void)madvise(data_, used, MADV_NOHUGEPAGE);
  if (node && (topology == nullptr || !topology->bind_area_to_node(data_, used, *node))) {
    const int error = errno;
    munmap(mapping_, mapping_bytes_);
    mapping_ = nullptr;
    throw std::runtime_error("cannot bind memory to NUMA node " + std::to_string(*node) + ": " + std::strerror(error));
  }
}

MemoryRegion::~MemoryRegion() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
}

std::optional<std::uint64_t> MemoryRegion::huge_page_bytes() const {
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) return std::nullopt;
  const auto begin = reinterpret_cast<std::uintptr_t>(data_);
  const std::uintptr_t end = begin + bytes_;
  std::uint64_t total = 0;
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    // A mapping's header: "7f12a0000000-7f12a4000000 rw-p 00000000 00:00 0".
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    if (dash != std::string::npos && space != std::string::npos && dash < space &&
        line.find_first_not_of("0123456789abcdef") == dash) {
      const std::uintptr_t from = std::stoull(line.substr(0, dash), nullptr, 16);
      const std::uintptr_t to = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
      inside = from < end && to > begin;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      std::istringstream fields(line.substr(14));
      std::uint64_t kibibytes = 0;
      fields >> kibibytes;
      total += kibibytes * 1024;
    }
  }
  return total;
}

}  // namespace tiermark
