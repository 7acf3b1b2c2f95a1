// What `tiermark stress` runs its kernels against (StressTarget, stress/stress_kernel.h):
//
//  * OverlapChecker: the non-overlap check of --verify, a mutex-guarded interval map of live blocks.
//    A block that overlaps a live one is reported and not recorded (the live one stays the owner of
//    its range), and forgetting it later is a no-op for the map.
//  * LockedAllocatorTarget: one of tiermark's allocators (not thread-safe by contract) with its own
//    upstream, every call serialised under one mutex. docs/stress.md gives the measured cost of the
//    lock (1 against 2 threads) and why a lock rather than per-thread caches.
//  * MallocTarget: this process's malloc/free, thread-safe itself; in a system.* row's child process
//    it is jemalloc's, mimalloc's, tcmalloc's or glibc's.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "allocators/allocator.h"
#include "allocators/upstream.h"
#include "stress/stress_kernel.h"

namespace tiermark {

class OverlapChecker {
 public:
  // "" when [p, p + bytes) overlaps no live block (it is then recorded as live), else a one-line
  // description of the block it overlaps.
  std::string check(const void* p, std::size_t bytes);
  void forget(const void* p, std::size_t bytes);
  std::size_t live() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, std::uintptr_t> live_;             // start -> end of each live block
  std::multiset<std::pair<std::uintptr_t, std::size_t>> rejected_;  // overlapping blocks not recorded
};

class LockedAllocatorTarget final : public StressTarget {
 public:
  // Takes both; the allocator must sit on the upstream.
  LockedAllocatorTarget(std::unique_ptr<Upstream> upstream, std::unique_ptr<Allocator> allocator);
  ~LockedAllocatorTarget() override;

  void* allocate(std::size_t bytes, std::size_t alignment) noexcept override;
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override;
  bool touchable() const noexcept override { return upstream_->touchable(); }
  std::string check_block(const void* p, std::size_t bytes) noexcept override;
  void forget_block(const void* p, std::size_t bytes) noexcept override;

  // Under the lock, so consistent while kernels run.
  AllocatorStats stats() const;
  std::string check_invariants() const;
  const Allocator& allocator() const { return *allocator_; }

 private:
  std::unique_ptr<Upstream> upstream_;
  std::unique_ptr<Allocator> allocator_;
  mutable std::mutex mutex_;
  OverlapChecker checker_;
};

class MallocTarget final : public StressTarget {
 public:
  void* allocate(std::size_t bytes, std::size_t alignment) noexcept override;
  void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override;
  bool touchable() const noexcept override { return true; }
  std::string check_block(const void* p, std::size_t bytes) noexcept override;
  void forget_block(const void* p, std::size_t bytes) noexcept override;

 private:
  OverlapChecker checker_;
};

// This process's resident set from /proc/self/statm (resident pages x page size); 0 when unreadable.
std::uint64_t current_rss_bytes();

}  // namespace tiermark
