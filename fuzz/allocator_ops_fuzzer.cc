// allocator_ops_fuzzer: allocator operation sequences checked against a reference model, the
// fuzzing counterpart of tests/unit/allocator_conformance_test.cc. The input chooses one of a few
// allocator configurations (caching.pytorch and its alloc_conf, expandable segments, caching.bfc,
// caching.vmm, buddy, bump, the pools) and a capacity for a simulated device, then decodes into
// allocate / deallocate / trim operations on two streams.
//
// The device is a SimulatedUpstream seen through TrackingUpstream, which records every upstream
// block live, so the model knows exactly what memory the allocator holds. After every operation:
//  * a returned block is aligned, lies inside one live upstream block (or, for allocators that map
//    pages under a synthetic virtual range, inside the synthetic space: synthetic_range.h), and does
//    not overlap any live block of the reference interval model;
//  * upstream blocks are given back exactly as they were taken, never twice;
//  * stats() agree with the model: allocs, frees and failures counted, requested bytes equal to the
//    model's live bytes (and their peak), requested <= allocated <= reserved, reserved equal to the
//    bytes the upstream handed out, free = reserved - allocated, largest free <= free, and a free
//    takes back exactly what its allocation added to allocated_bytes;
//  * check_invariants() == "".
// Failure (nullptr) is allowed: a counted failure is the contract when the device is full.
// Any violation prints the operation and the problem and aborts, so libFuzzer keeps the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"
#include "allocators/synthetic_range.h"

namespace {

using namespace tiermark;

int g_op = -1;
std::string g_config;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "allocator_ops_fuzzer: %s, op %d: %s\n", g_config.c_str(), g_op, what.c_str());
  std::abort();
}

// A simulated device (never touched) that records which of its blocks are live.
class TrackingUpstream final : public Upstream {
 public:
  explicit TrackingUpstream(std::uint64_t capacity)
      : Upstream("simulated:capacity=" + std::to_string(capacity), capacity, 0, 0), device_(make_upstream("simulated")) {}

  bool touchable() const noexcept override { return false; }

  // True when [p, p + bytes) lies inside one live upstream block.
  bool holds(std::uintptr_t p, std::uint64_t bytes) const {
    auto it = live_.upper_bound(p);
    if (it == live_.begin()) return false;
    --it;
    return p >= it->first && bytes <= it->second.bytes && p - it->first <= it->second.bytes - bytes;
  }
  std::size_t live_blocks() const { return live_.size(); }

 private:
  struct Range {
    std::uint64_t bytes;
    std::size_t alignment;
  };
  void* do_allocate(std::size_t bytes, std::size_t alignment) noexcept override {
    void* p = device_->allocate(bytes, alignment);
    if (p == nullptr) return nullptr;
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    if (start % alignment != 0) fail("the simulated device returned a misaligned block");
    auto next = live_.lower_bound(start);
    if (next != live_.end() && next->first < start + bytes) fail("the simulated device returned an overlapping block");
    if (next != live_.begin() && std::prev(next)->first + std::prev(next)->second.bytes > start) {
      fail("the simulated device returned an overlapping block");
    }
    live_.emplace(start, Range{bytes, alignment});
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override {
    const auto it = live_.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == live_.end()) fail("the allocator gave back an upstream block it does not hold");
    if (it->second.bytes != bytes || it->second.alignment != alignment) {
      fail("the allocator gave back an upstream block with another size or alignment than it took");
    }
    live_.erase(it);
    device_->deallocate(p, bytes, alignment);
  }

  std::unique_ptr<Upstream> device_;
  std::map<std::uintptr_t, Range> live_;
};

struct Config {
  const char* spec;
  bool synthetic;  // blocks live in a synthetic virtual range, not inside upstream blocks
};

