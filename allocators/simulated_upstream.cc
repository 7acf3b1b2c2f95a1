#include "allocators/simulated_upstream.h"

#include <iterator>
#include <string>
#include <vector>

#include "allocators/bits.h"

namespace tiermark {
namespace {

const std::vector<OptionSpec> kSimulatedOptions = {
    // 80 GiB: the memory of an NVIDIA A100-80GB or H100-80GB, the usual training device.
    {"capacity", OptionType::kSize, "80GiB", "device memory in bytes"},
    {"alloc_cost_ns", OptionType::kNumber, "0", "modelled cost charged per device allocation (cudaMalloc)"},
    {"free_cost_ns", OptionType::kNumber, "0", "modelled cost charged per device free (cudaFree)"},
};

}  // namespace

std::span<const OptionSpec> SimulatedUpstream::option_specs() { return kSimulatedOptions; }

SimulatedUpstream::SimulatedUpstream(const Options& options)
    : Upstream(options.canonical(), options.size("capacity"), options.number("alloc_cost_ns"),
               options.number("free_cost_ns")) {
  if (options.size("capacity") == 0) options.reject("capacity", "must be positive");
  if (options.size("capacity") > kAddressSpace / 2) options.reject("capacity", "larger than the simulated address space allows");
  free_ranges_.emplace(kDeviceBase, kDeviceBase + kAddressSpace);
}

bool SimulatedUpstream::owns(const void* p, std::size_t bytes) {
  const std::uintptr_t start = address_of(p);
  return start >= kDeviceBase && start - kDeviceBase <= kAddressSpace && bytes <= kAddressSpace - (start - kDeviceBase);
}

void* SimulatedUpstream::do_allocate(std::size_t bytes, std::size_t alignment) noexcept {
  alignment = alignment < kMinAlignment ? kMinAlignment : alignment;
  const std::uintptr_t size = align_up(bytes, kMinAlignment);
  // First fit by address: the space is far larger than any capacity, so the search almost always
  // ends at the first range and address-space fragmentation never causes a failure.
  for (auto it = free_ranges_.begin(); it != free_ranges_.end(); ++it) {
    const std::uintptr_t start = align_up(it->first, alignment);
    const std::uintptr_t end = it->second;
    if (start > end || end - start < size) continue;
    const std::uintptr_t range_start = it->first;
    free_ranges_.erase(it);
    if (start > range_start) free_ranges_.emplace(range_start, start);
    if (start + size < end) free_ranges_.emplace(start + size, end);
    return pointer_at(start);
  }
  return nullptr;
}

void SimulatedUpstream::do_deallocate(void* p, std::size_t bytes, std::size_t /*alignment*/) noexcept {
  std::uintptr_t start = address_of(p);
  std::uintptr_t end = start + align_up(bytes, kMinAlignment);
  auto next = free_ranges_.lower_bound(start);
  if (next != free_ranges_.end() && next->first == end) {
    end = next->second;
    next = free_ranges_.erase(next);
  }
  if (next != free_ranges_.begin()) {
    auto previous = std::prev(next);
    if (previous->second == start) {
      start = previous->first;
      free_ranges_.erase(previous);
    }
  }
  free_ranges_.emplace(start, end);
}

std::string SimulatedUpstream::check_invariants() const {
  std::uintptr_t last_end = 0;
  bool first = true;
  for (const auto& [start, end] : free_ranges_) {
    if (start >= end) return "simulated: empty or inverted free range";
    if (!first && start <= last_end) return "simulated: free ranges overlap or are not coalesced";
    if (start < kDeviceBase || end > kDeviceBase + kAddressSpace) return "simulated: free range outside the address space";
    last_end = end;
    first = false;
  }
  return "";
}

}  // namespace tiermark
