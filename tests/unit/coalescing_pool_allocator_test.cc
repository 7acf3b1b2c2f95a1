// pool.coalescing: best fit, splitting, coalescing, growth (doubling, maximum, halving retry), chunk
// release and trim(), over-aligned requests, exhaustion and the chunk boundary, on the simulated device
// and on host memory. Every expected number is derived by hand from the rules in
// coalescing_pool_allocator.h (granularity 64 unless a test says otherwise); check_invariants() runs
// after every operation, and on host memory every block carries a pattern checked before its free.
#include "allocators/coalescing_pool_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "allocators/host_upstream.h"
#include "allocators/registry.h"
#include "allocators/simulated_upstream.h"
#include "common/input_error.h"
#include "tests/unit/test_support.h"

namespace tiermark {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;

static_assert(AllocatorImpl<CoalescingPoolAllocator>);

Options pool_options(const std::string& settings) {
  return make_options("pool.coalescing:" + settings, CoalescingPoolAllocator::kName,
                      CoalescingPoolAllocator::option_specs());
}

// (offset from the first chunk's base, size) of every free block, in address order.
using Layout = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

// A pool on its own memory. allocate()/deallocate() check the invariants after every operation and keep
// an independent model of live blocks (overlap, and on host memory a pattern checked before each free).
template <class Memory>
class Pool {
 public:
  Pool(const std::string& memory_spec, const std::string& settings)
      : memory_(make_options(memory_spec, Memory::kName, Memory::option_specs())),
        pool_(pool_options(settings), memory_),
        base_(pool_.chunks().empty() ? 0 : pool_.chunks().front().address),
        calls_(pool_, memory_.touchable()) {}

  void* allocate(std::size_t size, std::size_t alignment = kDefaultAlignment) { return calls_.allocate(size, alignment); }
  void deallocate(void* p, std::size_t size, std::size_t alignment = kDefaultAlignment) {
    calls_.deallocate(p, size, alignment);
  }
  void trim() { calls_.trim(); }

  std::uint64_t offset(const void* p) const { return address_of(p) - base_; }
  Layout free_layout() const {
    Layout out;
    for (const auto& block : pool_.free_blocks()) out.emplace_back(block.address - base_, block.size);
    return out;
  }
  Layout chunk_layout() const {
    Layout out;
    for (const auto& chunk : pool_.chunks()) out.emplace_back(chunk.address - base_, chunk.size);
    return out;
  }
  AllocatorStats stats() const { return pool_.stats(); }
  std::uint64_t reserved() const { return pool_.stats().reserved_bytes.current; }
  std::uintptr_t base() const { return base_; }
  CoalescingPoolAllocator& pool() { return pool_; }
  Memory& memory() { return memory_; }

 private:
  Memory memory_;
  CoalescingPoolAllocator pool_;
  std::uintptr_t base_;
  testing::CheckedCalls<CoalescingPoolAllocator> calls_;
};

using DevicePool = Pool<SimulatedUpstream>;
using HostPool = Pool<HostUpstream>;

// ---- construction and options ------------------------------------------------------------------

TEST(CoalescingPool, ConstructorTakesTheInitialChunkFromUpstream) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB");
  EXPECT_EQ(d.chunk_layout(), (Layout{{0, MiB}}));
  EXPECT_EQ(d.free_layout(), (Layout{{0, MiB}}));
  EXPECT_EQ(d.pool().floor_chunk(), d.base());
  const AllocatorStats s = d.stats();
  EXPECT_EQ(s.reserved_bytes.current, MiB);
  EXPECT_EQ(s.upstream_allocs, 1u);
  EXPECT_EQ(s.free_bytes, MiB);
  EXPECT_EQ(s.largest_free_block, MiB);
  EXPECT_EQ(d.memory().stats().bytes.current, MiB);
  EXPECT_EQ(d.pool().check_invariants(), "");

  // Defaults: a 256 MiB first chunk, granularity 64, release on; maximum unset is left out.
  SimulatedUpstream device(make_options("simulated:capacity=1GiB", "simulated", SimulatedUpstream::option_specs()));
  const Options defaults = make_options("pool.coalescing", "pool.coalescing", CoalescingPoolAllocator::option_specs());
  EXPECT_EQ(defaults.canonical(), "pool.coalescing:initial=256MiB,alignment=64,release=true");
  CoalescingPoolAllocator pool(defaults, device);
  EXPECT_EQ(pool.stats().reserved_bytes.current, 256 * MiB);
  EXPECT_EQ(pool.granularity(), 64u);
  EXPECT_EQ(pool.check_invariants(), "");

  // Through the registry (the virtual adapter) as the CLI builds it.
  auto adapted = make_allocator("pool.coalescing:initial=1MiB", device);
  void* p = adapted->allocate(100, 16, 0);
  EXPECT_NE(p, nullptr);
  EXPECT_EQ(adapted->stats().allocated_bytes.current, 128u);  // 100 rounded up to 64 -> 128
  adapted->deallocate(p, 100, 16, 0);
  EXPECT_EQ(adapted->check_invariants(), "");
}

