// `tiermark tiers`: plans the sweep from the hwloc topology, runs it through tiers/tier_measure, and
// reports. The tier model: a cache level's capacity for t threads pinned to cores 0..t-1 is its size
// times the instances those cores reach (a private L2 doubles with two threads, a shared L3 does
// not); a tier's point is the measured size nearest (in log scale) to half that capacity among the
// sizes above the level below it; DRAM's is at least 4x the last-level cache and 128 MiB (STREAM's
// rule for arrays). Latency is measured on one thread only.
#include "harness/tiers_command.h"

#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "common/input_error.h"
#include "common/size_units.h"
#include "harness/atomic_file.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/progress_line.h"
#include "harness/results_directory.h"
#include "harness/run_context.h"
#include "cuda/cuda_runtime.h"
#include "tiers/accelerator_bandwidth.h"
#include "tiers/kernels.h"
#include "tiers/size_sweep.h"
#include "tiers/tier_measure.h"
#include "tiers/topology.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;
using json = nlohmann::ordered_json;

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
// STREAM's array rule: at least 4x the last-level cache; 128 MiB as a floor for small caches.
constexpr std::uint64_t kMinDramBytes = 128 * kMiB;
constexpr int kDefaultSamples = 10;  // STREAM: best of 10 (its first, the warm-up, dropped)
constexpr int kQuickSamples = 5;

constexpr const char* kByteCounting =
    "STREAM: bytes read plus bytes written by the kernel, no write-allocate traffic; per 8-byte element read 8, "
    "write 8, ntwrite 8, copy 16, triad 24 (as likwid-bench's kernel files count); size_bytes is the working set of "
    "all arrays of all threads (likwid-bench -w)";

struct TiersArgs {
  std::string kernels = "read,write,ntwrite,copy,triad,latency";
  std::string sizes, threads, membind, samples, isa, out_dir, json_path;
  std::string accelerator = "auto";
  bool quick = false;
  std::vector<std::string> command;
};

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

// One cache tier as core 0 sees it.
struct CacheTier {
  std::string level;  // "L1", "L2", "L3"
  std::uint64_t size_bytes = 0;
  unsigned line_bytes = 0;
  int shared_by_cores = 1;
  int instances = 1;

  std::uint64_t capacity(int threads) const {
    const int reached = std::min(instances, (threads + shared_by_cores - 1) / std::max(shared_by_cores, 1));
    return size_bytes * std::uint64_t(std::max(reached, 1));
  }
};

struct Plan {
  std::vector<Kernel> kernels;
  bool latency = false;
  std::vector<int> threads;
  std::map<int, std::vector<std::uint64_t>> sizes;  // per thread count
  std::vector<std::uint64_t> latency_sizes;
  std::vector<CacheTier> caches;
  std::uint64_t dram_bytes = kMinDramBytes;
  unsigned line_bytes = 64;
  MeasureSettings settings;
};

std::vector<CacheTier> cache_tiers(const Topology& topology) {
  std::vector<CacheTier> tiers;
  for (const CoreCache& cache : topology.caches_above_core(0)) {
    if (cache.size_bytes == 0) continue;
    tiers.push_back({"L" + std::to_string(cache.level), cache.size_bytes, cache.line_bytes,
                     std::max(cache.shared_by_cores, 1), std::max(cache.instances, 1)});
  }
  return tiers;
}

std::uint64_t dram_bytes(const std::vector<CacheTier>& caches) {
  if (caches.empty()) return kMinDramBytes;
  const CacheTier& last = caches.back();
  return std::max(4 * last.size_bytes * std::uint64_t(last.instances), kMinDramBytes);
}

std::vector<std::uint64_t> tier_targets(const Plan& plan, int threads) {
  std::vector<std::uint64_t> targets;
  for (const CacheTier& cache : plan.caches) targets.push_back(round_to_granule(double(cache.capacity(threads)) / 2));
  targets.push_back(plan.dram_bytes);
  return targets;
}

