#include "harness/stress_targets.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

namespace tiermark {
namespace {

std::string range_text(std::uintptr_t start, std::uintptr_t end) {
  char text[64];
  std::snprintf(text, sizeof text, "[0x%llx, 0x%llx)", static_cast<unsigned long long>(start), static_cast<unsigned long long>(end));
  return text;
}

}  // namespace

std::string OverlapChecker::check(const void* p, std::size_t bytes) {
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = start + std::max<std::size_t>(bytes, 1);
  std::lock_guard lock(mutex_);
  auto next = live_.upper_bound(start);
  const auto overlap = [&](std::map<std::uintptr_t, std::uintptr_t>::const_iterator it) {
    rejected_.emplace(start, bytes);
    return "overlaps live block " + range_text(it->first, it->second);
  };
  if (next != live_.end() && next->first < end) return overlap(next);
  if (next != live_.begin() && std::prev(next)->second > start) return overlap(std::prev(next));
  live_.emplace_hint(next, start, end);
  return "";
}

void OverlapChecker::forget(const void* p, std::size_t bytes) {
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard lock(mutex_);
  if (const auto it = rejected_.find({start, bytes}); it != rejected_.end()) {
    rejected_.erase(it);
    return;
  }
  if (const auto it = live_.find(start); it != live_.end() && it->second == start + std::max<std::size_t>(bytes, 1)) live_.erase(it);
}

std::size_t OverlapChecker::live() const {
  std::lock_guard lock(mutex_);
  return live_.size() + rejected_.size();
}

LockedAllocatorTarget::LockedAllocatorTarget(std::unique_ptr<Upstream> upstream, std::unique_ptr<Allocator> allocator)
    : upstream_(std::move(upstream)), allocator_(std::move(allocator)) {}

// The allocator goes before its upstream: it gives its memory back on destruction.
LockedAllocatorTarget::~LockedAllocatorTarget() { allocator_.reset(); }

void* LockedAllocatorTarget::allocate(std::size_t bytes, std::size_t alignment) noexcept {
  std::lock_guard lock(mutex_);
  return allocator_->allocate(bytes, alignment, 0);
}

void LockedAllocatorTarget::deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  std::lock_guard lock(mutex_);
  allocator_->deallocate(p, bytes, alignment, 0);
}

std::string LockedAllocatorTarget::check_block(const void* p, std::size_t bytes) noexcept { return checker_.check(p, bytes); }
void LockedAllocatorTarget::forget_block(const void* p, std::size_t bytes) noexcept { checker_.forget(p, bytes); }

AllocatorStats LockedAllocatorTarget::stats() const {
  std::lock_guard lock(mutex_);
  return allocator_->stats();
}

std::string LockedAllocatorTarget::check_invariants() const {
  std::lock_guard lock(mutex_);
  return allocator_->check_invariants();
}

void* MallocTarget::allocate(std::size_t bytes, std::size_t alignment) noexcept {
  if (alignment <= alignof(std::max_align_t)) return std::malloc(bytes);
  void* p = nullptr;
  return posix_memalign(&p, alignment, bytes) == 0 ? p : nullptr;
}

void MallocTarget::deallocate(void* p, std::size_t /*bytes*/, std::size_t /*alignment*/) noexcept { std::free(p); }
std::string MallocTarget::check_block(const void* p, std::size_t bytes) noexcept { return checker_.check(p, bytes); }
void MallocTarget::forget_block(const void* p, std::size_t bytes) noexcept { checker_.forget(p, bytes); }

std::uint64_t current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  const long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? resident * static_cast<std::uint64_t>(page) : 0;
}

}  // namespace tiermark