TEST(CoalescingPool, RejectsBadOptions) {
  SimulatedUpstream device(make_options("simulated:capacity=1GiB", "simulated", SimulatedUpstream::option_specs()));
  auto build = [&](const std::string& settings) { CoalescingPoolAllocator pool(pool_options(settings), device); };
  EXPECT_THROW(build("initial=1MiB,alignment=48"), InputError);    // not a power of two
  EXPECT_THROW(build("initial=1MiB,alignment=8"), InputError);     // below 16
  EXPECT_THROW(build("initial=4GiB,alignment=2GiB"), InputError);  // above 1 GiB
  EXPECT_THROW(build("initial=1000"), InputError);                 // not a multiple of 64
  EXPECT_THROW(build("initial=1MiB,maximum=512KiB"), InputError);  // maximum below initial
  EXPECT_THROW(build("initial=0,maximum=32"), InputError);         // maximum below the granularity
  EXPECT_NO_THROW(build("initial=0,alignment=16"));
  EXPECT_EQ(device.stats().bytes.current, 0u) << "nothing is kept by rejected or destroyed pools";
}

TEST(CoalescingPool, UpstreamRefusingTheInitialChunkIsAConfigurationError) {
  SimulatedUpstream device(make_options("simulated:capacity=1MiB", "simulated", SimulatedUpstream::option_specs()));
  try {
    CoalescingPoolAllocator pool(pool_options("initial=2MiB"), device);
    ADD_FAILURE() << "a 2 MiB first chunk on a 1 MiB device must be refused";
  } catch (const InputError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("initial"), std::string::npos) << message;
    EXPECT_NE(message.find("2MiB"), std::string::npos) << message;
    EXPECT_NE(message.find("2097152 bytes"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
  }
  HostUpstream host(make_options("host:capacity=1MiB", "host", HostUpstream::option_specs()));
  EXPECT_THROW([&] { CoalescingPoolAllocator pool(pool_options("initial=2MiB"), host); }(), InputError);
}

// ---- best fit and splitting ----------------------------------------------------------------------

TEST(CoalescingPool, BestFitTakesTheSmallestBlockAndTheLowestAddressOnTies) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB");
  // Holes of 256, 128, 192, 128 bytes kept apart by live 64-byte separators; carved front to back.
  const std::uint64_t sizes[] = {256, 64, 128, 64, 192, 64, 128, 64};
  std::vector<void*> blocks;
  std::uint64_t expected_offset = 0;
  for (std::uint64_t size : sizes) {
    blocks.push_back(d.allocate(size));
    EXPECT_EQ(d.offset(blocks.back()), expected_offset);
    expected_offset += size;  // 0, 256, 320, 448, 512, 704, 768, 896; the tail starts at 960
  }
  // Freed from the highest hole down, so neither recency nor LIFO order can explain the choices below.
  for (int i : {6, 4, 2, 0}) d.deallocate(blocks[i], sizes[i]);
  EXPECT_EQ(d.free_layout(), (Layout{{0, 256}, {320, 128}, {512, 192}, {768, 128}, {960, MiB - 960}}));
  EXPECT_EQ(d.stats().largest_free_block, MiB - 960);

  void* a = d.allocate(100);  // 128: two 128-byte holes, the lower one (320) wins
  EXPECT_EQ(d.offset(a), 320u);
  void* b = d.allocate(128);  // the other 128-byte hole
  EXPECT_EQ(d.offset(b), 768u);
  void* c = d.allocate(129);  // 192: the 192-byte hole, though the 256-byte one fits too
  EXPECT_EQ(d.offset(c), 512u);
  void* e = d.allocate(1);  // 64: the smallest block left is the 256-byte hole; its tail stays free
  EXPECT_EQ(d.offset(e), 0u);
  EXPECT_EQ(d.free_layout(), (Layout{{64, 192}, {960, MiB - 960}}));
  void* f = d.allocate(200);  // 256: the 192-byte remainder is too small, so the big tail serves it
  EXPECT_EQ(d.offset(f), 960u);
  EXPECT_EQ(d.free_layout(), (Layout{{64, 192}, {1216, MiB - 1216}}));
  EXPECT_EQ(d.stats().upstream_allocs, 1u);
}

