// Upstream: the memory source an allocator grows from and returns memory to; the analogue of
// cudaMalloc/cudaFree or mmap/munmap. Two kinds exist (see host_upstream.h, simulated_upstream.h):
// real, touchable host memory, and a simulated device address range that is never touched.
//
// Capacity, call counts, failures and modelled call cost are kept here, once, for every kind
// (non-virtual interface, like std::pmr::memory_resource). Invariants: bytes.current <= capacity
// when a capacity is set; allocs - frees = the number of live upstream blocks.
// Not thread-safe: the allocator above serialises its calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "allocators/allocator_stats.h"

namespace tiermark {

struct UpstreamStats {
  std::uint64_t allocs = 0;
  std::uint64_t frees = 0;
  std::uint64_t failed = 0;   // refused for capacity or by the operating system
  Gauge bytes;                // bytes handed to the allocator above
  std::uint64_t capacity = 0; // 0: unlimited
  double modelled_cost_ns = 0;  // sum of the modelled cost of every call (simulated devices)
};

class Upstream {
 public:
  virtual ~Upstream() = default;

  // `bytes` > 0, `alignment` a power of two. Returns nullptr (counted in `failed`) when the request
  // would exceed the capacity or the source refuses it. Never throws.
  void* allocate(std::size_t bytes, std::size_t alignment) noexcept {
    if (capacity_ != 0 && bytes > capacity_ - stats_.bytes.current) {
      ++stats_.failed;
      return nullptr;
    }
    void* p = do_allocate(bytes, alignment);
    if (p == nullptr) {
      ++stats_.failed;
      return nullptr;
    }
    ++stats_.allocs;
    stats_.bytes.add(bytes);
    stats_.modelled_cost_ns += alloc_cost_ns_;
    return p;
  }

  // `p`, `bytes` and `alignment` exactly as in the allocate() call that returned p.
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    if (release_hook_ != nullptr) release_hook_(release_context_, p, bytes);
    do_deallocate(p, bytes, alignment);
    ++stats_.frees;
    stats_.bytes.subtract(bytes);
    stats_.modelled_cost_ns += free_cost_ns_;
  }

  // True when allocators may write into the memory (host); false for a simulated device, whose
  // addresses must never be dereferenced, so allocators keep all metadata on the side.
  virtual bool touchable() const noexcept = 0;

  UpstreamStats stats() const {
    UpstreamStats out = stats_;
    out.capacity = capacity_;
    return out;
  }
  std::uint64_t capacity() const { return capacity_; }
  // Called with every range given back, before it goes (the replay's cache model forgets it: memory
  // returned to the OS comes back as fresh pages). One hook at a time; nullptr removes it.
  using ReleaseHook = void (*)(void* context, void* p, std::size_t bytes);
  void set_release_hook(ReleaseHook hook, void* context) noexcept {
    release_hook_ = hook;
    release_context_ = context;
  }

  // The canonical spec this source was built from, e.g. `simulated:capacity=80GiB,...`.
  const std::string& config() const { return config_; }

 protected:
  Upstream(std::string config, std::uint64_t capacity, double alloc_cost_ns, double free_cost_ns)
      : config_(std::move(config)), capacity_(capacity), alloc_cost_ns_(alloc_cost_ns), free_cost_ns_(free_cost_ns) {}

  virtual void* do_allocate(std::size_t bytes, std::size_t alignment) noexcept = 0;
  virtual void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept = 0;

 private:
  std::string config_;
  std::uint64_t capacity_;
  double alloc_cost_ns_;
  double free_cost_ns_;
  UpstreamStats stats_;
  ReleaseHook release_hook_ = nullptr;
  void* release_context_ = nullptr;
};

}  // namespace tiermark
