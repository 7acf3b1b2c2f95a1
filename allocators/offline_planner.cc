// Greedy-by-size planning, the lower-bound sweep, plan validation and PlannedAllocator.
//
// Finding the placed buffers that conflict with the one being placed is the planner's inner loop.
// TFLite scans every placed buffer for each new one (O(n^2) always); here buffers sit in a max
// segment tree indexed by their rank in first_use order, holding a key derived from last_use (0 while
// unplaced), so a query visits only subtrees that contain a conflicting placed buffer:
// O((k + 1) log n) for k conflicts. The k conflicts are then sorted by offset (as XLA's
// GlobalDecreasingSizeBestFitHeap sorts the chunks its interval tree returns) and swept for gaps,
// exactly as TFLite's loop does over its offset-ordered list.
#include "allocators/offline_planner.h"

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include "common/input_error.h"

namespace tiermark {
namespace {

constexpr std::uint64_t kNoGap = std::numeric_limits<std::uint64_t>::max();

// Throws InputError naming the first buffer that no allocator could serve, and returns
// sum(size + alignment - 1), the most any greedy plan can need, checked for overflow.
std::uint64_t check_buffers(std::span<const PlannedBuffer> buffers) {
  std::uint64_t bound = 0;
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const PlannedBuffer& b = buffers[i];
    const auto reject = [&](const std::string& what) { throw InputError("planner: buffer " + std::to_string(i) + ": " + what); };
    if (b.size == 0) reject("size is 0 (allocate() requires size > 0)");
    if (!is_power_of_two(b.alignment)) reject("alignment " + std::to_string(b.alignment) + " is not a power of two");
    if (b.last_use < b.first_use) reject("last_use is before first_use");
    const std::uint64_t padded = b.size + (b.alignment - 1);
    if (padded < b.size || bound + padded < bound) reject("total size overflows 64 bits");
    bound += padded;
  }
  return bound;
}

// Allocation and free events in sweep order: by time, and at equal times every start before every
// end, because closed lifetimes [a, t] and [t, b] share the instant t.
struct Event {
  std::uint64_t time;
  std::uint32_t index;
  bool end;
};

std::vector<Event> sweep_events(std::span<const PlannedBuffer> buffers) {
  std::vector<Event> events;
  events.reserve(2 * buffers.size());
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    events.push_back({buffers[i].first_use, static_cast<std::uint32_t>(i), false});
    events.push_back({buffers[i].last_use, static_cast<std::uint32_t>(i), true});
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    return a.time != b.time ? a.time < b.time : (a.end != b.end ? !a.end : a.index < b.index);
  });
  return events;
}

// Placed buffers by rank in first_use order, in a max segment tree of keys:
//   key_j = #{buffers whose first_use <= last_use_j}  (>= 1; 0 marks "not placed")
// For a buffer i with lo_i = #{first_use < first_use_i} and hi_i = #{first_use <= last_use_i}, a placed
// j conflicts with i iff rank_j < hi_i (first_use_j <= last_use_i) and key_j > lo_i
// (last_use_j >= first_use_i; first_use_i is itself one of the counted values, so the counts order
// exactly as the times do). Ranks and keys fit 32 bits and never overflow, whatever the times.
class ConflictIndex {
 public:
  explicit ConflictIndex(std::size_t n)
      : leaves_(std::bit_ceil(std::max<std::size_t>(n, 1))), depth_(log2_floor(leaves_)), max_(2 * leaves_, 0) {}

  void insert(std::size_t rank, std::uint32_t key) {
    std::size_t node = leaves_ + rank;
    max_[node] = key;
    for (node /= 2; node >= 1; node /= 2) max_[node] = std::max(max_[2 * node], max_[2 * node + 1]);
  }

