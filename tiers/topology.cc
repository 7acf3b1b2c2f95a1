// Topology over hwloc 2.x. hwloc writes 0 for every cache attribute it could not read; those become
// nullopt here. The caches of one level and type are merged field by field (see CacheLevel).
#include "tiers/topology.h"

#include <array>
#include <cctype>
#include <fstream>

namespace tiermark {
namespace {

constexpr std::array<hwloc_obj_type_t, 3> kCacheTypes = {HWLOC_OBJ_L1CACHE, HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L3CACHE};

template <typename T>
void merge_field(std::optional<T>& merged, const std::optional<T>& instance, bool first) {
  if (first) {
    merged = instance;
  } else if (merged != instance) {
    merged.reset();
  }
}

std::vector<unsigned> os_indexes(hwloc_const_bitmap_t set) {
  std::vector<unsigned> indexes;
  if (set == nullptr) return indexes;
  for (int i = hwloc_bitmap_first(set); i >= 0; i = hwloc_bitmap_next(set, i)) indexes.push_back(unsigned(i));
  return indexes;
}

}  // namespace

Topology::Topology() {
  if (hwloc_topology_init(&topology_) != 0) {
    topology_ = nullptr;
  } else if (hwloc_topology_load(topology_) != 0) {
    hwloc_topology_destroy(topology_);
    topology_ = nullptr;
  }
}

Topology::~Topology() {
  if (topology_ != nullptr) hwloc_topology_destroy(topology_);
}

std::optional<int> Topology::count(hwloc_obj_type_t type) const {
  if (topology_ == nullptr) return std::nullopt;
  const int objects = hwloc_get_nbobjs_by_type(topology_, type);
  return objects > 0 ? std::optional<int>(objects) : std::nullopt;
}

std::vector<CacheLevel> Topology::caches() const {
  std::vector<CacheLevel> levels;
  if (topology_ == nullptr) return levels;
  for (std::size_t level = 0; level < kCacheTypes.size(); ++level) {
    for (const auto kind : {HWLOC_OBJ_CACHE_DATA, HWLOC_OBJ_CACHE_UNIFIED}) {
      CacheLevel item;
      item.level = int(level + 1);
      item.data = kind == HWLOC_OBJ_CACHE_DATA;
      for (hwloc_obj_t cache = hwloc_get_next_obj_by_type(topology_, kCacheTypes[level], nullptr); cache != nullptr;
           cache = hwloc_get_next_obj_by_type(topology_, kCacheTypes[level], cache)) {
        const auto& attributes = cache->attr->cache;
        if (attributes.type != kind) continue;
        const int pus = cache->cpuset != nullptr ? hwloc_bitmap_weight(cache->cpuset) : -1;
        const bool first = item.count++ == 0;
        merge_field(item.size_bytes, attributes.size > 0 ? std::optional<std::uint64_t>(attributes.size) : std::nullopt, first);
        merge_field(item.line_bytes, attributes.linesize > 0 ? std::optional<unsigned>(attributes.linesize) : std::nullopt, first);
        merge_field(item.associativity, attributes.associativity != 0 ? std::optional<int>(attributes.associativity) : std::nullopt, first);
        merge_field(item.shared_by_pus, pus > 0 ? std::optional<int>(pus) : std::nullopt, first);
      }
      if (item.count != 0) levels.push_back(item);
    }
  }
  return levels;
}

std::vector<CoreCache> Topology::caches_above_core(unsigned core) const {
  std::vector<CoreCache> caches;
  if (topology_ == nullptr) return caches;
  const hwloc_obj_t object = hwloc_get_obj_by_type(topology_, HWLOC_OBJ_CORE, core);
  if (object == nullptr) return caches;
  for (hwloc_obj_t parent = object->parent; parent != nullptr; parent = parent->parent) {
    if (!hwloc_obj_type_is_dcache(parent->type)) continue;  // data or unified, never instruction-only
    const auto& attributes = parent->attr->cache;
    if (attributes.type == HWLOC_OBJ_CACHE_INSTRUCTION || attributes.depth < 1) continue;
    CoreCache cache;
    cache.level = int(attributes.depth);
    cache.data = attributes.type == HWLOC_OBJ_CACHE_DATA;
    cache.size_bytes = attributes.size;
    cache.line_bytes = attributes.linesize;
    cache.shared_by_pus = parent->cpuset != nullptr ? hwloc_bitmap_weight(parent->cpuset) : 0;
    cache.shared_by_cores = hwloc_get_nbobjs_inside_cpuset_by_type(topology_, parent->cpuset, HWLOC_OBJ_CORE);
    cache.instances = hwloc_get_nbobjs_by_type(topology_, parent->type);
    caches.push_back(cache);
  }
  return caches;
}

std::vector<NumaNode> Topology::numa_nodes() const {
  std::vector<NumaNode> nodes;
  if (topology_ == nullptr) return nodes;
  for (hwloc_obj_t node = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, nullptr); node != nullptr;
       node = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, node)) {
    NumaNode item;
    item.os_index = node->os_index;
    if (node->attr != nullptr && node->attr->numanode.local_memory > 0) item.memory_bytes = node->attr->numanode.local_memory;
    item.kind = node->subtype != nullptr ? node->subtype : "DRAM";
    item.pus = os_indexes(node->cpuset);
    nodes.push_back(std::move(item));
  }
  return nodes;
}