TEST(CoalescingPool, SplitLeavesTheExactRemainder) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB");
  void* a = d.allocate(1000);  // 1000 -> 1024
  EXPECT_EQ(d.offset(a), 0u);
  EXPECT_EQ(d.free_layout(), (Layout{{1024, MiB - 1024}}));
  AllocatorStats s = d.stats();
  EXPECT_EQ(s.requested_bytes.current, 1000u);
  EXPECT_EQ(s.allocated_bytes.current, 1024u);
  EXPECT_EQ(s.free_bytes, MiB - 1024);
  EXPECT_EQ(s.largest_free_block, MiB - 1024);
  void* b = d.allocate(1);  // 1 -> 64, right after a
  EXPECT_EQ(d.offset(b), 1024u);
  EXPECT_EQ(d.free_layout(), (Layout{{1088, MiB - 1088}}));
  void* c = d.allocate(MiB - 1088);  // exactly the rest: no remainder, no growth
  EXPECT_EQ(d.offset(c), 1088u);
  EXPECT_EQ(d.free_layout(), Layout{});
  s = d.stats();
  EXPECT_EQ(s.largest_free_block, 0u);
  EXPECT_EQ(s.free_bytes, 0u);
  EXPECT_EQ(s.upstream_allocs, 1u);
  d.deallocate(b, 1);
  d.deallocate(a, 1000);
  d.deallocate(c, MiB - 1088);
  EXPECT_EQ(d.free_layout(), (Layout{{0, MiB}}));

  DevicePool coarse("simulated:capacity=1GiB", "initial=1MiB,alignment=256");
  void* g = coarse.allocate(1);  // 1 -> 256 with granularity 256
  EXPECT_EQ(coarse.free_layout(), (Layout{{256, MiB - 256}}));
  EXPECT_EQ(coarse.stats().allocated_bytes.current, 256u);
  coarse.deallocate(g, 1);
}

// ---- coalescing ----------------------------------------------------------------------------------

// Four 256-byte blocks A, B, C, D at 0, 256, 512, 768; the chunk's free tail starts at 1024.
struct FourBlocks {
  DevicePool d{"simulated:capacity=1GiB", "initial=1MiB"};
  void* a = d.allocate(256);
  void* b = d.allocate(256);
  void* c = d.allocate(256);
  void* e = d.allocate(256);  // "D"
};

TEST(CoalescingPool, FreeCoalescesWithThePreviousBlock) {
  FourBlocks f;
  f.d.deallocate(f.a, 256);
  EXPECT_EQ(f.d.free_layout(), (Layout{{0, 256}, {1024, MiB - 1024}}));
  f.d.deallocate(f.b, 256);  // previous A is free, next C is live
  EXPECT_EQ(f.d.free_layout(), (Layout{{0, 512}, {1024, MiB - 1024}}));
  f.d.deallocate(f.c, 256);
  f.d.deallocate(f.e, 256);
}

TEST(CoalescingPool, FreeCoalescesWithTheNextBlock) {
  FourBlocks f;
  f.d.deallocate(f.c, 256);
  EXPECT_EQ(f.d.free_layout(), (Layout{{512, 256}, {1024, MiB - 1024}}));
  f.d.deallocate(f.b, 256);  // next C is free, previous A is live
  EXPECT_EQ(f.d.free_layout(), (Layout{{256, 512}, {1024, MiB - 1024}}));
  f.d.deallocate(f.e, 256);  // previous [256, 768) and the tail: both sides
  EXPECT_EQ(f.d.free_layout(), (Layout{{256, MiB - 256}}));
  f.d.deallocate(f.a, 256);  // next only, and the chunk is whole again
  EXPECT_EQ(f.d.free_layout(), (Layout{{0, MiB}}));
}

TEST(CoalescingPool, FreeCoalescesWithBothNeighbours) {
  FourBlocks f;
  f.d.deallocate(f.a, 256);
  f.d.deallocate(f.c, 256);
  EXPECT_EQ(f.d.free_layout(), (Layout{{0, 256}, {512, 256}, {1024, MiB - 1024}}));
  f.d.deallocate(f.b, 256);  // A + B + C = 768 bytes; D still live
  EXPECT_EQ(f.d.free_layout(), (Layout{{0, 768}, {1024, MiB - 1024}}));
  EXPECT_EQ(f.d.stats().largest_free_block, MiB - 1024);
  f.d.deallocate(f.e, 256);
  EXPECT_EQ(f.d.free_layout(), (Layout{{0, MiB}}));
  EXPECT_EQ(f.d.stats().free_bytes, MiB);
}

