// SimulatedUpstream: a device that exists only as a capacity and an address range. It hands out
// addresses that are never backed or touched, so an 80 GiB device replays on a small host, and
// counts device calls with an optional modelled cost per call (a cudaMalloc-like charge the harness
// adds to its timings; this layer has no clocks).
//
// Addresses are non-canonical on x86-64 (kDeviceBase), so a stray dereference faults at once
// instead of corrupting host memory. Invariants: live ranges never overlap; free ranges are
// coalesced; metadata is O(live ranges), independent of the capacity.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string_view>

#include "allocators/upstream.h"
#include "common/options.h"

namespace tiermark {

class SimulatedUpstream final : public Upstream {
 public:
  static constexpr std::string_view kName = "simulated";
  static constexpr std::string_view kDescription =
      "a simulated device: capacity and address range only, never touched; counts device calls";
  static std::span<const OptionSpec> option_specs();

  static constexpr std::uintptr_t kDeviceBase = 0x5100'0000'0000'0000;
  static constexpr std::uintptr_t kAddressSpace = std::uintptr_t{1} << 56;
  // cudaMalloc returns addresses aligned to at least 256 bytes (CUDA C++ Programming Guide,
  // "Device Memory Accesses"); the simulated device does the same.
  static constexpr std::size_t kMinAlignment = 256;

  explicit SimulatedUpstream(const Options& options);

  bool touchable() const noexcept override { return false; }

  // True when [p, p + bytes) lies inside the simulated address space (for tests and checks).
  static bool owns(const void* p, std::size_t bytes);
  // Checks the address-range invariants; empty when they hold.
  std::string check_invariants() const;

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) noexcept override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override;

  std::map<std::uintptr_t, std::uintptr_t> free_ranges_;  // start -> end, address-ordered, coalesced
};

}  // namespace tiermark