  // Calls visit(rank) for every placed buffer with rank < hi and key > lo, in increasing rank order.
  template <class Visit>
  void for_each(std::size_t hi, std::uint32_t lo, Visit&& visit) {
    if (hi == 0 || max_[1] <= lo) return;
    stack_.clear();
    stack_.push_back(1);
    while (!stack_.empty()) {
      const std::size_t node = stack_.back();
      stack_.pop_back();
      if (node >= leaves_) {
        visit(node - leaves_);
        continue;
      }
      // Children whose subtree starts at or beyond hi, or holds no key above lo, are skipped before
      // being pushed; the right one is pushed first so ranks come out in increasing order.
      const unsigned level = log2_floor(node) + 1;
      const std::size_t right = 2 * node + 1;
      if (max_[right] > lo && ((right << (depth_ - level)) - leaves_) < hi) stack_.push_back(right);
      if (max_[2 * node] > lo) stack_.push_back(2 * node);
    }
  }

 private:
  std::size_t leaves_;
  unsigned depth_;  // log2(leaves_)
  std::vector<std::uint32_t> max_;
  std::vector<std::size_t> stack_;
};

// Sorts [offset, end) pairs by offset. LSD radix sort on the offset bytes that vary (8 bits a pass):
// the conflict lists reach thousands of entries per placement when many buffers are long-lived, and
// there it beats comparison sorting several times over; short lists use std::sort.
void sort_by_offset(std::vector<std::pair<std::uint64_t, std::uint64_t>>& items,
                    std::vector<std::pair<std::uint64_t, std::uint64_t>>& scratch, std::uint64_t max_offset) {
  if (items.size() < 64) {
    std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    return;
  }
  scratch.resize(items.size());
  for (unsigned shift = 0; shift < 64 && (max_offset >> shift) != 0; shift += 8) {
    std::size_t count[257] = {};
    for (const auto& item : items) ++count[((item.first >> shift) & 0xff) + 1];
    for (std::size_t d = 1; d < 257; ++d) count[d] += count[d - 1];
    for (const auto& item : items) scratch[count[(item.first >> shift) & 0xff]++] = item;
    items.swap(scratch);
  }
}

}  // namespace

std::uint64_t lower_bound_bytes(std::span<const PlannedBuffer> buffers) {
  std::uint64_t live = 0;
  std::uint64_t peak = 0;
  for (const Event& e : sweep_events(buffers)) {
    if (e.end) {
      live -= buffers[e.index].size;
    } else {
      live += buffers[e.index].size;
      peak = std::max(peak, live);
    }
  }
  return peak;
}

