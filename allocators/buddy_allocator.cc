#include "allocators/buddy_allocator.h"

#include <algorithm>
#include <cassert>
#include <exception>
#include <iterator>
#include <utility>

#include "allocators/bits.h"

namespace tiermark {
namespace {

const std::vector<OptionSpec> kBuddyOptions = {
    // 512 B: PyTorch's CUDA caching allocator rounds every request to at least 512 bytes
    // (kMinBlockSize, c10/cuda/CUDACachingAllocator.cpp).
    {"min_block", OptionType::kSize, "512", "the order-0 block size: a power of two, at least 16B"},
    {"arena", OptionType::kSize, "1GiB",
     "bytes taken from upstream at a time: a power of two >= min_block; a larger request gets a dedicated arena"},
    {"cache", OptionType::kCount, "8",
     "freed blocks kept unmerged per order and handed straight back to the next request of that order (0: eager buddy)"},
};

constexpr std::uint64_t kBit(unsigned i) { return std::uint64_t{1} << i; }
// Bits 0, 2, 4, ...: the left block of each buddy pair within a word.
constexpr std::uint64_t kLeftBuddies = 0x5555'5555'5555'5555;

// Bit i of the result is bit i / 2 of x: each bit doubled, as a block of order k+1 covers two of order k.
constexpr std::uint64_t double_bits(std::uint32_t x) {
  std::uint64_t v = x;
  v = (v | (v << 16)) & 0x0000'FFFF'0000'FFFF;
  v = (v | (v << 8)) & 0x00FF'00FF'00FF'00FF;
  v = (v | (v << 4)) & 0x0F0F'0F0F'0F0F'0F0F;
  v = (v | (v << 2)) & 0x3333'3333'3333'3333;
  v = (v | (v << 1)) & 0x5555'5555'5555'5555;
  return v | (v << 1);
}
static_assert(double_bits(0b101) == 0b110011);
static_assert(double_bits(0x8000'0000) == 0xC000'0000'0000'0000);

// Without -mpopcnt std::popcount is a libgcc call; the bitmaps checked here are mostly zero words.
std::uint64_t popcount_sparse(std::uint64_t word) {
  return word == 0 ? 0 : static_cast<std::uint64_t>(std::popcount(word));
}

std::string hex(std::uintptr_t address) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  do {
    out.insert(out.begin(), kDigits[address & 15]);
    address >>= 4;
  } while (address != 0);
  return "0x" + out;
}

}  // namespace

namespace detail {

BuddyArena::BuddyArena(std::uintptr_t base, unsigned shift, unsigned low, unsigned top)
    : base_(base), bytes_(kBit(top + shift)), shift_(shift), low_(low), top_(top), nonempty_(kBit(top)) {
  free_.reserve(top - low + 1);
  head_offset_.reserve(top - low + 1);
  std::uint64_t words = 0;
  for (unsigned order = low; order <= top; ++order) {
    const std::uint64_t blocks = kBit(top - order);
    free_.emplace_back(blocks);
    head_offset_.push_back(words);
    words += (blocks + 63) / 64;
  }
  heads_.assign(static_cast<std::size_t>(words), 0);
  free_.back().set(0);
}

std::uintptr_t BuddyArena::take(unsigned order) noexcept {
  unsigned k = split_order(order);
  HierarchicalBitmap& source = free_at(k);
  std::uint64_t index = source.find_first();
  if (source.clear(index)) nonempty_ &= ~kBit(k);
  // Split down to `order`, keeping the lower half each time: order k-1 had no free block (k was the
  // smallest order with one), so every upper half goes to an empty free set.
  while (k > order) {
    --k;
    index <<= 1;
    free_at(k).set(index + 1);
    nonempty_ |= kBit(k);
  }
  heads_at(order)[index >> 6] |= kBit(index & 63);
  return base_ + (index << (order + shift_));
}

void BuddyArena::give(std::uintptr_t address, unsigned order) noexcept {
  std::uint64_t index = index_of(address, order);
  heads_at(order)[index >> 6] &= ~kBit(index & 63);
  unsigned k = order;
  // Merge while the buddy (index XOR 1, i.e. offset XOR block size) is free at the same order.
  while (k < top_) {
    HierarchicalBitmap& level = free_at(k);
    if (!level.test(index ^ 1)) break;
    if (level.clear(index ^ 1)) nonempty_ &= ~kBit(k);
    index >>= 1;
    ++k;
  }
  free_at(k).set(index);
  nonempty_ |= kBit(k);
}

bool BuddyArena::is_head(std::uintptr_t address, unsigned order) const noexcept {
  if (order < low_ || order > top_ || !contains(address) || ((address - base_) & (kBit(order + shift_) - 1)) != 0) {
    return false;
  }
  const std::uint64_t index = index_of(address, order);
  return (heads_at(order)[index >> 6] >> (index & 63)) & 1u;
}

std::uint64_t BuddyArena::head_bytes() const noexcept {
  std::uint64_t bytes = 0;
  for (unsigned order = low_; order <= top_; ++order) {
    const std::uint64_t words = (kBit(top_ - order) + 63) / 64;
    std::uint64_t heads = 0;
    for (std::uint64_t w = 0; w < words; ++w) heads += popcount_sparse(heads_at(order)[w]);
    bytes += heads << (order + shift_);
  }
  return bytes;
}

std::string BuddyArena::check_invariants() const {
  const std::uint64_t orders_mask = (top_ == 63 ? ~std::uint64_t{0} : kBit(top_ + 1) - 1) & ~(kBit(low_) - 1);
  if ((nonempty_ & ~orders_mask) != 0) return "non-empty-order mask has a bit outside the arena's orders";
  for (unsigned order = low_; order <= top_; ++order) {
    const HierarchicalBitmap& free_set = free_[order - low_];
    const auto at = [order] { return "order " + std::to_string(order) + ": "; };  // built only on failure
    if (std::string why = free_set.check_invariants(); !why.empty()) return at() + why;
    if (free_set.any() != (((nonempty_ >> order) & 1u) != 0)) {
      return at() + "non-empty-order mask disagrees with the free bitmap";
    }
    if (order < top_) {
      for (const std::uint64_t word : free_set.bit_words()) {
        if ((word & (word >> 1) & kLeftBuddies) != 0) return at() + "two free buddies were not merged";
      }
    }
    const std::uint64_t blocks = kBit(top_ - order);
    if (blocks < 64 && (heads_at(order)[0] >> blocks) != 0) {
      return at() + "allocated-head bit past the end of the arena";
    }
  }
  TilingWords words;
  for (unsigned order = low_; order <= top_; ++order) {
    words.free[order] = free_[order - low_].bit_words().data();
    words.heads[order] = heads_at(order);
  }
  if (const TilingError error = check_tiling(words, top_, 0, 0); error.kind != TilingError::kNone) {
    static constexpr const char* kWhat[] = {"", "is both free and allocated",
                                            "lies inside a larger block (bytes covered twice)", "is covered by no block"};
    return "offset " + hex(error.index << (error.order + shift_)) + ": an order " + std::to_string(error.order) +
           " block " + kWhat[error.kind];
  }
  return "";
}

// Exact tiling, a word at a time, depth first from the top order down (no allocation: one word per
// level on the stack). `inherited` marks the blocks of word w at `order` that lie inside a marked
// (free or allocated) block of a higher order; adding this word's own marks gives its cover, and each
// cover bit spans two blocks of the order below (word w covers words 2w and 2w+1 there). A mark inside
// an already covered block covers bytes twice; a block at the lowest order left uncovered is a gap.
BuddyArena::TilingError BuddyArena::check_tiling(const TilingWords& words, unsigned order, std::uint64_t w,
                                                 std::uint64_t inherited) const noexcept {
  const std::uint64_t free_word = words.free[order][w];
  const std::uint64_t head_word = words.heads[order][w];
  const auto first = [&](std::uint64_t bits) { return w * 64 + static_cast<unsigned>(std::countr_zero(bits)); };
  if ((free_word & head_word) != 0) return {TilingError::kFreeAndAllocated, order, first(free_word & head_word)};
  const std::uint64_t marks = free_word | head_word;
  if ((inherited & marks) != 0) return {TilingError::kOverlap, order, first(inherited & marks)};
  const std::uint64_t cover = inherited | marks;
  const std::uint64_t blocks = kBit(top_ - order);
  if (order == low_) {
    const std::uint64_t full = blocks >= 64 ? ~std::uint64_t{0} : kBit(static_cast<unsigned>(blocks)) - 1;
    if (cover != full) return {TilingError::kGap, order, first(~cover & full)};
    return {};
  }
  const std::uint64_t below_words = (2 * blocks + 63) / 64;
  for (std::uint64_t child = 2 * w; child < 2 * w + 2 && child < below_words; ++child) {
    const auto half = static_cast<std::uint32_t>(cover >> (32 * (child % 2)));
    // Most halves are wholly covered or wholly uncovered: skip the doubling for those.
    const std::uint64_t doubled = half == 0 ? 0 : half == ~std::uint32_t{0} ? ~std::uint64_t{0} : double_bits(half);
    const TilingError error = check_tiling(words, order - 1, child, doubled);
    if (error.kind != TilingError::kNone) return error;
  }
  return {};
}

}  // namespace detail

std::span<const OptionSpec> BuddyAllocator::option_specs() { return kBuddyOptions; }

BuddyAllocator::BuddyAllocator(const Options& options, Upstream& upstream) : upstream_(upstream) {
  const std::uint64_t min_block = options.size("min_block");
  if (!is_power_of_two(min_block) || min_block < 16 || min_block > kBit(30)) {
    options.reject("min_block", "must be a power of two between 16B and 1GiB");
  }
  const std::uint64_t arena = options.size("arena");
  // At most 2^32 order-0 blocks per arena keeps one arena's metadata (4 bits per block) within 2 GiB.
  if (!is_power_of_two(arena) || arena < min_block || arena / min_block > kBit(32)) {
    options.reject("arena", "must be a power of two between min_block and min_block x 2^32");
  }
  const std::uint64_t cache = options.count("cache");
  if (cache > kBit(16)) options.reject("cache", "must be at most 65536 blocks per order");

  shift_ = log2_floor(min_block);
  top_order_ = log2_floor(arena) - shift_;
  max_order_ = 62 - shift_;
  arena_bytes_ = arena;
  cache_stride_shift_ = log2_ceil(cache);
  cache_slots_.assign(static_cast<std::size_t>(top_order_ + 1) << cache_stride_shift_, nullptr);
  for (unsigned order = 0; order <= top_order_; ++order) cache_limit_[order] = static_cast<std::uint32_t>(cache);
}

BuddyAllocator::~BuddyAllocator() {
  for (const detail::BuddyArena& arena : arenas_) {
    upstream_.deallocate(pointer_at(arena.base()), arena.bytes(), arena.bytes());
  }
}

void* BuddyAllocator::allocate_slow(std::size_t size, std::size_t alignment, unsigned order) noexcept {
  if (alignment > arena_bytes_ || order > max_order_) {
    stats_.on_failure();
    return nullptr;
  }
  std::uintptr_t address = take(order);
  if (address == 0 && order <= top_order_) {
    // A miss: merging the cached blocks may rebuild a block of this order without new memory.
    drain_caches();
    address = take(order);
  }
  if (address == 0) address = grow_and_take(order);
  if (address == 0) {
    // Upstream refused: wholly free arenas (dedicated ones, or any the drain emptied) may be what
    // stands between the request and the capacity.
    drain_caches();
    if (release_free_arenas() != 0) address = grow_and_take(order);
  }
  if (address == 0) {
    stats_.on_failure();
    return nullptr;
  }
  stats_.on_allocate(size, block_bytes(order));
  return pointer_at(address);
}

void BuddyAllocator::deallocate_slow(void* p, std::size_t size, unsigned order) noexcept {
  const std::uintptr_t address = address_of(p);
  const std::size_t index = arena_index(address);
  assert(index < arenas_.size() && arenas_[index].is_head(address, order) &&
         "buddy: freeing a block that is not live");
  mru_ = index;
  arenas_[index].give(address, order);
  stats_.on_deallocate(size, block_bytes(order));
}

void BuddyAllocator::check_live_head([[maybe_unused]] const void* p, [[maybe_unused]] unsigned order) const noexcept {
  [[maybe_unused]] const std::uintptr_t address = address_of(p);
  [[maybe_unused]] const std::size_t index = arena_index(address);
  assert(index < arenas_.size() && arenas_[index].is_head(address, order) &&
         "buddy: freeing a block that is not live");
}

std::uintptr_t BuddyAllocator::take(unsigned order) noexcept {
  if (arenas_.empty()) return 0;
  if (arenas_[mru_].can_serve(order)) return arenas_[mru_].take(order);
  // Otherwise the arena that needs the least splitting, so large free blocks stay whole.
  std::size_t best = arenas_.size();
  unsigned best_split = kOrders;
  for (std::size_t i = 0; i < arenas_.size(); ++i) {
    if (!arenas_[i].can_serve(order)) continue;
    const unsigned split = arenas_[i].split_order(order);
    if (split < best_split) {
      best = i;
      best_split = split;
      if (split == order) break;
    }
  }
  if (best == arenas_.size()) return 0;
  mru_ = best;
  return arenas_[best].take(order);
}

std::uintptr_t BuddyAllocator::grow_and_take(unsigned order) noexcept {
  const bool dedicated = order > top_order_;
  const std::uint64_t bytes = dedicated ? block_bytes(order) : arena_bytes_;
  void* memory = upstream_.allocate(bytes, bytes);
  if (memory == nullptr) return 0;
  const std::uintptr_t base = address_of(memory);
  try {
    const auto at = std::upper_bound(arenas_.begin(), arenas_.end(), base,
                                     [](std::uintptr_t a, const detail::BuddyArena& arena) { return a < arena.base(); });
    const auto placed = arenas_.emplace(at, base, shift_, dedicated ? order : 0, dedicated ? order : top_order_);
    mru_ = static_cast<std::size_t>(placed - arenas_.begin());
  } catch (const std::exception&) {
    // No host memory for the arena's metadata: as good as an upstream refusal.
    upstream_.deallocate(memory, bytes, bytes);
    return 0;
  }
  stats_.on_reserve(bytes);
  return arenas_[mru_].take(order);
}

std::size_t BuddyAllocator::release_free_arenas() noexcept {
  std::size_t kept = 0;
  std::size_t released = 0;
  for (std::size_t i = 0; i < arenas_.size(); ++i) {
    detail::BuddyArena& arena = arenas_[i];
    if (arena.wholly_free()) {
      upstream_.deallocate(pointer_at(arena.base()), arena.bytes(), arena.bytes());
      stats_.on_release(arena.bytes());
      ++released;
    } else {
      if (kept != i) arenas_[kept] = std::move(arena);
      ++kept;
    }
  }
  arenas_.erase(arenas_.begin() + static_cast<std::ptrdiff_t>(kept), arenas_.end());
  if (released != 0) mru_ = 0;
  return released;
}

void BuddyAllocator::drain_caches() noexcept {
  for (unsigned order = 0; order <= top_order_; ++order) {
    void* const* slots = cache_slots_.data() + (std::size_t{order} << cache_stride_shift_);
    for (std::uint32_t i = 0; i < cache_count_[order]; ++i) {
      const std::uintptr_t address = address_of(slots[i]);
      arenas_[arena_index(address)].give(address, order);
    }
    cache_count_[order] = 0;
  }
}

std::size_t BuddyAllocator::arena_index(std::uintptr_t address) const noexcept {
  if (!arenas_.empty() && arenas_[mru_].contains(address)) return mru_;
  const auto after = std::upper_bound(arenas_.begin(), arenas_.end(), address,
                                      [](std::uintptr_t a, const detail::BuddyArena& arena) { return a < arena.base(); });
  if (after == arenas_.begin() || !std::prev(after)->contains(address)) return arenas_.size();
  return static_cast<std::size_t>(after - arenas_.begin()) - 1;
}

AllocatorStats BuddyAllocator::stats() const {
  int largest = -1;
  for (const detail::BuddyArena& arena : arenas_) largest = std::max(largest, arena.largest_free_order());
  for (unsigned order = 0; order <= top_order_; ++order) {
    if (cache_count_[order] != 0) largest = std::max(largest, static_cast<int>(order));
  }
  return stats_.snapshot(largest < 0 ? 0 : block_bytes(static_cast<unsigned>(largest)));
}

void BuddyAllocator::trim() {
  drain_caches();
  release_free_arenas();
}

std::string BuddyAllocator::check_invariants() const {
  std::uint64_t reserved = 0;
  std::uint64_t heads = 0;
  for (std::size_t i = 0; i < arenas_.size(); ++i) {
    const detail::BuddyArena& arena = arenas_[i];
    const auto at = [&arena] { return "buddy: arena at " + hex(arena.base()) + ": "; };  // built only on failure
    if (i > 0 && arenas_[i - 1].base() + arenas_[i - 1].bytes() > arena.base()) {
      return at() + "arenas unsorted or overlapping";
    }
    if ((arena.base() & (arena.bytes() - 1)) != 0) return at() + "not aligned to its size";
    const bool standard = arena.low() == 0 && arena.top() == top_order_;
    const bool dedicated = arena.low() == arena.top() && arena.top() > top_order_ && arena.top() <= max_order_;
    if (!standard && !dedicated) return at() + "neither a standard nor a dedicated arena";
    if (std::string why = arena.check_invariants(); !why.empty()) return at() + why;
    reserved += arena.bytes();
    heads += arena.head_bytes();
  }
  if (!arenas_.empty() && mru_ >= arenas_.size()) return "buddy: most recently used arena index out of range";

  std::vector<std::uintptr_t> cached;
  std::uint64_t cached_bytes = 0;
  for (unsigned order = 0; order < kOrders; ++order) {
    const auto at = [order] { return "buddy: cache of order " + std::to_string(order) + ": "; };  // only on failure
    if (cache_limit_[order] != (order <= top_order_ ? cache_limit_[0] : 0)) return at() + "wrong limit";
    if (cache_count_[order] > cache_limit_[order]) return at() + "holds more than `cache` blocks";
    for (std::uint32_t i = 0; i < cache_count_[order]; ++i) {
      const std::uintptr_t address = address_of(cache_slots_[(std::size_t{order} << cache_stride_shift_) + i]);
      const std::size_t index = arena_index(address);
      if (index == arenas_.size() || !arenas_[index].is_head(address, order)) {
        return at() + "entry " + hex(address) + " is not an allocated head of its order";
      }
      cached.push_back(address);
      cached_bytes += block_bytes(order);
    }
  }
  std::sort(cached.begin(), cached.end());
  if (std::adjacent_find(cached.begin(), cached.end()) != cached.end()) return "buddy: a block is cached twice";

  const AllocatorStats& s = stats_.raw();
  if (heads - cached_bytes != s.allocated_bytes.current) {
    return "buddy: allocated heads minus cached blocks (" + std::to_string(heads - cached_bytes) +
           ") differ from allocated_bytes (" + std::to_string(s.allocated_bytes.current) + ")";
  }
  if (reserved != s.reserved_bytes.current) return "buddy: arena sizes differ from reserved_bytes";
  if (s.requested_bytes.current > s.allocated_bytes.current) return "buddy: requested exceeds allocated";
  return "";
}

}  // namespace tiermark