// A few configurations per allocator, small enough that growth, splitting, release and exhaustion
// all happen within a few hundred operations, and that check_invariants() stays cheap.
constexpr Config kConfigs[] = {
    {"bump:chunk=1MiB", false},
    {"bump:chunk=64KiB", false},
    {"buddy:arena=1MiB", false},
    {"buddy:arena=256KiB,min_block=256,cache=0", false},
    {"pool.fixed:block_size=4KiB,blocks_per_chunk=16", false},
    {"pool.sizeclass:max_size=64KiB,chunk=256KiB", false},
    {"pool.coalescing:initial=4MiB", false},
    {"pool.coalescing:initial=1MiB,maximum=64MiB,release=false", false},
    {"caching.pytorch", false},
    {"caching.pytorch:max_split_size=32MiB,roundup_power2_divisions=4", false},
    {"caching.pytorch:per_process_memory_fraction=0.5,garbage_collection_threshold=0.6", false},
    {"caching.pytorch:alloc_conf=[max_split_size_mb:64,roundup_power2_divisions:[256:1,512:2,>:8]]", false},
    {"caching.pytorch:expandable_segments=true", true},
    {"caching.bfc", false},
    {"caching.bfc:allow_growth=false,memory_limit=4MiB", false},
    {"caching.bfc:garbage_collection=false", false},
    {"caching.vmm", true},
    {"caching.vmm:page_size=1MiB,small_size=256KiB", true},
};
constexpr std::uint64_t kCapacities[] = {std::uint64_t{8} << 20, std::uint64_t{32} << 20, std::uint64_t{256} << 20,
                                         std::uint64_t{4} << 30};
constexpr std::size_t kAlignments[] = {16, 16, 16, 16, 1, 8, 64, 256, 512, 1024, 4096, std::size_t{1} << 16, std::size_t{1} << 21,
                                       16, 16, 16};
// check_invariants() after every operation costs O(metadata) (buddy walks its bitmaps, caching.vmm
// recounts its pages), so inputs are capped to keep the target near a thousand executions a second.
constexpr int kMaxOps = 512;

// The input, a byte at a time; zeros after the end.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool done() const { return pos_ >= size_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

struct Block {
  std::uintptr_t p;
  std::size_t size;
  std::size_t alignment;
  StreamId stream;
  std::uint64_t allocated;  // what its allocation added to allocated_bytes
};

class Model {
 public:
  Model(Allocator& allocator, TrackingUpstream& upstream, bool synthetic)
      : allocator_(allocator), upstream_(upstream), synthetic_(synthetic) {}

  void allocate(std::size_t size, std::size_t alignment, StreamId stream) {
    const std::uint64_t before = allocator_.stats().allocated_bytes.current;
    void* p = allocator_.allocate(size, alignment, stream);
    if (p == nullptr) {
      ++failures_;
      return check("allocate");
    }
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    const auto what = [&] { return "block of " + std::to_string(size) + " B aligned " + std::to_string(alignment); };
    if (start % alignment != 0) fail(what() + ": misaligned");
    if (synthetic_) {
      if (start < kSyntheticRangeBase || start > kSyntheticRangeEnd || size > kSyntheticRangeEnd - start) {
        fail(what() + ": outside the synthetic address space");
      }
    } else if (!upstream_.holds(start, size)) {
      fail(what() + ": not inside a live upstream block");
    }
    auto next = live_.lower_bound(start);
    if (next != live_.end() && next->first < start + size) fail(what() + ": overlaps the live block after it");
    if (next != live_.begin() && std::prev(next)->first + std::prev(next)->second.size > start) {
      fail(what() + ": overlaps the live block before it");
    }
    const std::uint64_t added = allocator_.stats().allocated_bytes.current - before;
    if (added < size) fail(what() + ": allocated_bytes grew by " + std::to_string(added) + ", less than the request");
    live_.emplace(start, Block{start, size, alignment, stream, added});
    order_.push_back(start);
    ++allocs_;
    requested_ += size;
    peak_requested_ = std::max(peak_requested_, requested_);
    check("allocate");
  }

  // Frees the live block at `index` in allocation order (modulo the live count).
  void deallocate(std::size_t index) {
    if (order_.empty()) return;
    index %= order_.size();
    const std::uintptr_t start = order_[index];
    order_[index] = order_.back();
    order_.pop_back();
    const auto it = live_.find(start);
    const Block block = it->second;
    live_.erase(it);
    const std::uint64_t before = allocator_.stats().allocated_bytes.current;
    allocator_.deallocate(reinterpret_cast<void*>(block.p), block.size, block.alignment, block.stream);
    const std::uint64_t taken = before - allocator_.stats().allocated_bytes.current;
    if (taken != block.allocated) {
      fail("free of " + std::to_string(block.size) + " B took " + std::to_string(taken) + " from allocated_bytes, its allocation added " +
           std::to_string(block.allocated));
    }
    ++frees_;
    requested_ -= block.size;
    check("deallocate");
  }