// Every free order (forward, reverse, random with several seeds, random interleaved with new
// allocations) ends with one free block per chunk; with release=true only the floor is left.
template <class Memory>
void free_orders_coalesce(const std::string& memory_spec, bool release) {
  enum class Order { kForward, kReverse, kRandom, kInterleaved };
  for (Order order : {Order::kForward, Order::kReverse, Order::kRandom, Order::kInterleaved}) {
    const int seeds = order == Order::kForward || order == Order::kReverse ? 1 : 4;
    for (int seed = 1; seed <= seeds; ++seed) {
      SCOPED_TRACE("order " + std::to_string(static_cast<int>(order)) + " seed " + std::to_string(seed));
      Pool<Memory> d(memory_spec, std::string("initial=1MiB,release=") + (release ? "true" : "false"));
      std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
      std::uniform_int_distribution<std::size_t> size_of(1, 16 * KiB);
      const std::size_t alignments[] = {16, 16, 16, 64, 256, 4096};
      struct Live {
        void* p;
        std::size_t size;
        std::size_t alignment;
      };
      std::vector<Live> live;
      auto add = [&] {
        const std::size_t size = size_of(rng);
        const std::size_t alignment = alignments[rng() % std::size(alignments)];
        void* p = d.allocate(size, alignment);
        ASSERT_NE(p, nullptr);
        live.push_back({p, size, alignment});
      };
      auto remove = [&](std::size_t i) {
        d.deallocate(live[i].p, live[i].size, live[i].alignment);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      };
      for (int i = 0; i < 500; ++i) add();
      ASSERT_GT(d.pool().chunks().size(), 1u) << "500 blocks of up to 16 KiB outgrow a 1 MiB chunk";
      if (order == Order::kInterleaved) {
        for (int i = 0; i < 1500; ++i) {
          remove(rng() % live.size());
          if (rng() % 2 == 0) add();
          if (live.empty()) add();
        }
      }
      const std::uint64_t reserved_before = d.reserved();
      while (!live.empty()) {
        switch (order) {
          case Order::kForward: remove(0); break;
          case Order::kReverse: remove(live.size() - 1); break;
          default: remove(rng() % live.size()); break;
        }
      }
      const std::vector<CoalescingPoolAllocator::Range> free = d.pool().free_blocks();
      const std::span<const CoalescingPoolAllocator::Range> chunks = d.pool().chunks();
      ASSERT_EQ(free.size(), chunks.size());
      for (std::size_t i = 0; i < free.size(); ++i) {
        EXPECT_EQ(free[i].address, chunks[i].address);
        EXPECT_EQ(free[i].size, chunks[i].size);
      }
      if (release) {
        EXPECT_EQ(d.chunk_layout(), (Layout{{0, MiB}})) << "only the floor survives";
      } else {
        EXPECT_EQ(d.reserved(), reserved_before) << "nothing released with release=false";
      }
      EXPECT_EQ(d.stats().allocated_bytes.current, 0u);
      EXPECT_EQ(d.stats().free_bytes, d.reserved());
    }
  }
}

TEST(CoalescingPool, EveryFreeOrderCoalescesToOneBlockPerChunkOnTheDevice) {
  free_orders_coalesce<SimulatedUpstream>("simulated:capacity=1GiB", false);
  free_orders_coalesce<SimulatedUpstream>("simulated:capacity=1GiB", true);
}

TEST(CoalescingPool, EveryFreeOrderCoalescesToOneBlockPerChunkOnHostMemory) {
  free_orders_coalesce<HostUpstream>("host:capacity=64MiB", false);
  free_orders_coalesce<HostUpstream>("host:capacity=64MiB", true);
}

TEST(CoalescingPool, BlocksNeverMergeAcrossChunks) {
  for (bool free_first_chunk_first : {true, false}) {
    DevicePool d("simulated:capacity=1GiB", "initial=1MiB,release=false");
    void* a = d.allocate(MiB);  // fills chunk 1
    void* b = d.allocate(MiB);  // grows by max(1 MiB, pool 1 MiB) = 1 MiB
    // The device carves first fit, so chunk 2 starts exactly where chunk 1 ends: they touch.
    ASSERT_EQ(d.chunk_layout(), (Layout{{0, MiB}, {MiB, MiB}}));
    if (free_first_chunk_first) {
      d.deallocate(a, MiB);
      d.deallocate(b, MiB);  // its previous neighbour is free and adjacent, but in chunk 1
    } else {
      d.deallocate(b, MiB);
      d.deallocate(a, MiB);  // its next neighbour is free and adjacent, but in chunk 2
    }
    EXPECT_EQ(d.free_layout(), (Layout{{0, MiB}, {MiB, MiB}}));
    EXPECT_EQ(d.stats().largest_free_block, MiB);
    // 1 MiB + 64 fits in neither: grow by max(1 MiB + 64, pool 2 MiB) = 2 MiB, at offset 2 MiB.
    void* c = d.allocate(MiB + 64);
    EXPECT_EQ(d.offset(c), 2 * MiB);
    EXPECT_EQ(d.reserved(), 4 * MiB);
    d.deallocate(c, MiB + 64);
  }
}

// ---- growth ---------------------------------------------------------------------------------------