MemoryPlan plan_greedy_by_size(std::span<const PlannedBuffer> buffers) {
  check_buffers(buffers);
  if (buffers.size() >= std::numeric_limits<std::uint32_t>::max()) throw InputError("planner: more than 2^32 - 2 buffers");
  const std::size_t n = buffers.size();
  MemoryPlan plan;
  plan.offsets.assign(n, 0);
  plan.lower_bound_bytes = lower_bound_bytes(buffers);

  // Ranks in first_use order, and the counts that turn lifetimes into rank ranges (see ConflictIndex).
  std::vector<std::uint32_t> by_first(n);
  std::iota(by_first.begin(), by_first.end(), 0u);
  std::sort(by_first.begin(), by_first.end(), [&](std::uint32_t a, std::uint32_t b) {
    return buffers[a].first_use != buffers[b].first_use ? buffers[a].first_use < buffers[b].first_use : a < b;
  });
  std::vector<std::uint64_t> firsts(n);
  std::vector<std::uint32_t> rank(n);
  for (std::size_t r = 0; r < n; ++r) {
    firsts[r] = buffers[by_first[r]].first_use;
    rank[by_first[r]] = static_cast<std::uint32_t>(r);
  }
  const auto count_le = [&](std::uint64_t t) {
    return static_cast<std::uint32_t>(std::upper_bound(firsts.begin(), firsts.end(), t) - firsts.begin());
  };
  const auto count_lt = [&](std::uint64_t t) {
    return static_cast<std::uint32_t>(std::lower_bound(firsts.begin(), firsts.end(), t) - firsts.begin());
  };

  // Largest first (Pisarchyk and Lee 2020, greedy by size): big buffers placed early leave gaps that
  // smaller ones fill. Ties by first_use then index are our choice, only for determinism.
  std::vector<std::uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const PlannedBuffer& x = buffers[a];
    const PlannedBuffer& y = buffers[b];
    if (x.size != y.size) return x.size > y.size;
    if (x.first_use != y.first_use) return x.first_use < y.first_use;
    return a < b;
  });

  ConflictIndex placed(n);
  // [offset, end) of placed buffers by rank: the conflict query visits ranks in increasing order, so
  // reading them here is sequential rather than a cache miss per conflict.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> extent_by_rank(n);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> conflicts;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> scratch;
  for (const std::uint32_t i : order) {
    const PlannedBuffer& b = buffers[i];
    const std::uint32_t hi = count_le(b.last_use);
    conflicts.clear();
    std::uint64_t max_offset = 0;
    placed.for_each(hi, count_lt(b.first_use), [&](std::size_t r) {
      conflicts.push_back(extent_by_rank[r]);
      max_offset = std::max(max_offset, extent_by_rank[r].first);
    });
    sort_by_offset(conflicts, scratch, max_offset);
    // TFLite GreedyBySizeAssignment's sweep (greedy_by_size_assignment.cc): walk conflicting buffers by
    // offset keeping the highest end so far; the space from it to the next buffer's start is a gap.
    // Best fit = the smallest gap (raw size, TFLite's `diff`) that holds the buffer at its aligned
    // start; strict <, so the lowest of equal gaps wins. No gap fits: just above the highest
    // conflicting buffer. TFLite pads every end to one base alignment; we pad each start to the
    // buffer's own alignment instead, which is what per-request alignments need.
    std::uint64_t prev_end = 0;
    std::uint64_t best_gap = kNoGap;
    std::uint64_t best_offset = 0;
    for (const auto& [offset, end] : conflicts) {
      if (offset > prev_end) {
        const std::uint64_t start = align_up(prev_end, b.alignment);
        const std::uint64_t gap = offset - prev_end;
        if (start <= offset && offset - start >= b.size && gap < best_gap) {
          best_gap = gap;
          best_offset = start;
        }
      }
      prev_end = std::max(prev_end, end);
    }
    plan.offsets[i] = best_gap != kNoGap ? best_offset : align_up(prev_end, b.alignment);
    plan.arena_bytes = std::max(plan.arena_bytes, plan.offsets[i] + b.size);
    extent_by_rank[rank[i]] = {plan.offsets[i], plan.offsets[i] + b.size};
    placed.insert(rank[i], hi);  // key_i = #{first_use <= last_use_i} = hi
  }
  return plan;
}