std::vector<Core> Topology::cores() const {
  std::vector<Core> cores;
  if (topology_ == nullptr) return cores;
  for (hwloc_obj_t core = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_CORE, nullptr); core != nullptr;
       core = hwloc_get_next_obj_by_type(topology_, HWLOC_OBJ_CORE, core)) {
    cores.push_back({core->logical_index, os_indexes(core->cpuset)});
  }
  return cores;
}

bool Topology::bind_thread_to_core(unsigned core) const {
  if (topology_ == nullptr) return false;
  const hwloc_obj_t object = hwloc_get_obj_by_type(topology_, HWLOC_OBJ_CORE, core);
  if (object == nullptr || object->cpuset == nullptr) return false;
  // One PU of the core: with SMT, two threads bound to a whole core could still share a PU's time.
  hwloc_bitmap_t set = hwloc_bitmap_dup(object->cpuset);
  hwloc_bitmap_singlify(set);
  const bool bound = hwloc_set_cpubind(topology_, set, HWLOC_CPUBIND_THREAD) == 0;
  hwloc_bitmap_free(set);
  return bound;
}

bool Topology::bind_area_to_node(void* address, std::uint64_t bytes, unsigned os_index) const {
  if (topology_ == nullptr) return false;
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  hwloc_bitmap_only(nodes, os_index);
  const bool bound = hwloc_set_area_membind(topology_, address, bytes, nodes, HWLOC_MEMBIND_BIND,
                                            HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT) == 0;
  hwloc_bitmap_free(nodes);
  return bound;
}

bool Topology::bind_process_memory_to_node(unsigned os_index) const {
  if (topology_ == nullptr) return false;
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  hwloc_bitmap_only(nodes, os_index);
  const bool bound = hwloc_set_membind(topology_, nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET) == 0;
  hwloc_bitmap_free(nodes);
  return bound;
}

bool Topology::bind_thread_memory_to_node(std::optional<unsigned> os_index) const {
  if (topology_ == nullptr) return false;
  hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
  int status = 0;
  if (os_index) {
    hwloc_bitmap_only(nodes, *os_index);
    status = hwloc_set_membind(topology_, nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
  } else {
    hwloc_bitmap_copy(nodes, hwloc_topology_get_topology_nodeset(topology_));
    status = hwloc_set_membind(topology_, nodes, HWLOC_MEMBIND_DEFAULT, HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
  }
  hwloc_bitmap_free(nodes);
  return status == 0;
}

std::optional<unsigned> Topology::numa_node_of_pci_device(const std::string& bus_id) {
  if (bus_id.empty() || bus_id.find('/') != std::string::npos) return std::nullopt;
  std::string id;
  for (const char c : bus_id) id.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  std::ifstream in("/sys/bus/pci/devices/" + id + "/numa_node");
  int node = -1;
  if (!(in >> node) || node < 0) return std::nullopt;
  return static_cast<unsigned>(node);
}

}  // namespace tiermark
