// TEMPORARY STUB: replaced by the real implementation in this same change.
#pragma once
#include <span>
#include <string>
#include <string_view>
#include "allocators/allocator.h"
namespace tiermark {
class CoalescingPoolAllocator final {
 public:
  static constexpr std::string_view kName = "pool.coalescing";
  static constexpr std::string_view kDescription = "stub";
  static std::span<const OptionSpec> option_specs() { return {}; }
  CoalescingPoolAllocator(const Options&, Upstream&) {}
  void* allocate(std::size_t, std::size_t, StreamId) noexcept { stats_.on_failure(); return nullptr; }
  void deallocate(void*, std::size_t, std::size_t, StreamId) noexcept {}
  AllocatorStats stats() const { return stats_.snapshot(0); }
  std::string check_invariants() const { return ""; }
  void trim() {}
 private:
  StatsRecorder stats_;
};
}  // namespace tiermark