std::string validate_plan(std::span<const PlannedBuffer> buffers, const MemoryPlan& plan) {
  if (plan.offsets.size() != buffers.size()) {
    return "plan has " + std::to_string(plan.offsets.size()) + " offsets for " + std::to_string(buffers.size()) + " buffers";
  }
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    const PlannedBuffer& b = buffers[i];
    const std::uint64_t offset = plan.offsets[i];
    const std::string name = "buffer " + std::to_string(i);
    if (b.size == 0 || !is_power_of_two(b.alignment) || b.last_use < b.first_use) {
      return name + ": invalid (size 0, alignment not a power of two, or last_use before first_use)";
    }
    if (offset % b.alignment != 0) return name + ": offset " + std::to_string(offset) + " not aligned to " + std::to_string(b.alignment);
    if (b.size > plan.arena_bytes || offset > plan.arena_bytes - b.size) {
      return name + ": [" + std::to_string(offset) + ", +" + std::to_string(b.size) + ") outside the arena of " +
             std::to_string(plan.arena_bytes) + " bytes";
    }
  }
  // Sweep over time keeping live buffers by offset. Live ones are pairwise disjoint, so a new buffer
  // overlaps one of them iff it overlaps its neighbour below (the last starting at or before it) or
  // above (the first starting after it).
  std::map<std::uint64_t, std::uint32_t> live;  // offset -> buffer index
  std::uint64_t live_bytes = 0;
  std::uint64_t peak = 0;
  for (const Event& e : sweep_events(buffers)) {
    const std::uint64_t offset = plan.offsets[e.index];
    const std::uint64_t size = buffers[e.index].size;
    if (e.end) {
      live.erase(offset);
      live_bytes -= size;
      continue;
    }
    auto above = live.upper_bound(offset);
    const auto clash = [&](std::uint32_t j) {
      return "buffers " + std::to_string(j) + " and " + std::to_string(e.index) + " are live together at event " +
             std::to_string(e.time) + " and overlap in memory";
    };
    if (above != live.end() && above->first < offset + size) return clash(above->second);
    if (above != live.begin()) {
      const auto below = std::prev(above);
      if (below->first + buffers[below->second].size > offset) return clash(below->second);
    }
    live.emplace_hint(above, offset, e.index);
    live_bytes += size;
    peak = std::max(peak, live_bytes);
  }
  if (plan.lower_bound_bytes != peak) {
    return "lower_bound_bytes " + std::to_string(plan.lower_bound_bytes) + " differs from the peak of live bytes " +
           std::to_string(peak);
  }
  return "";
}

PlannedAllocator::PlannedAllocator(const MemoryPlan& plan, std::span<const PlannedBuffer> buffers, Upstream& upstream)
    : upstream_(upstream), arena_bytes_(plan.arena_bytes), base_alignment_(1) {
  if (const std::string problem = validate_plan(buffers, plan); !problem.empty()) throw InputError("planner: " + problem);
  slots_.reserve(buffers.size());
  for (std::size_t i = 0; i < buffers.size(); ++i) {
    slots_.push_back({plan.offsets[i], buffers[i].size});
    base_alignment_ = std::max<std::size_t>(base_alignment_, buffers[i].alignment);
  }
  // Offsets are aligned relative to the base, so the base needs the largest alignment of any buffer.
  if (arena_bytes_ == 0) return;
  if (void* p = upstream_.allocate(arena_bytes_, base_alignment_)) {
    base_ = address_of(p);
    stats_.on_reserve(arena_bytes_);
  }
}

PlannedAllocator::~PlannedAllocator() {
  if (base_ != 0) upstream_.deallocate(pointer_at(base_), arena_bytes_, base_alignment_);
}

void PlannedAllocator::trim() {
  const AllocatorStats& s = stats_.raw();
  if (base_ == 0 || next_ < slots_.size() || s.allocs != s.frees) return;
  upstream_.deallocate(pointer_at(base_), arena_bytes_, base_alignment_);
  stats_.on_release(arena_bytes_);
  base_ = 0;
}

std::string PlannedAllocator::check_invariants() const {
  const AllocatorStats& s = stats_.raw();
  if (s.allocs + s.failed_requests != next_) return "planner: allocs + failed requests differ from allocate() calls";
  if (s.allocs > slots_.size()) return "planner: more blocks handed out than planned";
  if (s.frees > s.allocs) return "planner: more frees than allocations";
  if (s.requested_bytes.current != s.allocated_bytes.current) return "planner: requested differs from allocated";
  if (s.reserved_bytes.current != (base_ != 0 ? arena_bytes_ : 0)) return "planner: reserved differs from the arena held";
  if (base_ != 0 && s.allocated_bytes.current > s.reserved_bytes.current) return "planner: allocated exceeds the arena";
  if (base_ != 0 && (base_ & (base_alignment_ - 1)) != 0) return "planner: arena base not aligned to the largest alignment";
  return "";
}

}  // namespace tiermark