TEST(CoalescingPool, GrowthDoublesThePool) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB,release=false");
  // 1 MiB requests: a miss grows by max(1 MiB, pool size), so the pool doubles: 1 MiB fills the first
  // chunk; the 2nd takes a 1 MiB chunk (2 MiB); the 3rd a 2 MiB chunk (4 MiB) whose other half serves
  // the 4th; the 5th a 4 MiB chunk (8 MiB) serving the 5th to 8th; the 9th an 8 MiB chunk (16 MiB).
  const std::uint64_t reserved_after[] = {1, 2, 4, 4, 8, 8, 8, 8, 16};
  const std::uint64_t upstream_allocs_after[] = {1, 2, 3, 3, 4, 4, 4, 4, 5};
  std::vector<void*> blocks;
  for (std::size_t i = 0; i < std::size(reserved_after); ++i) {
    blocks.push_back(d.allocate(MiB));
    ASSERT_NE(blocks.back(), nullptr);
    EXPECT_EQ(d.reserved(), reserved_after[i] * MiB) << "after request " << i + 1;
    EXPECT_EQ(d.stats().upstream_allocs, upstream_allocs_after[i]) << "after request " << i + 1;
  }
  // A request larger than the pool: max(40 MiB, 16 MiB) = 40 MiB.
  blocks.push_back(d.allocate(40 * MiB));
  EXPECT_EQ(d.reserved(), 56 * MiB);
  EXPECT_EQ(d.chunk_layout(), (Layout{{0, MiB}, {MiB, MiB}, {2 * MiB, 2 * MiB}, {4 * MiB, 4 * MiB},
                                      {8 * MiB, 8 * MiB}, {16 * MiB, 40 * MiB}}));
  EXPECT_EQ(d.stats().reserved_bytes.peak, 56 * MiB);
  EXPECT_EQ(d.memory().stats().bytes.current, 56 * MiB);
  EXPECT_EQ(d.stats().failed_requests, 0u);
  for (std::size_t i = 0; i < std::size(reserved_after); ++i) d.deallocate(blocks[i], MiB);
  d.deallocate(blocks.back(), 40 * MiB);
}

TEST(CoalescingPool, MaximumCapsGrowthAndTurnsTheRestIntoCountedFailures) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB,maximum=4MiB,release=false");
  void* a1 = d.allocate(MiB);  // fills the 1 MiB floor
  // room 3 MiB: grow by max(1 MiB, 3 MiB / 2) = 1.5 MiB -> 2.5 MiB; 0.5 MiB of it stays free
  void* a2 = d.allocate(MiB);
  EXPECT_EQ(d.reserved(), 2 * MiB + 512 * KiB);
  // 0.5 MiB free is too small; room 1.5 MiB: grow by max(1 MiB, 0.75 MiB) = 1 MiB -> 3.5 MiB
  void* a3 = d.allocate(MiB);
  EXPECT_EQ(d.reserved(), 3 * MiB + 512 * KiB);
  // room 0.5 MiB < 1 MiB: a counted failure, upstream never asked
  EXPECT_EQ(d.allocate(MiB), nullptr);
  EXPECT_EQ(d.stats().failed_requests, 1u);
  EXPECT_EQ(d.memory().stats().failed, 0u);
  void* a4 = d.allocate(512 * KiB);  // the free half of the 1.5 MiB chunk: no growth
  EXPECT_EQ(d.offset(a4), 2 * MiB);
  EXPECT_EQ(d.reserved(), 3 * MiB + 512 * KiB);
  // nothing free; room 0.5 MiB: grow by max(256 KiB, 256 KiB) = 256 KiB -> 3.75 MiB
  void* a5 = d.allocate(256 * KiB);
  EXPECT_EQ(d.reserved(), 3 * MiB + 768 * KiB);
  EXPECT_EQ(d.allocate(512 * KiB), nullptr);  // room 256 KiB < 512 KiB
  EXPECT_EQ(d.stats().failed_requests, 2u);
  // room 256 KiB: grow by max(256 KiB, 128 KiB) = 256 KiB -> exactly the 4 MiB maximum
  void* a6 = d.allocate(256 * KiB);
  EXPECT_EQ(d.reserved(), 4 * MiB);
  EXPECT_EQ(d.allocate(1), nullptr);  // room 0
  EXPECT_EQ(d.stats().failed_requests, 3u);
  EXPECT_EQ(d.stats().upstream_allocs, 5u);
  EXPECT_EQ(d.stats().reserved_bytes.peak, 4 * MiB);
  // A free makes room again without growth.
  d.deallocate(a1, MiB);
  void* again = d.allocate(MiB);
  EXPECT_EQ(d.offset(again), 0u);
  EXPECT_EQ(d.stats().upstream_allocs, 5u);
  const std::vector<std::pair<void*, std::uint64_t>> live = {{again, MiB},     {a2, MiB},       {a3, MiB},
                                                              {a4, 512 * KiB}, {a5, 256 * KiB}, {a6, 256 * KiB}};
  for (const auto& [p, size] : live) d.deallocate(p, size);
}

TEST(CoalescingPool, HalvesTheGrowthWhileUpstreamRefuses) {
  DevicePool d("simulated:capacity=5MiB", "initial=4MiB,release=false");
  void* a = d.allocate(4 * MiB);  // fills the floor; 1 MiB of the device is left
  // grow by max(64, 4 MiB) = 4 MiB: refused; 2 MiB: refused; 1 MiB: granted
  void* b = d.allocate(64);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(d.offset(b), 4 * MiB);
  EXPECT_EQ(d.memory().stats().failed, 2u);
  EXPECT_EQ(d.chunk_layout(), (Layout{{0, 4 * MiB}, {4 * MiB, MiB}}));
  EXPECT_EQ(d.reserved(), 5 * MiB);
  EXPECT_EQ(d.stats().failed_requests, 0u);
  // 1 MiB - 64 free is too small for 2 MiB: 5 MiB, 2.5 MiB and then 2 MiB itself are refused
  EXPECT_EQ(d.allocate(2 * MiB), nullptr);
  EXPECT_EQ(d.memory().stats().failed, 5u);
  EXPECT_EQ(d.stats().failed_requests, 1u);
  EXPECT_EQ(d.reserved(), 5 * MiB);
  d.deallocate(a, 4 * MiB);
  d.deallocate(b, 64);
}

