// Helpers shared by the allocator tests: building allocators from specs, reading the process's
// resident memory, an independent model of live blocks that checks non-overlap and contents, and
// CheckedCalls, which checks every call a hand-written allocator test makes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "allocators/allocator.h"
#include "allocators/registry.h"

namespace tiermark::testing {

struct Built {
  std::unique_ptr<Upstream> upstream;
  std::unique_ptr<Allocator> allocator;
};

inline Built build(const std::string& allocator_spec, const std::string& memory_spec) {
  Built built;
  built.upstream = make_upstream(memory_spec);
  built.allocator = make_allocator(allocator_spec, *built.upstream);
  return built;
}

// ThreadSanitizer maps shadow memory for every byte the program writes, several times its size, so
// a bound on this process's resident memory only holds in builds without it.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kResidentBoundsHold = false;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kResidentBoundsHold = false;
#else
inline constexpr bool kResidentBoundsHold = true;
#endif
#else
inline constexpr bool kResidentBoundsHold = true;
#endif

// Resident set size of this process in bytes (VmRSS in /proc/self/status).
inline std::uint64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      std::uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    std::getline(status, key);
  }
  return 0;
}

// Live blocks as address intervals: rejects any new block that overlaps a live one. On touchable
// memory it also writes a pattern derived from the block's id at the start, middle and end of the
// block and checks it on free, which catches an allocator handing the same bytes out twice.
class LiveBlocks {
 public:
  explicit LiveBlocks(bool touchable) : touchable_(touchable) {}

  // Returns an empty string, or what is wrong with the new block.
  std::string add(void* p, std::size_t size, std::uint64_t id) {
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t end = start + size;
    auto next = blocks_.lower_bound(start);
    if (next != blocks_.end() && next->first < end) return "new block overlaps a live block after it";
    if (next != blocks_.begin() && std::prev(next)->second.end > start) return "new block overlaps a live block before it";
    blocks_.emplace(start, Block{end, id});
    if (touchable_) stamp(p, size, id);
    return "";
  }

  std::string remove(void* p, std::size_t size) {
    const auto it = blocks_.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == blocks_.end()) return "freeing a block that is not live";
    if (touchable_ && !stamped(p, size, it->second.id)) return "block contents changed while it was live";
    blocks_.erase(it);
    return "";
  }

  std::size_t size() const { return blocks_.size(); }

 private:
  struct Block {
    std::uintptr_t end;
    std::uint64_t id;
  };
  static std::uint64_t pattern(std::uint64_t id, int where) { return (id * 0x9E3779B97F4A7C15ull) ^ (0x1111ull * (where + 1)); }
  // Small blocks are filled whole with one byte; larger ones get three words that cannot overlap.
  static void stamp(void* p, std::size_t size, std::uint64_t id) {
    if (size < 64) {
      std::memset(p, static_cast<int>(pattern(id, 0) & 0xff), size);
      return;
    }
    for (int where = 0; where < 3; ++where) {
      const std::uint64_t value = pattern(id, where);
      std::memcpy(static_cast<char*>(p) + offset(size, where), &value, 8);
    }
  }
  static bool stamped(const void* p, std::size_t size, std::uint64_t id) {
    const auto* bytes = static_cast<const unsigned char*>(p);
    if (size < 64) {
      for (std::size_t i = 0; i < size; ++i) {
        if (bytes[i] != (pattern(id, 0) & 0xff)) return false;
      }
      return true;
    }
    for (int where = 0; where < 3; ++where) {
      const std::uint64_t value = pattern(id, where);
      if (std::memcmp(bytes + offset(size, where), &value, 8) != 0) return false;
    }
    return true;
  }
  static std::size_t offset(std::size_t size, int where) { return where == 0 ? 0 : where == 1 ? size / 2 : size - 8; }

  bool touchable_;
  std::map<std::uintptr_t, Block> blocks_;
};

// "" when an allocator's reserved-memory statistics agree with themselves and with its upstream
// (allocated <= reserved, free = reserved - allocated, largest free block <= free, reserved = the
// upstream's bytes, live upstream blocks the same on both sides), else the first disagreement.
// Only meaningful when stats.reserved_known.
inline std::string reserved_stats_mismatch(const AllocatorStats& s, const UpstreamStats& upstream) {
  if (s.allocated_bytes.current > s.reserved_bytes.current) return "allocated bytes exceed reserved bytes";
  if (s.free_bytes != s.reserved_bytes.current - s.allocated_bytes.current) return "free bytes != reserved - allocated";
  if (s.largest_free_block > s.free_bytes) return "largest free block exceeds free bytes";
  if (s.reserved_bytes.current != upstream.bytes.current) return "reserved bytes != the upstream's bytes";
  if (s.upstream_allocs - s.upstream_frees != upstream.allocs - upstream.frees) return "live upstream blocks disagree";
  return "";
}

// Every call a hand-written test makes to allocator `A`, checked: check_invariants() after each
// operation, the alignment honoured, and through LiveBlocks no overlap and (on host memory) the
// block's contents unchanged from allocation to free. Test fixtures hold one beside their allocator.
template <class A>
class CheckedCalls {
 public:
  CheckedCalls(A& allocator, bool touchable) : allocator_(allocator), live_(touchable) {}

  void* allocate(std::size_t size, std::size_t alignment = kDefaultAlignment, StreamId stream = 0) {
    void* p = allocator_.allocate(size, alignment, stream);
    EXPECT_EQ(allocator_.check_invariants(), "") << "after allocate(" << size << ", " << alignment << ")";
    if (p != nullptr) {
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignment, 0u) << "size " << size << " alignment " << alignment;
      EXPECT_EQ(live_.add(p, size, next_id_++), "");
    }
    return p;
  }
  void deallocate(void* p, std::size_t size, std::size_t alignment = kDefaultAlignment, StreamId stream = 0) {
    EXPECT_EQ(live_.remove(p, size), "");
    allocator_.deallocate(p, size, alignment, stream);
    EXPECT_EQ(allocator_.check_invariants(), "") << "after deallocate(" << size << ", " << alignment << ")";
  }
  void trim() {
    allocator_.trim();
    EXPECT_EQ(allocator_.check_invariants(), "") << "after trim()";
  }

 private:
  A& allocator_;
  LiveBlocks live_;
  std::uint64_t next_id_ = 1;
};

}  // namespace tiermark::testing
