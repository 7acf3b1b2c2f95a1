// HostUpstream: real, touchable memory from the kernel (mmap/munmap), the upstream for runs that
// write into their blocks. Options: a capacity (to provoke exhaustion), transparent or explicit huge
// pages, pre-faulting, and binding to a NUMA node through hwloc.
// Invariant: every live block is a private anonymous mapping of exactly round_up(bytes, page) bytes
// starting at an address aligned to the requested alignment.
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "allocators/upstream.h"
#include "common/options.h"

namespace tiermark {

class HostUpstream final : public Upstream {
 public:
  static constexpr std::string_view kName = "host";
  static constexpr std::string_view kDescription =
      "real memory from mmap: touchable, optional huge pages and NUMA binding (hwloc)";
  static std::span<const OptionSpec> option_specs();

  explicit HostUpstream(const Options& options);
  ~HostUpstream() override;

  bool touchable() const noexcept override { return true; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) noexcept override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override;
  std::size_t mapping_size(std::size_t bytes) const;

  enum class HugePages { kNone, kTransparent, kExplicit };
  HugePages huge_pages_;
  bool populate_;
  std::size_t page_size_;
  struct NumaBinding;  // hwloc state, only when numa_node is set
  std::unique_ptr<NumaBinding> numa_;
};

}  // namespace tiermark
