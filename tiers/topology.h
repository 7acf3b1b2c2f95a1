// Topology: the one place tiermark reads the machine's hierarchy from hwloc (caches, NUMA nodes,
// cores, PUs) and binds threads and memory with it. Used by the results context (harness/run_context)
// and by the memory-tier measurements (tiers/tier_measure, `tiermark tiers`, bench_tiers).
// Invariants: a fact hwloc could not read is std::nullopt, never a guessed default; a Topology that
// failed to load answers every query with "nothing" (no caches, no cores) rather than throwing; the
// hwloc topology is loaded once and only read afterwards, so one Topology may be shared by threads
// (hwloc's binding calls are thread-safe on a loaded topology).
#pragma once

#include <hwloc.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tiermark {

// One cache level and type (data or unified) merged over its instances. A field the instances
// disagree on (hybrid CPUs: an E-core cluster's L2 is not a P-core's) is nullopt, since no single
// value describes them. associativity -1 means fully associative (hwloc's convention).
struct CacheLevel {
  int level = 0;       // 1, 2, 3
  bool data = false;   // true: a data cache; false: unified
  std::optional<std::uint64_t> size_bytes;
  std::optional<unsigned> line_bytes;
  std::optional<int> associativity;
  std::optional<int> shared_by_pus;
  int count = 0;       // instances
};

// One cache above a given core, as the core sees it (not merged).
struct CoreCache {
  int level = 0;
  bool data = false;
  std::uint64_t size_bytes = 0;
  unsigned line_bytes = 0;
  int shared_by_pus = 0;   // PUs below this cache instance
  int shared_by_cores = 0; // cores below this cache instance
  int instances = 0;       // instances of this level and type in the machine
};

struct NumaNode {
  unsigned os_index = 0;
  std::optional<std::uint64_t> memory_bytes;
  // hwloc's subtype when it sets one ("HBM", "NVM", "SPM", "CXL-DRAM", "GPUMemory"); "DRAM" for a node
  // without one, which is what hwloc leaves ordinary memory as.
  std::string kind;
  std::vector<unsigned> pus;  // OS indexes of the PUs local to the node
};

struct Core {
  unsigned logical_index = 0;
  std::vector<unsigned> pus;  // OS indexes
};

class Topology {
 public:
  Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;
  ~Topology();

  bool loaded() const { return topology_ != nullptr; }
  hwloc_topology_t handle() const { return topology_; }

  // Objects of a type the process may use (hwloc leaves out PUs outside its allowed cpuset); nullopt
  // when there are none or the topology did not load.
  std::optional<int> count(hwloc_obj_type_t type) const;

  // Data and unified caches, L1 to L3, one item per level and type, in that order.
  std::vector<CacheLevel> caches() const;
  // The data and unified caches above core `core` (logical index), innermost first.
  std::vector<CoreCache> caches_above_core(unsigned core) const;
  std::vector<NumaNode> numa_nodes() const;
  std::vector<Core> cores() const;

  // Binds the calling thread to the first PU of core `core` (logical index). False when hwloc refuses
  // (the reason is in errno).
  bool bind_thread_to_core(unsigned core) const;
  // Binds [address, address + bytes) to NUMA node `os_index` (strictly). False when refused.
  bool bind_area_to_node(void* address, std::uint64_t bytes, unsigned os_index) const;
  // Binds the process's future allocations to NUMA node `os_index` (hwloc_set_membind).
  bool bind_process_memory_to_node(unsigned os_index) const;
  // Binds the calling thread's future allocations to NUMA node `os_index`, or back to the default
  // policy when nullopt (hwloc_set_membind with HWLOC_MEMBIND_THREAD).
  bool bind_thread_memory_to_node(std::optional<unsigned> os_index) const;
  // The NUMA node a PCI device (bus id "0000:65:00.0", any case) is attached to, from the kernel's
  // /sys/bus/pci/devices/<id>/numa_node, which is where hwloc reads it too; nullopt when the kernel
  // does not say (-1: a single-node machine, or no such device).
  static std::optional<unsigned> numa_node_of_pci_device(const std::string& bus_id);

 private:
  hwloc_topology_t topology_ = nullptr;
};

}  // namespace tiermark
