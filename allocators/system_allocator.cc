#include "allocators/system_allocator.h"

#include <dlfcn.h>

#include <vector>

namespace tiermark {
namespace {

const std::vector<OptionSpec> kSystemOptions = {};

}  // namespace

std::span<const OptionSpec> SystemAllocator::option_specs() { return kSystemOptions; }

SystemAllocator::SystemAllocator(const Options& /*options*/, Upstream& /*upstream*/) {}

std::string SystemAllocator::check_invariants() const {
  const AllocatorStats& s = stats_.raw();
  if (s.frees > s.allocs) return "system: more frees than allocations";
  if (s.requested_bytes.current > s.allocated_bytes.current) return "system: requested exceeds usable bytes";
  if ((s.allocs == s.frees) != (s.allocated_bytes.current == 0)) return "system: live bytes without live blocks";
  return "";
}

std::string active_malloc_name() {
  if (dlsym(RTLD_DEFAULT, "mallctl") != nullptr) return "jemalloc";
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr) return "tcmalloc";
  if (dlsym(RTLD_DEFAULT, "mi_malloc") != nullptr) return "mimalloc";
  return "glibc";
}

}  // namespace tiermark