std::vector<std::uint64_t> default_sweep(const Plan& plan, int threads, bool quick) {
  std::vector<std::uint64_t> sizes = tier_targets(plan, threads);
  if (!quick) {
    std::vector<std::uint64_t> capacities;
    for (const CacheTier& cache : plan.caches) capacities.push_back(cache.capacity(threads));
    for (const std::uint64_t size : size_sweep(capacities, 4096, plan.dram_bytes, 2)) sizes.push_back(size);
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

Plan make_plan(const TiersArgs& a, const Topology& topology) {
  Plan plan;
  if (a.accelerator != "auto" && a.accelerator != "off") {
    throw InputError("--accelerator: '" + a.accelerator + "' is not auto or off");
  }
  for (const std::string& name : split_list(a.kernels)) {
    if (name == "latency") {
      plan.latency = true;
    } else if (const auto kernel = parse_kernel(name)) {
      if (std::find(plan.kernels.begin(), plan.kernels.end(), *kernel) == plan.kernels.end()) plan.kernels.push_back(*kernel);
    } else {
      throw InputError("--kernels: unknown kernel '" + name + "' (known: read, write, ntwrite, copy, triad, latency)");
    }
  }
  const int cores = std::max<int>(1, int(topology.cores().size()));
  if (a.threads.empty()) {
    for (int t = 1; t <= cores; ++t) plan.threads.push_back(t);
  } else {
    for (const std::string& item : split_list(a.threads)) {
      const auto t = parse_count_option("threads", item, 1);
      if (t > std::uint64_t(cores)) {
        throw InputError("--threads: " + item + " is more than the " + std::to_string(cores) +
                         " cores available (threads are pinned one per core)");
      }
      if (std::find(plan.threads.begin(), plan.threads.end(), int(t)) == plan.threads.end()) plan.threads.push_back(int(t));
    }
  }
  plan.settings.isa = best_isa();
  if (!a.isa.empty()) {
    const auto isa = parse_isa(a.isa);
    const auto supported = supported_isas();
    if (!isa) throw InputError("--isa: unknown ISA '" + a.isa + "' (known: avx512, avx2, sse2)");
    if (std::find(supported.begin(), supported.end(), *isa) == supported.end()) {
      throw InputError("--isa: this CPU does not support " + a.isa);
    }
    plan.settings.isa = *isa;
  }
  plan.settings.samples = a.quick ? kQuickSamples : kDefaultSamples;
  if (!a.samples.empty()) plan.settings.samples = int(std::min<std::uint64_t>(parse_count_option("samples", a.samples, 1), 1000));
  if (!a.membind.empty()) {
    const auto node = parse_count_option("membind", a.membind, 0);
    std::string known;
    bool found = false;
    for (const NumaNode& n : topology.numa_nodes()) {
      known += (known.empty() ? "" : ", ") + std::to_string(n.os_index);
      found = found || n.os_index == node;
    }
    if (!found) throw InputError("--membind: no NUMA node " + a.membind + " on this machine (nodes: " + known + ")");
    plan.settings.membind_node = unsigned(node);
  }
  plan.caches = cache_tiers(topology);
  plan.dram_bytes = dram_bytes(plan.caches);
  if (!plan.caches.empty() && plan.caches.front().line_bytes != 0) plan.line_bytes = plan.caches.front().line_bytes;
  if (!a.sizes.empty()) {
    std::vector<std::uint64_t> sizes;
    for (const std::string& item : split_list(a.sizes)) {
      const auto size = parse_size(item);
      if (!size || *size < 64) throw InputError("--sizes: '" + item + "' is not a size of at least 64 B (e.g. 32KiB, 1MiB, 256MiB)");
      sizes.push_back(*size);
    }
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    for (const int t : plan.threads) plan.sizes[t] = sizes;
    plan.latency_sizes = sizes;
  } else {
    for (const int t : plan.threads) plan.sizes[t] = default_sweep(plan, t, a.quick);
    plan.latency_sizes = default_sweep(plan, 1, a.quick);
  }
  return plan;
}


json topology_json(const Topology& topology, const Plan& plan) {
  json caches = json::array();
  for (const CacheLevel& cache : topology.caches()) {
    const auto value = [](const auto& field) { return field ? json(*field) : json(nullptr); };
    caches.push_back({{"level", "L" + std::to_string(cache.level)}, {"type", cache.data ? "data" : "unified"},
                      {"size_bytes", value(cache.size_bytes)}, {"line_bytes", value(cache.line_bytes)},
                      {"associativity", value(cache.associativity)}, {"shared_by_pus", value(cache.shared_by_pus)},
                      {"count", cache.count}});
  }
  json above = json::array();
  for (const CacheTier& cache : plan.caches) {
    above.push_back({{"level", cache.level}, {"size_bytes", cache.size_bytes}, {"line_bytes", cache.line_bytes},
                     {"shared_by_cores", cache.shared_by_cores}, {"instances", cache.instances}});
  }
  json nodes = json::array();
  for (const NumaNode& node : topology.numa_nodes()) {
    nodes.push_back({{"os_index", node.os_index},
                     {"memory_bytes", node.memory_bytes ? json(*node.memory_bytes) : json(nullptr)},
                     {"kind", node.kind},
                     {"pus", node.pus}});
  }
  json cores = json::array();
  for (const Core& core : topology.cores()) cores.push_back({{"logical_index", core.logical_index}, {"pus", core.pus}});
  const auto count = [&](hwloc_obj_type_t type) {
    const auto n = topology.count(type);
    return n ? json(*n) : json(nullptr);
  };
  return {{"caches", caches}, {"caches_above_core0", above}, {"numa_nodes", nodes}, {"cores", count(HWLOC_OBJ_CORE)},
          {"pus", count(HWLOC_OBJ_PU)}, {"core_list", cores}};
}

json bandwidth_json(const BandwidthPoint& p) {
  return {{"kernel", kernel_name(p.kernel)},
          {"size_bytes", p.size_bytes},
          {"threads", p.threads},
          {"bandwidth_bytes_per_second", p.bytes_per_second.best},
          {"median_bytes_per_second", p.bytes_per_second.median},
          {"cv", p.bytes_per_second.cv},
          {"latency_ns", nullptr},
          {"samples", p.bytes_per_second.samples},
          {"bytes_per_thread", p.size_bytes / std::uint64_t(p.threads)},
          {"elements_per_array", p.elements_per_array},
          {"counted_bytes_per_pass", p.counted_bytes_per_pass},
          {"repeats_per_sample", p.repeats_per_sample},
          {"pinned", p.pinned}};
}

json latency_json(const LatencyPoint& p) {
  json item = {{"kernel", p.huge_pages ? "latency_thp" : "latency"},
               {"size_bytes", p.size_bytes},
               {"threads", 1},
               {"bandwidth_bytes_per_second", nullptr},
               {"median_bytes_per_second", nullptr},
               {"cv", p.ns_per_load.cv},
               {"latency_ns", p.ns_per_load.best},
               {"samples", p.ns_per_load.samples},
               {"median_latency_ns", p.ns_per_load.median},
               {"loads_per_sample", p.loads_per_sample},
               {"huge_page_bytes", p.huge_page_bytes ? json(*p.huge_page_bytes) : json(nullptr)},
               {"pinned", p.pinned}};
  if (p.huge_pages) item["thp_obtained"] = p.huge_page_bytes ? json(*p.huge_page_bytes > 0) : json(nullptr);
  return item;
}

// The tier's window of sizes for t threads: above the level below, up to this level's capacity.
struct Window {
  std::uint64_t above = 0, upto = 0, target = 0;
  bool largest = false;  // DRAM: the largest size in the window
};

Window tier_window(const Plan& plan, std::size_t tier, int threads) {
  if (tier == plan.caches.size()) {
    const std::uint64_t llc = plan.caches.empty() ? 0 : plan.caches.back().capacity(threads);
    return {2 * llc, ~std::uint64_t{0}, plan.dram_bytes, true};
  }
  const std::uint64_t below = tier == 0 ? 0 : plan.caches[tier - 1].capacity(threads);
  const std::uint64_t capacity = plan.caches[tier].capacity(threads);
  return {below, capacity, round_to_granule(double(capacity) / 2), false};
}

const json* pick(const json& points, const std::string& kernel, int threads, const Window& window) {
  const json* best = nullptr;
  double best_distance = 0;
  for (const json& p : points) {
    if (p["kernel"] != kernel || p["threads"] != threads) continue;
    const std::uint64_t size = p["size_bytes"];
    if (size <= window.above || size > window.upto) continue;
    const double distance = window.largest ? -double(size) : std::abs(std::log(double(size) / double(window.target)));
    if (best == nullptr || distance < best_distance) {
      best = &p;
      best_distance = distance;
    }
  }
  return best;
}

json tiers_json(const Plan& plan, const json& points) {
  json tiers = json::array();
  for (std::size_t tier = 0; tier <= plan.caches.size(); ++tier) {
    const bool dram = tier == plan.caches.size();
    json item = {{"level", dram ? "DRAM" : plan.caches[tier].level},
                 {"capacity_bytes", dram ? json(nullptr) : json(plan.caches[tier].size_bytes)}};
    const json* read1 = pick(points, "read", 1, tier_window(plan, tier, 1));
    item["size_bytes"] = read1 != nullptr ? (*read1)["size_bytes"] : json(tier_window(plan, tier, 1).target);
    item["bandwidth_bytes_per_second"] = read1 != nullptr ? (*read1)["bandwidth_bytes_per_second"] : json(nullptr);
    json bandwidth = json::object(), sizes = json::object();
    for (const Kernel kernel : plan.kernels) {
      for (const int t : plan.threads) {
        const std::string key = std::string(kernel_name(kernel)) + "/" + std::to_string(t);
        const json* p = pick(points, kernel_name(kernel), t, tier_window(plan, tier, t));
        bandwidth[key] = p != nullptr ? (*p)["bandwidth_bytes_per_second"] : json(nullptr);
        sizes[key] = p != nullptr ? (*p)["size_bytes"] : json(nullptr);
      }
    }
    item["bandwidth"] = bandwidth;
    item["bandwidth_size_bytes"] = sizes;
    const json* latency = pick(points, "latency", 1, tier_window(plan, tier, 1));
    const json* latency_thp = pick(points, "latency_thp", 1, tier_window(plan, tier, 1));
    item["latency_ns"] = latency != nullptr ? (*latency)["latency_ns"] : json(nullptr);
    item["latency_ns_thp"] = latency_thp != nullptr ? (*latency_thp)["latency_ns"] : json(nullptr);
    item["latency_size_bytes"] = latency != nullptr ? (*latency)["size_bytes"] : json(nullptr);
    tiers.push_back(item);
  }
  return tiers;
}

// Node-by-node: one thread on the first core of each node with cores, reading memory bound to each
// node, at the DRAM size; latency with 4 KiB pages likewise.
json numa_matrix(const Topology& topology, const Plan& plan, ProgressLine& progress) {
  const std::vector<NumaNode> nodes = topology.numa_nodes();
  const std::vector<Core> cores = topology.cores();
  json matrix = {{"size_bytes", plan.dram_bytes}, {"memory_nodes", json::array()}, {"cpu_nodes", json::array()},
                 {"read_bytes_per_second", json::array()}, {"latency_ns", json::array()}};
  for (const NumaNode& node : nodes) matrix["memory_nodes"].push_back(node.os_index);
  for (const NumaNode& cpu_node : nodes) {
    std::optional<unsigned> core;
    for (const Core& c : cores) {
      if (!c.pus.empty() && std::find(cpu_node.pus.begin(), cpu_node.pus.end(), c.pus.front()) != cpu_node.pus.end()) {
        core = c.logical_index;
        break;
      }
    }
    if (!core) continue;  // a memory-only node (HBM, CXL): a column, not a row
    matrix["cpu_nodes"].push_back(cpu_node.os_index);
    json bandwidth_row = json::array(), latency_row = json::array();
    for (const NumaNode& memory_node : nodes) {
      MeasureSettings settings = plan.settings;
      settings.membind_node = memory_node.os_index;
      progress.step("numa " + std::to_string(cpu_node.os_index) + " -> " + std::to_string(memory_node.os_index));
      const auto bandwidth = measure_bandwidth(topology, {Kernel::kRead}, plan.dram_bytes, 1, settings, {*core});
      bandwidth_row.push_back(bandwidth.front().bytes_per_second.best);
      latency_row.push_back(measure_latency(topology, plan.dram_bytes, false, plan.line_bytes, settings, *core).ns_per_load.best);
    }
    matrix["read_bytes_per_second"].push_back(bandwidth_row);
    matrix["latency_ns"].push_back(latency_row);
  }
  return matrix;
}

// The accelerator tier: every CUDA device, or the one-line reason there is none (the run carries on).
json accelerator_json(const Topology& topology, bool quick, ProgressLine& progress) {
  const cuda::Probe probe = cuda::probe();
  json result = {{"available", probe.unavailable.empty()},
                 {"runtime_version", probe.runtime_version},
                 {"driver_version", probe.driver_version},
                 {"method", "nvbandwidth: copy-engine cudaMemcpyAsync, CUDA-event timed behind a gate, median of trials "
                            "after a warm-up; bytes counted once per byte copied; pinned host memory on the GPU's NUMA node"},
                 {"devices", json::array()}};
  if (!probe.unavailable.empty()) {
    result["reason"] = probe.unavailable;
    return result;
  }
  AcceleratorSettings settings;
  if (quick) settings.loops = 4;
  for (const cuda::Device& device : probe.devices) {
    progress.step("accelerator " + std::to_string(device.index) + " copies");
    const std::optional<unsigned> node = Topology::numa_node_of_pci_device(device.pci_bus_id);
    const auto engine = cuda_copy_engine(device.index);
    json copies = json::array();
    for (const CopyBandwidth& c : measure_copies(*engine, settings, &topology, node)) {
      copies.push_back({{"direction", c.direction},
                        {"bytes", c.bytes},
                        {"loops", c.loops},
                        {"bandwidth_bytes_per_second", c.bytes_per_second.median},
                        {"best_bytes_per_second", c.bytes_per_second.best},
                        {"cv", c.bytes_per_second.cv},
                        {"trial_bytes_per_second", c.trial_bytes_per_second}});
    }
    result["devices"].push_back({{"index", device.index},
                                 {"name", device.name},
                                 {"pci_bus_id", device.pci_bus_id},
                                 {"memory_bytes", device.memory_bytes},
                                 {"compute_capability", std::to_string(device.compute_major) + "." +
                                                            std::to_string(device.compute_minor)},
                                 {"numa_node", node ? json(*node) : json(nullptr)},
                                 {"copies", copies}});
  }
  return result;
}

// One `tiers` item per GPU: device-local copy bandwidth as its bandwidth, every direction keyed
// "h2d/1", "d2h/1", "d2d/1" (one host thread drives the copies).
void add_accelerator_tiers(const json& accelerator, json& tiers) {
  for (const json& device : accelerator["devices"]) {
    json bandwidth = json::object();
    json local = nullptr;
    for (const json& c : device["copies"]) {
      bandwidth[c["direction"].get<std::string>() + "/1"] = c["bandwidth_bytes_per_second"];
      if (c["direction"] == "d2d") local = c["bandwidth_bytes_per_second"];
    }
    tiers.push_back({{"level", "GPU" + std::to_string(device["index"].get<int>())},
                     {"size_bytes", device["copies"].empty() ? json(nullptr) : device["copies"][0]["bytes"]},
                     {"bandwidth_bytes_per_second", local},
                     {"bandwidth", bandwidth},
                     {"latency_ns", nullptr},
                     {"latency_ns_thp", nullptr}});
  }
}

std::string gbps(const json& value) {
  if (!value.is_number()) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", value.get<double>() / 1e9);
  return text;
}

std::string nanoseconds(const json& value) {
  if (!value.is_number()) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", value.get<double>());
  return text;
}

std::string padded(const std::string& text, std::size_t width) {
  return text.size() >= width ? text + " " : text + std::string(width - text.size(), ' ');
}

void print_summary(const json& document, const Topology& topology, const Plan& plan, std::ostream& out) {
  const json& context = document["context"];
  const auto nodes = topology.numa_nodes();
  out << "tiermark tiers: " << context.value("cpu", std::string("unknown CPU")) << ", "
      << topology.cores().size() << " cores, " << topology.count(HWLOC_OBJ_PU).value_or(0) << " PUs, " << nodes.size()
      << (nodes.size() == 1 ? " NUMA node\n" : " NUMA nodes\n");
  out << "  caches above core 0:";
  for (const CacheTier& cache : plan.caches) {
    out << " " << cache.level << " " << format_size_approx(cache.size_bytes) << " (" << cache.line_bytes << " B lines, "
        << (cache.shared_by_cores > 1 ? "shared by " + std::to_string(cache.shared_by_cores) + " cores" : std::string("per core"))
        << ")";
  }
  out << "\n";
  for (const NumaNode& node : nodes) {
    out << "  NUMA node " << node.os_index << ": "
        << (node.memory_bytes ? format_size_approx(*node.memory_bytes) : std::string("? bytes")) << " " << node.kind << ", "
        << node.pus.size() << " PUs\n";
  }
  if (document["numa_matrix"].is_null()) out << "  one NUMA node: no node-by-node matrix\n";
  out << "  ISA " << isa_name(plan.settings.isa) << "; best of " << plan.settings.samples
      << " samples of >= 10 ms after a dropped warm-up; bytes counted as STREAM (read + written, no write-allocate; "
         "copy 16 B, triad 24 B per element); sizes are all arrays of all threads\n\n";
  out << padded("tier", 6) << padded("threads", 9) << padded("size", 11);
  for (const Kernel kernel : plan.kernels) out << padded(std::string(kernel_name(kernel)), 9);
  out << "GB/s    latency ns (4 KiB / THP)\n";
  for (const json& tier : document["tiers"]) {
    if (tier["level"].get<std::string>().rfind("GPU", 0) == 0) continue;  // printed below
    bool first = true;
    for (const int t : plan.threads) {
      const std::string key_read = (plan.kernels.empty() ? std::string("read") : kernel_name(plan.kernels.front())) + "/" +
                                   std::to_string(t);
      const json& size = tier["bandwidth_size_bytes"].value(key_read, json(nullptr));
      out << padded(first ? tier["level"].get<std::string>() : "", 6) << padded(std::to_string(t), 9)
          << padded(size.is_number() ? format_size(size.get<std::uint64_t>())
                                     : (first && tier["latency_size_bytes"].is_number()
                                            ? format_size(tier["latency_size_bytes"].get<std::uint64_t>())
                                            : std::string("-")),
                    11);
      for (const Kernel kernel : plan.kernels) {
        out << padded(gbps(tier["bandwidth"].value(std::string(kernel_name(kernel)) + "/" + std::to_string(t), json(nullptr))), 9);
      }
      if (first && plan.latency) out << "        " << nanoseconds(tier["latency_ns"]) << " / " << nanoseconds(tier["latency_ns_thp"]);
      out << "\n";
      first = false;
    }
  }
  if (document["accelerator"].is_object()) {
    for (const json& device : document["accelerator"]["devices"]) {
      out << "\nGPU" << device["index"].get<int>() << " " << device["name"].get<std::string>() << " (NUMA node "
          << (device["numa_node"].is_null() ? std::string("?") : std::to_string(device["numa_node"].get<unsigned>()))
          << "), nvbandwidth's method, median of 3, GB/s:";
      for (const json& c : device["copies"]) out << "  " << c["direction"].get<std::string>() << " " << gbps(c["bandwidth_bytes_per_second"]);
      out << "\n";
    }
  }
  if (!document["numa_matrix"].is_null()) {
    const json& matrix = document["numa_matrix"];
    out << "\nNUMA read GB/s and latency ns (rows: CPU node, columns: memory node)\n";
    for (std::size_t row = 0; row < matrix["cpu_nodes"].size(); ++row) {
      out << "  node " << matrix["cpu_nodes"][row].get<unsigned>() << ":";
      for (std::size_t column = 0; column < matrix["memory_nodes"].size(); ++column) {
        out << "  " << gbps(matrix["read_bytes_per_second"][row][column]) << " / "
            << nanoseconds(matrix["latency_ns"][row][column]);
      }
      out << "\n";
    }
  }
}

int run_tiers(const TiersArgs& a, std::ostream& out) {
  const Topology topology;
  const Plan plan = make_plan(a, topology);
  check_output_file(a.json_path, "--json");
  const std::filesystem::path dir = results_directory(a.out_dir);
  if (plan.settings.membind_node && !topology.bind_process_memory_to_node(*plan.settings.membind_node)) {
    throw std::runtime_error("hwloc_set_membind to node " + std::to_string(*plan.settings.membind_node) + " failed");
  }

  json context = run_context();
  context["command"] = a.command;
  context["isa"] = isa_name(plan.settings.isa);
  context["samples"] = plan.settings.samples;
  context["min_sample_seconds"] = plan.settings.min_sample_seconds;
  context["membind"] = plan.settings.membind_node ? json(*plan.settings.membind_node) : json(nullptr);

  std::size_t steps = plan.latency ? 2 * plan.latency_sizes.size() : 0;
  if (!plan.kernels.empty()) {
    for (const auto& [t, sizes] : plan.sizes) steps += sizes.size();
  }
  const bool several_nodes = topology.numa_nodes().size() > 1;
  if (several_nodes) steps += topology.numa_nodes().size() * topology.numa_nodes().size();
  const bool accelerator_wanted = a.accelerator == "auto";
  ProgressLine progress(steps);

  json points = json::array();
  if (!plan.kernels.empty()) {
    for (const int t : plan.threads) {
      for (const std::uint64_t size : plan.sizes.at(t)) {
        progress.step("bandwidth " + format_size(size) + " on " + std::to_string(t) + " threads");
        for (const BandwidthPoint& p : measure_bandwidth(topology, plan.kernels, size, t, plan.settings)) {
          points.push_back(bandwidth_json(p));
        }
      }
    }
  }
  if (plan.latency) {
    for (const bool huge : {false, true}) {
      for (const std::uint64_t size : plan.latency_sizes) {
        progress.step(std::string(huge ? "latency (THP) " : "latency ") + format_size(size));
        points.push_back(latency_json(measure_latency(topology, size, huge, plan.line_bytes, plan.settings)));
      }
    }
  }
  json matrix = several_nodes ? numa_matrix(topology, plan, progress) : json(nullptr);
  json tiers = tiers_json(plan, points);
  if (several_nodes) {
    // One item per node: read from the first node's first core, latency likewise.
    for (std::size_t column = 0; column < matrix["memory_nodes"].size(); ++column) {
      tiers.push_back({{"level", "NUMA" + std::to_string(matrix["memory_nodes"][column].get<unsigned>())},
                       {"size_bytes", plan.dram_bytes},
                       {"bandwidth_bytes_per_second", matrix["read_bytes_per_second"][0][column]},
                       {"bandwidth", {{"read/1", matrix["read_bytes_per_second"][0][column]}}},
                       {"latency_ns", matrix["latency_ns"][0][column]},
                       {"latency_ns_thp", nullptr}});
    }
  }
  json notes = json::array();
  if (!several_nodes) notes.push_back("one NUMA node: no node-by-node matrix");
  json accelerator = nullptr;
  if (accelerator_wanted) {
    accelerator = accelerator_json(topology, a.quick, progress);
    if (accelerator["available"] == true) {
      add_accelerator_tiers(accelerator, tiers);
    } else {
      notes.push_back("accelerator: " + accelerator["reason"].get<std::string>());
    }
  }
  if (!context["sanitizer"].is_null() && context["sanitizer"] != "") {
    notes.push_back("sanitizer build: the numbers measure the instrumented kernels, not the memory");
  }
  json document = {{"schema", kTiersSchema},
                   {"context", context},
                   {"topology", topology_json(topology, plan)},
                   {"byte_counting", kByteCounting},
                   {"isa", isa_name(plan.settings.isa)},
                   {"tiers", tiers},
                   {"points", points},
                   {"numa_matrix", matrix},
                   {"accelerator", accelerator},
                   {"notes", notes}};
  const std::string text = document.dump(1) + "\n";
  AtomicFile file((dir / "tiers.json").string());
  file.stream() << text;
  file.commit();
  if (!a.json_path.empty()) {
    AtomicFile extra(a.json_path);
    extra.stream() << text;
    extra.commit();
  }
  print_summary(document, topology, plan, out);
  for (const json& note : notes) out << "note: " << note.get<std::string>() << "\n";
  out << "\nresults: " << (dir / "tiers.json").string() << "\n";
  return kExitOk;
}

}  // namespace

int tiers_command(const std::vector<std::string>& args, std::ostream& out) {
  TiersArgs a;
  a.command = args;
  a.command.insert(a.command.begin(), {"tiermark", "tiers"});
  po::options_description options("tiermark tiers");
  options.add_options()
      ("kernels", po::value(&a.kernels), "comma list of read, write, ntwrite, copy, triad, latency (default: all)")
      ("sizes", po::value(&a.sizes), "comma list of working-set sizes, all arrays of all threads (e.g. 32KiB,1MiB,256MiB); default: a sweep from 4 KiB to 4x the last-level cache, dense around each cache")
      ("threads", po::value(&a.threads), "comma list of thread counts, pinned one per core (default 1..cores)")
      ("membind", po::value(&a.membind), "bind all memory to this NUMA node (OS index)")
      ("samples", po::value(&a.samples), "kept samples per point after the warm-up (default 10; --quick 5)")
      ("isa", po::value(&a.isa), "avx512, avx2 or sse2 (default: the widest this CPU has)")
      ("accelerator", po::value(&a.accelerator), "auto (measure every CUDA device, or say there is none) or off")
      ("quick", po::bool_switch(&a.quick), "only each tier's own size: finishes in well under a minute")
      ("out", po::value(&a.out_dir), "results directory (default results/<date>_<host>_<commit>/)")
      ("json", po::value(&a.json_path), "also write the JSON results to this file")
      ("help,h", "show this help");
  const po::variables_map vm = parse_command_options("tiers", options, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark tiers [--quick] [--kernels LIST] [--sizes LIST] [--threads LIST] [--membind NODE] [options]\n"
        << options;
    return kExitOk;
  }
  return run_tiers(a, out);
}

}  // namespace tiermark
