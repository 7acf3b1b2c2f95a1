// NodePool<T>: fixed-size metadata nodes for allocators that keep their bookkeeping outside the memory
// they manage (a simulated device must never be touched, so its free-block records cannot live in it).
// Nodes come from slabs taken from the C++ heap and are recycled through a LIFO free list threaded
// through the free slots, so once the pool has reached its high-water mark make() and recycle() never
// call the heap: an allocator's hot path stays allocation-free in steady state.
//
// Slabs grow geometrically (each new slab as large as the pool so far, within [kMinSlab, kMaxSlab]), so
// n nodes cost O(log n) heap calls. Growth happens only in reserve() or, as a fallback, in make(); both
// report failure as a value and never throw.
// Invariants: live + free = capacity; every free slot is on the list exactly once.
// Live nodes are not destroyed with the pool: T's destructor must have no effect worth keeping (true of
// boost::intrusive hooks in normal_link mode and of plain data).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace tiermark::detail {

template <class T>
class NodePool {
 public:
  // 64 nodes to start (with 64-byte nodes, one 4 KiB page); at most 65,536 per slab so that one
  // growth step never asks the heap for more than a few MiB. Both are this project's choices.
  static constexpr std::size_t kMinSlab = 64;
  static constexpr std::size_t kMaxSlab = std::size_t{1} << 16;

  NodePool() = default;
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;

  // A new T built from `args`, or nullptr when the pool was empty and the heap refused a new slab.
  template <class... Args>
  T* make(Args&&... args) noexcept {
    if (free_ == nullptr) [[unlikely]] {
      if (!grow(next_slab_size())) return nullptr;
    }
    Slot* slot = free_;
    free_ = slot->next;
    ++live_;
    return ::new (static_cast<void*>(slot->storage)) T{std::forward<Args>(args)...};
  }

  // Returns a node from make() to the pool.
  void recycle(T* node) noexcept {
    node->~T();
    Slot* slot = std::launder(reinterpret_cast<Slot*>(node));
    slot->next = free_;
    free_ = slot;
    --live_;
  }

  // Grows until capacity() >= nodes; false when the heap refused (capacity is then unchanged or larger).
  bool reserve(std::size_t nodes) noexcept {
    while (capacity_ < nodes) {
      if (!grow(std::max(next_slab_size(), std::min(nodes - capacity_, kMaxSlab)))) return false;
    }
    return true;
  }

  std::size_t capacity() const { return capacity_; }
  std::size_t live() const { return live_; }
  // Walks the free list (O(capacity)); for invariant checks.
  std::size_t count_free() const {
    std::size_t n = 0;
    for (const Slot* slot = free_; slot != nullptr && n <= capacity_; slot = slot->next) ++n;
    return n;
  }

 private:
  union Slot {
    Slot* next;
    alignas(T) std::byte storage[sizeof(T)];
  };

  std::size_t next_slab_size() const { return std::min(std::max(capacity_, kMinSlab), kMaxSlab); }

  bool grow(std::size_t count) noexcept {
    std::unique_ptr<Slot[]> slab(new (std::nothrow) Slot[count]);
    if (slab == nullptr) return false;
    try {
      slabs_.push_back(std::move(slab));
    } catch (...) {
      return false;
    }
    // Threaded back to front so that make() hands out the slab in address order.
    Slot* slots = slabs_.back().get();
    for (std::size_t i = count; i-- > 0;) {
      slots[i].next = free_;
      free_ = &slots[i];
    }
    capacity_ += count;
    return true;
  }

  Slot* free_ = nullptr;
  std::size_t live_ = 0;
  std::size_t capacity_ = 0;
  std::vector<std::unique_ptr<Slot[]>> slabs_;
};

}  // namespace tiermark::detail
