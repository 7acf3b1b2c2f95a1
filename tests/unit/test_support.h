// Helpers shared by the allocator tests: building allocators from specs, reading the process's
// resident memory, an independent model of live blocks that checks non-overlap and contents, and
// CheckedCalls, which checks every call a hand-written allocator test makes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/bits.h"
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

// An allocator of type A on its own upstream (spec `memory`), every call made through CheckedCalls
// (invariants after each operation, alignment, no overlap); release(p) frees p with the request it
// was allocated with. Test files derive from it to add their allocator's own accessors.
template <class A>
class AllocatorHarness {
 public:
  AllocatorHarness(const std::string& allocator_spec, const std::string& memory)
      : device_(make_upstream(memory)),
        allocator_(make_options(allocator_spec, A::kName, A::option_specs()), *device_),
        calls_(allocator_, device_->touchable()) {}

  void* alloc(std::uint64_t size, StreamId stream = 0, std::size_t alignment = kDefaultAlignment) {
    void* p = calls_.allocate(size, alignment, stream);
    if (p != nullptr) requests_[p] = {size, alignment, stream};
    return p;
  }
  void release(void* p) {
    const auto it = requests_.find(p);
    ASSERT_NE(it, requests_.end());
    calls_.deallocate(p, it->second.size, it->second.alignment, it->second.stream);
    requests_.erase(it);
  }
  void trim() { calls_.trim(); }

  A& a() { return allocator_; }
  const A& a() const { return allocator_; }
  UpstreamStats device() const { return device_->stats(); }

 private:
  struct Request {
    std::uint64_t size;
    std::size_t alignment;
    StreamId stream;
  };
  std::unique_ptr<Upstream> device_;
  A allocator_;
  CheckedCalls<A> calls_;
  std::map<void*, Request> requests_;
};

// Random churn for the caching allocators' property tests: allocate (log-uniform sizes up to
// max_size, mixed alignments and streams) or free a random live block, trim every trim_every ops;
// after every op the non-overlap model and check_invariants() are checked, then
// after_op(op, blocks, requested, failures, trimmed) adds the caller's own checks. At the end every
// block is freed. A failed allocation is allowed only when may_fail.
struct ChurnSettings {
  int ops = 40'000;
  std::uint64_t max_size = 64 << 20;
  std::vector<std::size_t> alignments = {16, 16, 16, 256, 512, 1024, 4096};
  StreamId streams = 3;
  std::size_t max_blocks = 600;  // at most this many live; allocation grows less likely past half
  int trim_every = 5000;         // 0: never
  bool may_fail = false;
  bool touchable = false;        // the blocks may be written (the model fills and checks them)
};
struct ChurnBlock {
  void* p;
  std::size_t size;
  std::size_t alignment;
  StreamId stream;
};
struct ChurnResult {
  std::uint64_t failures = 0;
  bool trimmed = false;
};

template <class A, class AfterOp>
ChurnResult random_churn(A& a, const ChurnSettings& settings, AfterOp&& after_op) {
  LiveBlocks live(settings.touchable);
  std::vector<ChurnBlock> blocks;
  std::mt19937_64 rng(20261123);
  std::uniform_real_distribution<double> log_size(0.0, std::log(double(settings.max_size)));
  std::uint64_t requested = 0;
  ChurnResult result;
  for (int op = 0; op < settings.ops; ++op) {
    const bool grow = blocks.size() < settings.max_blocks &&
                      rng() % 100 < (blocks.size() < settings.max_blocks / 2 ? 60u : 40u);
    if (settings.trim_every != 0 && op % settings.trim_every == settings.trim_every - 1) {
      a.trim();
      result.trimmed = true;
    } else if (blocks.empty() || grow) {
      const auto size = std::max<std::size_t>(1, static_cast<std::size_t>(std::exp(log_size(rng))));
      const std::size_t alignment = settings.alignments[rng() % settings.alignments.size()];
      const auto stream = static_cast<StreamId>(rng() % settings.streams);
      void* p = a.allocate(size, alignment, stream);
      if (p == nullptr) {
        EXPECT_TRUE(settings.may_fail) << "op " << op;
        if (!settings.may_fail) return result;
        ++result.failures;
      } else {
        EXPECT_EQ(address_of(p) % alignment, 0u) << "op " << op;
        const std::string problem = live.add(p, size, static_cast<std::uint64_t>(op));
        EXPECT_EQ(problem, "") << "op " << op;
        if (!problem.empty()) return result;
        blocks.push_back({p, size, alignment, stream});
        requested += size;
      }
    } else {
      const std::size_t victim = rng() % blocks.size();
      const ChurnBlock block = blocks[victim];
      blocks[victim] = blocks.back();
      blocks.pop_back();
      EXPECT_EQ(live.remove(block.p, block.size), "") << "op " << op;
      a.deallocate(block.p, block.size, block.alignment, block.stream);
      requested -= block.size;
    }
    const std::string broken = a.check_invariants();
    EXPECT_EQ(broken, "") << "after op " << op;
    if (!broken.empty()) return result;
    after_op(op, blocks, requested, result);
    if (::testing::Test::HasFailure()) return result;
  }
  for (const ChurnBlock& block : blocks) {
    EXPECT_EQ(live.remove(block.p, block.size), "");
    a.deallocate(block.p, block.size, block.alignment, block.stream);
  }
  EXPECT_EQ(a.check_invariants(), "");
  return result;
}

}  // namespace tiermark::testing
