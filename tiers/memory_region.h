// MemoryRegion: an anonymous private mapping for one thread's working set, with a chosen page policy
// and, optionally, bound to one NUMA node before any page exists. Nothing is touched here: the
// thread that will measure the region touches it first (first-touch places the pages on its node
// when no binding says otherwise, and the writes keep it off the shared zero page).
// Invariants: data() is 2 MiB-aligned for kHuge (so transparent huge pages can back it whole) and
// page-aligned otherwise; the mapping is released by the destructor.
#pragma once

#include <cstdint>
#include <optional>

#include "tiers/topology.h"

namespace tiermark {

enum class PagePolicy {
  kDefault,  // whatever the system's THP setting gives (no madvise)
  kSmall,    // madvise(MADV_NOHUGEPAGE): 4 KiB pages
  kHuge,     // madvise(MADV_HUGEPAGE) on a 2 MiB-aligned range: transparent huge pages if the kernel has them
};

inline constexpr std::uint64_t kHugePageBytes = std::uint64_t{2} << 20;

class MemoryRegion {
 public:
  // Throws std::runtime_error when the mapping or the binding fails.
  MemoryRegion(std::uint64_t bytes, PagePolicy policy, const Topology* topology = nullptr,
               std::optional<unsigned> node = std::nullopt);
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;
  ~MemoryRegion();

  void* data() const { return data_; }
  std::uint64_t bytes() const { return bytes_; }

  // Bytes of [data(), data() + bytes()) backed by transparent huge pages now: the AnonHugePages of
  // the mappings covering it in /proc/self/smaps. nullopt when smaps cannot be read.
  std::optional<std::uint64_t> huge_page_bytes() const;

 private:
  void* mapping_ = nullptr;
  std::uint64_t mapping_bytes_ = 0;
  void* data_ = nullptr;
  std::uint64_t bytes_ = 0;
};

}  // namespace tiermark