// ---- release and trim ------------------------------------------------------------------------------

TEST(CoalescingPool, ReleasesAGrownChunkWhenWhollyFreeButNeverTheFloor) {
  for (bool release : {true, false}) {
    DevicePool d("simulated:capacity=1GiB", std::string("initial=1MiB,release=") + (release ? "true" : "false"));
    void* a = d.allocate(MiB);  // fills the floor
    void* b = d.allocate(64);   // grows by max(64, 1 MiB) = 1 MiB
    void* c = d.allocate(64);
    EXPECT_EQ(d.offset(c), MiB + 64);
    EXPECT_EQ(d.reserved(), 2 * MiB);
    d.deallocate(b, 64);  // c is still live in chunk 2
    EXPECT_EQ(d.free_layout(), (Layout{{MiB, 64}, {MiB + 128, MiB - 128}}));
    EXPECT_EQ(d.reserved(), 2 * MiB);
    d.deallocate(c, 64);  // merges with both neighbours: chunk 2 is one whole free block
    if (release) {
      EXPECT_EQ(d.chunk_layout(), (Layout{{0, MiB}}));
      EXPECT_EQ(d.reserved(), MiB);
      EXPECT_EQ(d.stats().upstream_frees, 1u);
      EXPECT_EQ(d.memory().stats().bytes.current, MiB);
    } else {
      EXPECT_EQ(d.free_layout(), (Layout{{MiB, MiB}}));
      EXPECT_EQ(d.reserved(), 2 * MiB);
      EXPECT_EQ(d.stats().upstream_frees, 0u);
    }
    d.deallocate(a, MiB);  // the floor is wholly free too, and kept either way
    EXPECT_EQ(d.reserved(), release ? MiB : 2 * MiB);
    EXPECT_EQ(d.stats().upstream_frees, release ? 1u : 0u);
    EXPECT_EQ(d.pool().floor_chunk(), d.base());
  }
}

TEST(CoalescingPool, TrimReleasesEveryWhollyFreeChunkTheFloorIncluded) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB,release=false");
  void* a = d.allocate(MiB);      // fills the floor
  void* b = d.allocate(64);       // chunk 2: max(64, 1 MiB) = 1 MiB
  void* c = d.allocate(2 * MiB);  // too big for chunk 2's rest: chunk 3, max(2 MiB, 2 MiB) = 2 MiB
  EXPECT_EQ(d.chunk_layout(), (Layout{{0, MiB}, {MiB, MiB}, {2 * MiB, 2 * MiB}}));
  d.deallocate(b, 64);
  d.trim();  // only chunk 2 is wholly free
  EXPECT_EQ(d.chunk_layout(), (Layout{{0, MiB}, {2 * MiB, 2 * MiB}}));
  EXPECT_EQ(d.reserved(), 3 * MiB);
  EXPECT_EQ(d.stats().upstream_frees, 1u);
  d.deallocate(a, MiB);
  d.deallocate(c, 2 * MiB);
  d.trim();  // now both, the floor included
  EXPECT_EQ(d.chunk_layout(), Layout{});
  EXPECT_EQ(d.reserved(), 0u);
  EXPECT_EQ(d.stats().upstream_frees, 3u);
  EXPECT_EQ(d.stats().largest_free_block, 0u);
  EXPECT_EQ(d.memory().stats().bytes.current, 0u);
  EXPECT_EQ(d.pool().floor_chunk(), 0u);
  // An empty pool grows by max(request, pool 0) = the request: 100 -> 128, and that chunk is the new floor.
  void* e = d.allocate(100);
  EXPECT_EQ(d.reserved(), 128u);
  ASSERT_EQ(d.pool().chunks().size(), 1u);
  EXPECT_EQ(d.pool().floor_chunk(), d.pool().chunks()[0].address);
  d.deallocate(e, 100);
}

TEST(CoalescingPool, ANewFloorAfterTrimIsKeptWithRelease) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB");
  d.trim();  // the untouched floor goes back
  EXPECT_EQ(d.reserved(), 0u);
  void* a = d.allocate(100);  // grows by 128 and makes it the floor
  d.deallocate(a, 100);
  EXPECT_EQ(d.reserved(), 128u) << "the floor stays although release=true";
  void* b = d.allocate(1000);  // 1024 > 128: grows by max(1024, 128) = 1024, not a floor
  EXPECT_EQ(d.reserved(), 128u + 1024u);
  d.deallocate(b, 1000);
  EXPECT_EQ(d.reserved(), 128u) << "released at once";
  EXPECT_EQ(d.stats().upstream_frees, 2u);  // the first floor in trim(), then the 1 KiB chunk
}