  void trim() {
    allocator_.trim();
    check("trim");
  }

  void free_all() {
    while (!order_.empty()) deallocate(order_.size() - 1);
    const AllocatorStats s = allocator_.stats();
    if (s.allocated_bytes.current != 0) fail("allocated_bytes " + std::to_string(s.allocated_bytes.current) + " with no live block");
    trim();
  }

 private:
  void check(const char* after) {
    const std::string broken = allocator_.check_invariants();
    if (!broken.empty()) fail(std::string("after ") + after + ": check_invariants: " + broken);
    const AllocatorStats s = allocator_.stats();
    const auto where = [&] { return std::string("after ") + after + ": "; };
    auto expect = [&](std::uint64_t got, std::uint64_t want, const char* name) {
      if (got != want) fail(where() + name + " is " + std::to_string(got) + ", the model says " + std::to_string(want));
    };
    expect(s.allocs, allocs_, "allocs");
    expect(s.frees, frees_, "frees");
    expect(s.failed_requests, failures_, "failed_requests");
    expect(s.requested_bytes.current, requested_, "requested_bytes");
    expect(s.requested_bytes.peak, peak_requested_, "requested_bytes.peak");
    if (s.allocated_bytes.current < s.requested_bytes.current) fail(where() + "allocated_bytes below requested_bytes");
    if (s.allocated_bytes.peak < s.allocated_bytes.current) fail(where() + "allocated_bytes.peak below its current");
    if (!s.reserved_known) fail(where() + "reserved bytes unknown on a simulated device");
    const UpstreamStats u = upstream_.stats();
    expect(s.reserved_bytes.current, u.bytes.current, "reserved_bytes (vs the upstream's bytes)");
    expect(s.upstream_allocs - s.upstream_frees, upstream_.live_blocks(), "live upstream blocks");
    if (s.allocated_bytes.current > s.reserved_bytes.current) fail(where() + "allocated_bytes above reserved_bytes");
    expect(s.free_bytes, s.reserved_bytes.current - s.allocated_bytes.current, "free_bytes");
    if (s.largest_free_block > s.free_bytes) fail(where() + "largest_free_block above free_bytes");
    if (u.capacity != 0 && u.bytes.current > u.capacity) fail(where() + "the upstream holds more than its capacity");
  }

  Allocator& allocator_;
  TrackingUpstream& upstream_;
  bool synthetic_;
  std::map<std::uintptr_t, Block> live_;  // the reference interval model
  std::vector<std::uintptr_t> order_;     // live block starts, for choosing victims
  std::uint64_t allocs_ = 0, frees_ = 0, failures_ = 0, requested_ = 0, peak_requested_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  const Config& config = kConfigs[in.next() % std::size(kConfigs)];
  const std::uint64_t capacity = kCapacities[in.next() % std::size(kCapacities)];
  g_config = std::string(config.spec) + " on " + std::to_string(capacity >> 20) + " MiB";
  g_op = -1;
  TrackingUpstream upstream(capacity);
  // A configuration the registry refuses is a bug in this table, not a finding: it aborts too.
  std::unique_ptr<Allocator> allocator = make_allocator(config.spec, upstream);
  Model model(*allocator, upstream, config.synthetic);
  for (g_op = 0; g_op < kMaxOps && !in.done(); ++g_op) {
    const std::uint8_t op = in.next();
    const StreamId stream = op >> 7;
    switch (op % 8) {
      case 0: case 1: case 2: case 3: case 4: {
        // Log-spaced sizes from 1 B to 8 MiB, rarely up to 2 GiB (large segments, exhaustion).
        const std::uint8_t scale = in.next();
        const int shift = scale < 240 ? scale % 24 : 24 + (scale - 240) % 8;
        const std::uint64_t base = std::uint64_t{1} << shift;
        const std::uint64_t bytes = base + ((base * in.next()) >> 8);
        const std::size_t alignment = kAlignments[in.next() % std::size(kAlignments)];
        model.allocate(bytes, alignment, stream);
        break;
      }
      case 5: case 6:
        model.deallocate(in.next());
        break;
      default:
        if ((op >> 3) % 4 == 0) {
          model.trim();
        } else {
          model.deallocate(in.next() + 256u * in.next());
        }
    }
  }
  g_op = kMaxOps;
  model.free_all();
  return 0;
}
