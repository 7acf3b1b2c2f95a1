// The allocator interface every tiermark allocator implements, in two forms:
//
//  * AllocatorImpl, a concept: a concrete, final class with non-virtual allocate/deallocate. Benchmark
//    and replay loops templated on the concrete type pay no virtual call per operation.
//  * Allocator, an abstract class, and AllocatorAdapter<T>, which wraps any AllocatorImpl in it, for
//    code that picks allocators at run time (the registry, the CLI, tests).
//
// Contract, the same for both forms:
//  allocate(size, alignment, stream)  size > 0, alignment a power of two. Returns a block of at least
//      `size` bytes aligned to `alignment`, or nullptr; a nullptr is counted in stats().failed_requests.
//      Never throws: failure on the hot path is a value, not an exception.
//  deallocate(p, size, alignment, stream)  p from allocate() with the same size, alignment and stream.
//      Passing the request back (as std::pmr and sized delete do) lets every allocator recompute the
//      block from the request instead of storing per-block metadata.
//  stats()               counters as in allocator_stats.h.
//  check_invariants()    walks the allocator's own structures; returns "" when every invariant holds,
//      else a one-line description of the first broken one. Cost O(metadata); for tests and debug runs.
//  trim()                gives cached free memory back to the allocator's own free structures and
//      wholly free upstream blocks back upstream (like empty_cache() or malloc_trim()).
// Allocators are not thread-safe; callers serialise (issue 8 adds concurrency where stress needs it).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "allocators/allocator_stats.h"
#include "allocators/upstream.h"
#include "common/allocation_request.h"
#include "common/options.h"

namespace tiermark {

template <class A>
concept AllocatorImpl = std::constructible_from<A, const Options&, Upstream&> &&
                        requires(A& a, const A& ca, void* p, std::size_t n, StreamId s) {
                          { a.allocate(n, n, s) } noexcept -> std::same_as<void*>;
                          { a.deallocate(p, n, n, s) } noexcept;
                          { ca.stats() } -> std::same_as<AllocatorStats>;
                          { ca.check_invariants() } -> std::same_as<std::string>;
                          { a.trim() };
                          { A::kName } -> std::convertible_to<std::string_view>;
                          { A::kDescription } -> std::convertible_to<std::string_view>;
                          { A::option_specs() } -> std::same_as<std::span<const OptionSpec>>;
                        };

class Allocator {
 public:
  virtual ~Allocator() = default;

  [[nodiscard]] virtual void* allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept = 0;
  virtual void deallocate(void* p, std::size_t size, std::size_t alignment, StreamId stream) noexcept = 0;
  virtual AllocatorStats stats() const = 0;
  virtual std::string check_invariants() const = 0;
  virtual void trim() = 0;

  virtual std::string_view name() const = 0;
  // The canonical configuration, every option with its value: `buddy:min_block=512,arena=1GiB,cache=8`.
  virtual const std::string& config() const = 0;
  // The upstream this allocator sits on (memory it hands out is touchable iff upstream().touchable()).
  virtual Upstream& upstream() const = 0;
};

template <AllocatorImpl T>
class AllocatorAdapter final : public Allocator {
 public:
  AllocatorAdapter(const Options& options, Upstream& upstream)
      : impl_(options, upstream), config_(options.canonical()), upstream_(upstream) {}

  void* allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept override {
    return impl_.allocate(size, alignment, stream);
  }
  void deallocate(void* p, std::size_t size, std::size_t alignment, StreamId stream) noexcept override {
    impl_.deallocate(p, size, alignment, stream);
  }
  AllocatorStats stats() const override { return impl_.stats(); }
  std::string check_invariants() const override { return impl_.check_invariants(); }
  void trim() override { impl_.trim(); }
  std::string_view name() const override { return T::kName; }
  const std::string& config() const override { return config_; }
  Upstream& upstream() const override { return upstream_; }

  T& concrete() { return impl_; }

 private:
  T impl_;
  std::string config_;
  Upstream& upstream_;
};

}  // namespace tiermark