// ---- alignment ------------------------------------------------------------------------------------

// For granularity g, a g-byte block X at offset 0 leaves the free tail at g. A request of 100 bytes
// (100 rounded to g: 112 for g = 16, 128 for g = 64) aligned to A then lands at g when A <= g, else at
// offset A (chunk bases are 4 KiB aligned), leaving the pad [g, A) as a free block and the tail free.
template <class Memory>
void every_alignment(const std::string& memory_spec) {
  for (std::uint64_t g : {16u, 64u}) {
    for (std::uint64_t alignment = 1; alignment <= 4096; alignment *= 2) {
      SCOPED_TRACE("granularity " + std::to_string(g) + " alignment " + std::to_string(alignment));
      Pool<Memory> d(memory_spec, "initial=1MiB,alignment=" + std::to_string(g));
      ASSERT_EQ(d.base() % 4096, 0u) << "precondition: the chunk base is 4 KiB aligned";
      const std::uint64_t bytes = g == 16 ? 112 : 128;
      void* x = d.allocate(g);
      void* p = d.allocate(100, alignment);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(address_of(p) % alignment, 0u);
      EXPECT_EQ(d.stats().allocated_bytes.current, g + bytes);
      if (alignment <= g) {
        EXPECT_EQ(d.offset(p), g);
        EXPECT_EQ(d.free_layout(), (Layout{{g + bytes, MiB - g - bytes}}));
      } else {
        EXPECT_EQ(d.offset(p), alignment);
        EXPECT_EQ(d.free_layout(), (Layout{{g, alignment - g}, {alignment + bytes, MiB - alignment - bytes}}));
      }
      d.deallocate(p, 100, alignment);  // merges with the pad and the tail
      EXPECT_EQ(d.free_layout(), (Layout{{g, MiB - g}}));
      d.deallocate(x, g);
      EXPECT_EQ(d.free_layout(), (Layout{{0, MiB}}));
    }
  }
}

TEST(CoalescingPool, EveryAlignmentUpTo4KiBReturnsThePadAsAFreeBlockOnTheDevice) {
  every_alignment<SimulatedUpstream>("simulated:capacity=1GiB");
}

TEST(CoalescingPool, EveryAlignmentUpTo4KiBReturnsThePadAsAFreeBlockOnHostMemory) {
  every_alignment<HostUpstream>("host:capacity=64MiB");
}

TEST(CoalescingPool, OveralignedRequestsPreferAnExactAlignedHole) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB");
  void* a = d.allocate(4096);  // 0
  void* s1 = d.allocate(64);   // 4096
  void* c = d.allocate(8192);  // 4160: not 4 KiB aligned
  void* s2 = d.allocate(64);   // 12352; the tail starts at 12416
  d.deallocate(a, 4096);
  d.deallocate(c, 8192);
  EXPECT_EQ(d.free_layout(), (Layout{{0, 4096}, {4160, 8192}, {12416, MiB - 12416}}));
  // 4096 aligned to 4096: the 4096-byte hole at 0 is aligned, the smallest that fits.
  void* p = d.allocate(4096, 4096);
  EXPECT_EQ(d.offset(p), 0u);
  EXPECT_EQ(d.free_layout(), (Layout{{4160, 8192}, {12416, MiB - 12416}}));
  // Again: the smallest block of at least 4096 + 4096 - 64 = 8128 is [4160, 12352); aligned up to 8192
  // it leaves the pad [4160, 8192) of 4032 bytes and the tail [12288, 12352) of 64 bytes free.
  void* q = d.allocate(4096, 4096);
  EXPECT_EQ(d.offset(q), 8192u);
  EXPECT_EQ(d.free_layout(), (Layout{{4160, 4032}, {12288, 64}, {12416, MiB - 12416}}));
  d.deallocate(q, 4096, 4096);
  EXPECT_EQ(d.free_layout(), (Layout{{4160, 8192}, {12416, MiB - 12416}}));
  d.deallocate(p, 4096, 4096);
  d.deallocate(s1, 64);
  d.deallocate(s2, 64);
  EXPECT_EQ(d.free_layout(), (Layout{{0, MiB}}));
}

TEST(CoalescingPool, AnOveralignedMissGrowsEnoughForThePad) {
  DevicePool d("simulated:capacity=1GiB", "initial=1MiB,release=false");
  void* a = d.allocate(MiB);
  // needs 128 + 4096 - 64 = 4160 bytes; grows by max(4160, 1 MiB) = 1 MiB, whose base (offset 1 MiB)
  // is already 4 KiB aligned: no pad.
  void* p = d.allocate(100, 4096);
  EXPECT_EQ(d.offset(p), MiB);
  EXPECT_EQ(d.reserved(), 2 * MiB);
  EXPECT_EQ(d.free_layout(), (Layout{{MiB + 128, MiB - 128}}));
  d.deallocate(p, 100, 4096);
  d.deallocate(a, MiB);
}

