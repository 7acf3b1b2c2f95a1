#include "allocators/host_upstream.h"

#include <hwloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

#include "allocators/bits.h"
#include "common/input_error.h"

namespace tiermark {
namespace {

// 2 MiB: the x86-64 huge page size used by both THP and hugetlbfs by default.
constexpr std::size_t kHugePageSize = std::size_t{2} << 20;

const std::vector<OptionSpec> kHostOptions = {
    {"capacity", OptionType::kSize, "", "most bytes held at once; unset means unlimited"},
    {"huge_pages", OptionType::kChoice, "none",
     "none; transparent (madvise MADV_HUGEPAGE); explicit (MAP_HUGETLB, fails when no huge pages are reserved)",
     {"none", "transparent", "explicit"}},
    {"populate", OptionType::kBool, "false", "pre-fault every page at allocation (MAP_POPULATE)"},
    {"numa_node", OptionType::kCount, "", "bind memory to this NUMA node (hwloc); unset means the OS default"},
};

}  // namespace

struct HostUpstream::NumaBinding {
  hwloc_topology_t topology = nullptr;
  hwloc_obj_t node = nullptr;
  ~NumaBinding() {
    if (topology != nullptr) hwloc_topology_destroy(topology);
  }
};

std::span<const OptionSpec> HostUpstream::option_specs() { return kHostOptions; }

HostUpstream::HostUpstream(const Options& options)
    : Upstream(options.canonical(), options.has("capacity") ? options.size("capacity") : 0, 0.0, 0.0),
      populate_(options.flag("populate")),
      page_size_(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))) {
  const std::string& huge = options.choice("huge_pages");
  huge_pages_ = huge == "explicit" ? HugePages::kExplicit : huge == "transparent" ? HugePages::kTransparent : HugePages::kNone;
  if (options.has("capacity") && options.size("capacity") == 0) options.reject("capacity", "must be positive");
  if (options.has("numa_node")) {
    numa_ = std::make_unique<NumaBinding>();
    if (hwloc_topology_init(&numa_->topology) != 0 || hwloc_topology_load(numa_->topology) != 0) {
      options.reject("numa_node", "hwloc could not read the machine topology");
    }
    const auto index = static_cast<unsigned>(options.count("numa_node"));
    numa_->node = hwloc_get_obj_by_type(numa_->topology, HWLOC_OBJ_NUMANODE, index);
    if (numa_->node == nullptr) {
      const int nodes = hwloc_get_nbobjs_by_type(numa_->topology, HWLOC_OBJ_NUMANODE);
      options.reject("numa_node", "no such NUMA node (this machine has " + std::to_string(nodes) + ")");
    }
  }
}

HostUpstream::~HostUpstream() = default;

std::size_t HostUpstream::mapping_size(std::size_t bytes) const {
  return align_up(bytes, huge_pages_ == HugePages::kExplicit ? kHugePageSize : page_size_);
}

void* HostUpstream::do_allocate(std::size_t bytes, std::size_t alignment) noexcept {
  const std::size_t size = mapping_size(bytes);
  const std::size_t granule = huge_pages_ == HugePages::kExplicit ? kHugePageSize : page_size_;
  // Over-map by the alignment and trim both ends: mmap itself only guarantees page alignment.
  const std::size_t slack = alignment > granule ? alignment : 0;
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (huge_pages_ == HugePages::kExplicit) flags |= MAP_HUGETLB;
  if (populate_ && slack == 0) flags |= MAP_POPULATE;
  void* raw = mmap(nullptr, size + slack, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  std::uintptr_t start = address_of(raw);
  if (slack != 0) {
    const std::uintptr_t aligned = align_up(start, alignment);
    if (aligned > start) munmap(raw, aligned - start);
    const std::uintptr_t tail = aligned + size;
    const std::uintptr_t end = start + size + slack;
    if (end > tail) munmap(pointer_at(tail), end - tail);
    start = aligned;
    // The over-mapping could not be populated up front (most of it was trimmed): remap the kept range
    // in place with MAP_POPULATE, which faults every page in now.
    if (populate_ && mmap(pointer_at(start), size, PROT_READ | PROT_WRITE, flags | MAP_FIXED | MAP_POPULATE, -1, 0) == MAP_FAILED) {
      munmap(pointer_at(start), size);
      return nullptr;
    }
  }
  void* p = pointer_at(start);
  if (huge_pages_ == HugePages::kTransparent) madvise(p, size, MADV_HUGEPAGE);
  if (numa_ != nullptr) {
    hwloc_set_area_membind(numa_->topology, p, size, numa_->node->nodeset, HWLOC_MEMBIND_BIND,
                           HWLOC_MEMBIND_BYNODESET);
  }
  return p;
}

void HostUpstream::do_deallocate(void* p, std::size_t bytes, std::size_t /*alignment*/) noexcept {
  munmap(p, mapping_size(bytes));
}

}  // namespace tiermark