// ---- exhaustion -------------------------------------------------------------------------------------

TEST(CoalescingPool, ExhaustionIsACountedFailureAndFreesRecover) {
  DevicePool d("simulated:capacity=1MiB", "initial=1MiB");
  std::vector<void*> blocks;
  for (int i = 0; i < 16; ++i) blocks.push_back(d.allocate(64 * KiB));  // 16 x 64 KiB = the whole chunk
  EXPECT_EQ(d.free_layout(), Layout{});
  EXPECT_EQ(d.allocate(64), nullptr);
  EXPECT_EQ(d.stats().failed_requests, 1u);
  // The device is full: growth tries max(64, 1 MiB) = 1 MiB and halves down to 64 bytes,
  // 2^20, 2^19, ..., 2^6: 15 refusals.
  EXPECT_EQ(d.memory().stats().failed, 15u);
  d.deallocate(blocks[5], 64 * KiB);
  void* again = d.allocate(64 * KiB);  // the only hole
  EXPECT_EQ(d.offset(again), 5 * 64 * KiB);
  EXPECT_EQ(d.stats().failed_requests, 1u);
  blocks[5] = again;
  // Sizes no arithmetic could round fail without asking upstream.
  EXPECT_EQ(d.allocate(std::size_t{1} << 63), nullptr);
  EXPECT_EQ(d.allocate(~std::size_t{0}), nullptr);
  EXPECT_EQ(d.stats().failed_requests, 3u);
  EXPECT_EQ(d.memory().stats().failed, 15u);
  for (void* p : blocks) d.deallocate(p, 64 * KiB);
  EXPECT_EQ(d.free_layout(), (Layout{{0, MiB}}));

  HostPool h("host:capacity=64MiB", "initial=1MiB,maximum=1MiB");
  void* whole = h.allocate(MiB);
  EXPECT_NE(whole, nullptr);
  EXPECT_EQ(h.allocate(16), nullptr);  // the maximum leaves no room: upstream is never asked
  EXPECT_EQ(h.stats().failed_requests, 1u);
  EXPECT_EQ(h.memory().stats().failed, 0u);
  h.deallocate(whole, MiB);
  void* small = h.allocate(16);
  EXPECT_EQ(h.offset(small), 0u);
  h.deallocate(small, 16);
}

// ---- host memory under churn ------------------------------------------------------------------------

TEST(CoalescingPool, RandomChurnOnHostMemoryKeepsBlocksIntact) {
  HostPool h("host:capacity=64MiB", "initial=1MiB");
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<std::size_t> size_of(1, 64 * KiB);
  const std::size_t alignments[] = {1, 16, 64, 128, 512, 4096};
  struct Live {
    void* p;
    std::size_t size;
    std::size_t alignment;
  };
  std::vector<Live> live;
  std::uint64_t requested = 0;
  for (int op = 0; op < 20000; ++op) {
    if (live.empty() || (live.size() < 300 && rng() % 100 < 55)) {
      const std::size_t size = size_of(rng);
      const std::size_t alignment = alignments[rng() % std::size(alignments)];
      void* p = h.allocate(size, alignment);
      ASSERT_NE(p, nullptr) << "op " << op;
      live.push_back({p, size, alignment});
      requested += size;
    } else {
      const std::size_t i = rng() % live.size();
      h.deallocate(live[i].p, live[i].size, live[i].alignment);
      requested -= live[i].size;
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(h.stats().requested_bytes.current, requested) << "op " << op;
  }
  for (const Live& block : live) h.deallocate(block.p, block.size, block.alignment);
  EXPECT_EQ(h.chunk_layout(), (Layout{{0, MiB}})) << "release=true leaves the floor alone";
  EXPECT_EQ(h.memory().stats().bytes.current, MiB);
}

// ---- the node pool --------------------------------------------------------------------------------

TEST(NodePool, RecyclesLastInFirstOutAndGrowsBySlabs) {
  struct Probe {
    std::uint64_t value;
  };
  detail::NodePool<Probe> pool;
  EXPECT_EQ(pool.capacity(), 0u);
  Probe* a = pool.make(std::uint64_t{1});
  Probe* b = pool.make(std::uint64_t{2});
  EXPECT_EQ(pool.capacity(), 64u);  // the first slab is kMinSlab nodes
  EXPECT_EQ(b, a + 1) << "a slab is handed out in address order";
  EXPECT_EQ(pool.live(), 2u);
  pool.recycle(a);
  EXPECT_EQ(pool.make(std::uint64_t{3}), a) << "the last node recycled comes back first";
  EXPECT_EQ(a->value, 3u);
  ASSERT_TRUE(pool.reserve(100));
  EXPECT_EQ(pool.capacity(), 128u);  // a second slab as large as the pool so far: 64 + 64
  EXPECT_EQ(pool.live() + pool.count_free(), pool.capacity());
}

}  // namespace
}  // namespace tiermark
