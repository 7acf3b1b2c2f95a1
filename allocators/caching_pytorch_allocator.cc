// The cold half of CachingPytorchAllocator: options, the miss path (garbage collection, new segments,
// the two release-and-retry steps), releasing segments, expandable segments (find, map, unmap, give up a
// range), statistics and the invariant checker. The hit path (round, search, split, merge) is inline
// in the header. Function names follow
// c10/cuda/CUDACachingAllocator.cpp so each can be compared with its original.
#include "allocators/caching_pytorch_allocator.h"

#include <algorithm>
#include <map>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "common/spec.h"

namespace tiermark {
namespace {

using detail::pyt::Block;
using detail::pyt::Pool;
using detail::pyt::Segment;

const std::vector<OptionSpec> kPytorchOptions = {
    {"max_split_size", OptionType::kSize, "",
     "blocks at or above this size are never split and serve only requests at or above it (PyTorch "
     "max_split_size_mb); unset means unlimited; must be more than 20MiB"},
    {"max_non_split_rounding", OptionType::kSize, "20MiB",
     "a request at or above max_split_size takes a cached block only if the block is less than request + this "
     "(PyTorch max_non_split_rounding_mb, default kLargeBuffer = 20 MiB); at least 20MiB"},
    // Text, as PyTorch's config string allows two forms: N, or per size interval `[256:1,512:2,>:8]`
    // (parse_divisions checks both).
    {"roundup_power2_divisions", OptionType::kText, "0",
     "round sizes above 512B x N up to one of N steps between powers of two: N (a power of two, 0 for off) "
     "for every size, or per interval as PyTorch writes it, [256:1,512:2,1024:4,>:8] (interval starts in MiB)"},
    {"garbage_collection_threshold", OptionType::kNumber, "0",
     "with per_process_memory_fraction: when reserved bytes exceed this fraction of the limit, a miss first frees "
     "cached unsplit large segments at least as old as the mean; in (0, 1), 0 for off"},
    {"per_process_memory_fraction", OptionType::kNumber, "",
     "limit reserved bytes to this fraction of the upstream capacity (torch.cuda.set_per_process_memory_fraction); "
     "in (0, 1]; unset means no limit"},
    {"expandable_segments", OptionType::kBool, "false",
     "per stream and pool one virtual range of 1.125 x the device capacity, mapped in 2MiB (small) or 20MiB (large) "
     "pages on demand and unmapped by empty_cache (PyTorch expandable_segments); simulated upstreams only"},
    {"alloc_conf", OptionType::kText, "",
     "a PYTORCH_CUDA_ALLOC_CONF string in brackets, as PyTorch reads it: "
     "[expandable_segments:True,max_split_size_mb:128,roundup_power2_divisions:[256:1,>:4]]; its settings "
     "may not also be given as options"},
};

// PYTORCH_CUDA_ALLOC_CONF keys (c10/core/AllocatorConfig.cpp, CUDAAllocatorConfig::parseArgs) and the
// tiermark option each sets; `unit` is appended to the value (PyTorch's *_mb keys are in MiB).
struct AllocConfKey {
  std::string_view key;
  std::string_view option;  // empty: accepted and not modelled
  std::string_view unit;
};
constexpr AllocConfKey kAllocConfKeys[] = {
    {"max_split_size_mb", "max_split_size", "MiB"},
    {"max_non_split_rounding_mb", "max_non_split_rounding", "MiB"},
    {"roundup_power2_divisions", "roundup_power2_divisions", ""},
    {"garbage_collection_threshold", "garbage_collection_threshold", ""},
    {"expandable_segments", "expandable_segments", ""},
    // Pinned host memory and the driver lock are outside the device allocator this models.
    {"pinned_use_cuda_host_register", "", ""},
    {"pinned_num_register_threads", "", ""},
    {"release_lock_on_cudamalloc", "", ""},
    {"backend", "", ""},
};

// The options with an alloc_conf string's settings merged in: its keys translated to tiermark's
// option names and values, then validated like any option. A setting given both ways, an unknown
// key or backend:cudaMallocAsync (a different allocator) is rejected.
Options apply_alloc_conf(const Options& options) {
  if (!options.has("alloc_conf")) return options;
  std::string_view conf = options.text("alloc_conf");
  if (conf.size() >= 2 && conf.front() == '[' && conf.back() == ']') conf = conf.substr(1, conf.size() - 2);
  std::vector<std::pair<std::string, std::string>> settings;
  for (const OptionSpec& spec : kPytorchOptions) {
    if (spec.name != "alloc_conf" && options.has(spec.name)) settings.emplace_back(spec.name, options.text(spec.name));
  }
  for (const std::string_view piece : split_top_level(conf)) {
    if (piece.empty()) continue;
    const std::size_t colon = piece.find(':');
    if (colon == std::string_view::npos) options.reject("alloc_conf", "'" + std::string(piece) + "' is not key:value");
    const std::string_view key = piece.substr(0, colon);
    std::string value(piece.substr(colon + 1));
    const auto* known = std::find_if(std::begin(kAllocConfKeys), std::end(kAllocConfKeys),
                                     [&](const AllocConfKey& k) { return k.key == key; });
    if (known == std::end(kAllocConfKeys)) options.reject("alloc_conf", "unknown key '" + std::string(key) + "'");
    if (key == "backend" && value != "native") {
      options.reject("alloc_conf", "backend:" + value + " is another allocator; caching.pytorch models backend:native");
    }
    if (known->option.empty()) continue;
    if (key == "expandable_segments") value = value == "True" ? "true" : value == "False" ? "false" : value;
    const auto given = std::find_if(settings.begin(), settings.end(), [&](const auto& s) { return s.first == known->option; });
    const auto spec = std::find_if(kPytorchOptions.begin(), kPytorchOptions.end(),
                                    [&](const OptionSpec& o) { return o.name == known->option; });
    if (given != settings.end() && given->second != spec->default_value) {
      options.reject("alloc_conf", std::string(key) + " is also given as option " + std::string(known->option));
    }
    value += known->unit;
    if (given != settings.end()) {
      given->second = value;
    } else {
      settings.emplace_back(known->option, value);
    }
  }
  return Options(options.owner(), kPytorchOptions, settings);
}

// Segments are asked for at the block quantum; cudaMalloc's own 256 B guarantee is below it.
constexpr std::size_t kSegmentAlignment = CachingPytorchAllocator::kMinBlockSize;
// This project's choice: enough for a thousand live blocks before the first rehash.
constexpr std::size_t kInitialBuckets = 1024;

// Round up to a multiple of `m`, which need not be a power of two (20 MiB pages are not).
constexpr std::uint64_t round_up(std::uint64_t x, std::uint64_t m) noexcept { return (x + m - 1) / m * m; }

// A free mapped block with a neighbour: counted in inactive_split_bytes.
std::uint64_t split_bytes(const Block* b) noexcept {
  return b != nullptr && !b->allocated && b->mapped && b->is_split() ? b->size : 0;
}

}  // namespace

std::span<const OptionSpec> CachingPytorchAllocator::option_specs() { return kPytorchOptions; }

CachingPytorchAllocator::CachingPytorchAllocator(const Options& given, Upstream& upstream)
    : upstream_(upstream),
      live_buckets_(kInitialBuckets),
      live_(detail::pyt::LiveTable::bucket_traits(live_buckets_.data(), live_buckets_.size())) {
  const Options options = apply_alloc_conf(given);
  small_.small = true;
  if (options.has("max_split_size")) {
    // AllocatorConfig::parseMaxSplitSize rejects max_split_size_mb <= kLargeBuffer / 1 MiB.
    max_split_ = options.size("max_split_size");
    if (max_split_ <= kLargeBuffer || max_split_ > kMaxRequest) {
      options.reject("max_split_size", "must be more than 20MiB and at most 4EiB");
    }
  }
  max_non_split_ = options.size("max_non_split_rounding");
  if (max_non_split_ < kLargeBuffer || max_non_split_ > kMaxRequest) {
    options.reject("max_non_split_rounding", "must be at least 20MiB and at most 4EiB");
  }
  std::string why;
  const std::optional<Divisions> divisions = parse_divisions(options.text("roundup_power2_divisions"), why);
  if (!divisions) options.reject("roundup_power2_divisions", why);
  divisions_ = *divisions;
  any_divisions_ = std::any_of(divisions_.begin(), divisions_.end(), [](std::uint32_t d) { return d > 1; });

  gc_threshold_ = options.number("garbage_collection_threshold");
  if (gc_threshold_ != 0 && !(gc_threshold_ > 0 && gc_threshold_ < 1)) {
    options.reject("garbage_collection_threshold", "must be in (0, 1), or 0 for off");
  }
  if (options.has("per_process_memory_fraction")) {
    const double fraction = options.number("per_process_memory_fraction");
    if (!(fraction > 0 && fraction <= 1)) options.reject("per_process_memory_fraction", "must be in (0, 1]");
    if (upstream_.capacity() == 0) {
      options.reject("per_process_memory_fraction", "needs an upstream with a capacity ('" + upstream_.config() + "' has none)");
    }
    // setMemoryFraction: allowed_memory_maximum = fraction x total device memory, truncated.
    limit_ = static_cast<std::uint64_t>(fraction * static_cast<double>(upstream_.capacity()));
    if (limit_ == 0) options.reject("per_process_memory_fraction", "leaves a limit of 0 bytes");
  }
  if (options.flag("expandable_segments")) {
    if (upstream_.touchable()) {
      options.reject("expandable_segments", "needs a simulated upstream: host memory would need reserve-and-map "
                                            "(mmap PROT_NONE, then MAP_FIXED), which tiermark's Upstream does not offer");
    }
    expandable_ = true;
    // find_expandable_block: address space for 1 1/8 of the device memory, a whole number of pages.
    const std::uint64_t capacity = upstream_.capacity();
    const std::uint64_t range = synthetic_range_bytes(capacity);
    small_range_ = round_up(range, kSmallBuffer);
    large_range_ = round_up(range, kLargeBuffer);
    if (!synthetic_space_holds(large_range_, 4)) {
      options.reject("expandable_segments", "the upstream capacity is too large for the synthetic address space");
    }
  }
  if (!nodes_.reserve(decltype(nodes_)::kMinSlab) || !segment_nodes_.reserve(decltype(segment_nodes_)::kMinSlab)) {
    throw std::bad_alloc();
  }
}

CachingPytorchAllocator::~CachingPytorchAllocator() {
  // Segments go back even if blocks in them are still live (their owner leaked them).
  live_.clear();
  small_.blocks.clear();
  large_.blocks.clear();
  small_.unmapped.clear();
  large_.unmapped.clear();
  for (const auto& [address, page] : pages_) upstream_.deallocate(page.first, page.second, kSegmentAlignment);
  pages_.clear();
  while (!segments_.empty()) {
    Segment& segment = segments_.front();
    segments_.pop_front();
    if (!segment.expandable) upstream_.deallocate(pointer_at(segment.base), segment.size, kSegmentAlignment);
  }
}

std::uint64_t CachingPytorchAllocator::roundup_power2_next_division(std::uint64_t size, std::uint64_t divisions) noexcept {
  if (size <= 4 || divisions <= 1) return size;
  if (is_power_of_two(size)) return size;
  // Split [2^k, 2^(k+1)) into `divisions` equal steps and round up to the next step.
  const std::uint64_t power2_floor = std::uint64_t{1} << log2_floor(size);
  const std::uint64_t step = power2_floor >> log2_floor(divisions);
  if (step == 0) return power2_floor << 1;
  const std::uint64_t floor = size & ~(step - 1);
  return floor == size ? size : floor + step;
}

std::optional<CachingPytorchAllocator::Divisions> CachingPytorchAllocator::parse_divisions(std::string_view text,
                                                                                          std::string& why) {
  Divisions out{};
  const auto parse_number = [](std::string_view s) -> std::optional<std::uint64_t> {
    if (s.empty() || s.size() > 18) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
  };
  const auto valid_division = [](std::uint64_t v) { return v == 0 || (is_power_of_two(v) && v <= (1u << 30)); };
  if (text.empty() || text.front() != '[') {
    const auto value = parse_number(text);
    if (!value || !valid_division(*value)) {
      why = "expected a power of two (0 for off) or a list such as [256:1,512:2,>:8]";
      return std::nullopt;
    }
    out.fill(static_cast<std::uint32_t>(*value));
    return out;
  }
  if (text.back() != ']') {
    why = "expected a closing ']'";
    return std::nullopt;
  }
  std::string_view body = text.substr(1, text.size() - 2);
  bool first_value = true;
  std::size_t last_index = 0;
  while (!body.empty()) {
    const std::size_t comma = body.find(',');
    const std::string_view entry = body.substr(0, comma);
    body = comma == std::string_view::npos ? std::string_view{} : body.substr(comma + 1);
    const std::size_t colon = entry.find(':');
    if (colon == std::string_view::npos) {
      why = "entry '" + std::string(entry) + "' is not interval:divisions";
      return std::nullopt;
    }
    const std::string_view interval = entry.substr(0, colon);
    const auto value = parse_number(entry.substr(colon + 1));
    if (!value || !valid_division(*value)) {
      why = "entry '" + std::string(entry) + "': divisions must be a power of two or 0";
      return std::nullopt;
    }
    const auto v = static_cast<std::uint32_t>(*value);
    if (interval == ">") {
      // AllocatorConfig: `>` sets every interval after the last one named.
      std::fill(out.begin() + static_cast<std::ptrdiff_t>(last_index + 1), out.end(), v);
      continue;
    }
    const auto boundary = parse_number(interval);
    if (!boundary || !is_power_of_two(*boundary)) {
      why = "entry '" + std::string(entry) + "': the interval start must be a power of two (in MiB)";
      return std::nullopt;
    }
    // Interval i holds sizes in [2^i MiB, 2^(i+1) MiB); the first entry also covers every interval below it.
    const std::size_t index = std::min<std::size_t>(log2_floor(*boundary), kRoundUpPowerOfTwoIntervals - 1);
    if (first_value) {
      std::fill(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(index), v);
      first_value = false;
    }
    out[index] = v;
    last_index = index;
  }
  return out;
}

void* CachingPytorchAllocator::fail(bool oom) noexcept {
  if (oom) ++num_ooms_;
  stats_.on_failure();
  return nullptr;
}

void* CachingPytorchAllocator::allocate_slow(std::size_t size, std::size_t alignment, StreamId stream) noexcept {
  if (size - 1 >= kMaxRequest || alignment > kMaxRequest || !is_power_of_two(alignment)) return fail(false);
  // Two nodes at most: the new segment's block and the front split off it.
  if (!nodes_.reserve(nodes_.live() + 2) || !segment_nodes_.reserve(segment_nodes_.live() + 1)) return fail(false);
  const std::uint64_t bytes = round_size(alignment <= kMinBlockSize ? size : size + alignment - kMinBlockSize);
  Pool& pool = pool_for(bytes);
  ++pool.searches;
  Block* block = get_free_block(pool, stream, bytes);
  if (block == nullptr) {
    if (gc_threshold_ > 0 && limit_ != 0) [[unlikely]] garbage_collect_cached_blocks();
    // get_allocation_size.
    const std::uint64_t alloc_size =
        bytes <= kSmallSize ? kSmallBuffer : bytes < kMinLargeAlloc ? kLargeBuffer : align_up(bytes, kRoundLarge);
    block = alloc_block(pool, stream, bytes, alloc_size, false);
    if (block == nullptr && release_available_cached_blocks(pool, stream, bytes)) {
      block = alloc_block(pool, stream, bytes, alloc_size, false);
    }
    if (block == nullptr) {
      release_cached_blocks();
      block = alloc_block(pool, stream, bytes, alloc_size, true);
    }
    if (block == nullptr) return fail(true);
  }
  return hand_out(pool, *block, bytes, size, alignment);
}

Block* CachingPytorchAllocator::alloc_block(Pool& pool, StreamId stream, std::uint64_t bytes, std::uint64_t alloc_size,
                                            bool is_retry) noexcept {
  if (is_retry) ++num_alloc_retries_;  // counted on entry, whether or not the retry succeeds (as PyTorch)
  // Expandable segments grow by `bytes` (the rounded request), not by a segment of get_allocation_size; the
  // memory fraction is checked per map in map_block.
  if (expandable_) return try_allocate_expandable_block(pool, stream, bytes);
  // With a memory fraction the limit refuses before the device is asked (no device call is made).
  if (limit_ != 0 && stats_.raw().reserved_bytes.current + alloc_size > limit_) return nullptr;
  void* base = upstream_.allocate(alloc_size, kSegmentAlignment);
  if (base == nullptr) return nullptr;
  // Capacity for both nodes was reserved by allocate_slow().
  Segment* segment = segment_nodes_.make();
  Block* block = nodes_.make();
  segment->base = address_of(base);
  segment->size = alloc_size;
  segment->stream = stream;
  segment->small = pool.small;
  segment->head = block;
  segments_.push_back(*segment);
  block->ptr = segment->base;
  block->size = alloc_size;
  block->segment = segment;
  block->stream = stream;
  segment_count_.add(1);
  stats_.on_reserve(alloc_size);
  return block;
}

bool CachingPytorchAllocator::release_available_cached_blocks(Pool& pool, StreamId stream, std::uint64_t bytes) noexcept {
  if (max_split_ == kUnlimited) return false;
  const std::uint64_t key_size = std::max(bytes, max_split_);
  auto it = pool.blocks.lower_bound(detail::pyt::Key{stream, key_size, 0}, detail::pyt::ByStreamSizeAddress{});
  if (it != pool.blocks.end() && it->stream == stream) {
    // One block large enough. PyTorch releases it unconditionally; a free oversize block can sit in a split
    // segment (freed front of a segment of about max_split_size whose tail is live), and cudaFree of part of
    // a segment is impossible, so here such a block is not released.
    if (it->segment->expandable) return unmap_block(pool, *it) > 0;
    if (it->is_split()) return false;
    release_block(*it);
    return true;
  }
  // No single block is large enough: free oversize blocks of this stream, largest first, until enough.
  if (it == pool.blocks.begin()) return false;
  std::uint64_t released = 0;
  --it;
  while (released < key_size && it->size >= max_split_ && it->stream == stream) {
    const auto current = it;
    const bool at_begin = it == pool.blocks.begin();
    if (!at_begin) --it;
    if (current->segment->expandable) {
      released += unmap_block(pool, *current);
    } else if (!current->is_split()) {
      released += current->size;
      release_block(*current);
    }
    if (at_begin) break;
  }
  return released >= key_size;
}

void CachingPytorchAllocator::release_cached_blocks() noexcept {
  release_blocks(large_);
  release_blocks(small_);
}

void CachingPytorchAllocator::release_blocks(Pool& pool) noexcept {
  for (auto it = pool.blocks.begin(); it != pool.blocks.end();) {
    Block& block = *it;
    ++it;
    if (block.segment->expandable) {
      // Unmapping inserts the page-partial ends back into the tree; they are smaller than `block`, so
      // they sort before `it` and are not visited again.
      unmap_block(pool, block);
    } else if (!block.is_split()) {
      release_block(block);
    }
  }
  // A range left with nothing mapped is one unmapped block: give up the range (release_expandable_segment).
  for (auto it = pool.unmapped.begin(); it != pool.unmapped.end();) {
    Block& block = *it;
    ++it;
    if (!block.is_split()) release_expandable_segment(pool, block);
  }
}

// ---- Expandable segments ------------------------------------------------------------------------------

void CachingPytorchAllocator::adjust_inactive_split(std::uint64_t before, std::uint64_t after) noexcept {
  if (after >= before) {
    inactive_split_bytes_.add(after - before);
  } else {
    inactive_split_bytes_.subtract(before - after);
  }
}

void CachingPytorchAllocator::link_after(Block& at, Block& block) noexcept {
  block.prev = &at;
  block.next = at.next;
  if (at.next != nullptr) at.next->prev = &block;
  at.next = &block;
}

void CachingPytorchAllocator::link_before(Block& at, Block& block) noexcept {
  block.next = &at;
  block.prev = at.prev;
  if (at.prev != nullptr) {
    at.prev->next = &block;
  } else {
    at.segment->head = &block;
  }
  at.prev = &block;
}

// `src`, a neighbour of `dst` already out of every tree, becomes part of `dst`.
void CachingPytorchAllocator::absorb(Block& dst, Block& src) noexcept {
  if (dst.prev == &src) {
    dst.ptr = src.ptr;
    dst.prev = src.prev;
    if (dst.prev != nullptr) {
      dst.prev->next = &dst;
    } else {
      dst.segment->head = &dst;
    }
  } else {
    dst.next = src.next;
    if (dst.next != nullptr) dst.next->prev = &dst;
  }
  dst.size += src.size;
  nodes_.recycle(&src);
}

Block* CachingPytorchAllocator::find_expandable_block(Pool& pool, StreamId stream, std::uint64_t bytes) noexcept {
  // The lowest unmapped address of the stream's ranges whose run of free blocks (starting with a free mapped
  // block just before it) holds `bytes`.
  for (auto it = pool.unmapped.lower_bound(detail::pyt::Key{stream, 0, 0}, detail::pyt::ByStreamAddress{});
       it != pool.unmapped.end() && it->stream == stream; ++it) {
    Block* candidate = &*it;
    if (candidate->prev != nullptr && !candidate->prev->allocated) candidate = candidate->prev;
    std::uint64_t room = 0;
    for (const Block* b = candidate; b != nullptr && !b->allocated && room < bytes; b = b->next) room += b->size;
    if (room >= bytes) return candidate;
  }
  // None: reserve a new range for this (stream, pool).
  const std::uint64_t range = pool.small ? small_range_ : large_range_;
  if (bytes > range) return nullptr;
  if (!nodes_.reserve(nodes_.live() + 1) || !segment_nodes_.reserve(segment_nodes_.live() + 1)) return nullptr;
  const std::uintptr_t base = ranges_.take(range);
  if (base == 0) return nullptr;
  Segment* segment = segment_nodes_.make();
  Block* block = nodes_.make();
  segment->base = base;
  segment->size = range;
  segment->stream = stream;
  segment->small = pool.small;
  segment->expandable = true;
  segment->page_size = pool.small ? kSmallBuffer : kLargeBuffer;
  segment->head = block;
  segments_.push_back(*segment);
  segment_count_.add(1);
  block->ptr = segment->base;
  block->size = range;
  block->segment = segment;
  block->stream = stream;
  block->mapped = false;
  block->gc_base = pool.searches;
  pool.unmapped.insert_equal(*block);
  return block;
}

Block* CachingPytorchAllocator::try_allocate_expandable_block(Pool& pool, StreamId stream, std::uint64_t bytes) noexcept {
  Block* candidate = find_expandable_block(pool, stream, bytes);
  if (candidate == nullptr) return nullptr;
  // The candidate starts a run of free blocks with room for `bytes`: unmapped [-> free ...] or
  // free -> unmapped [-> ...]. Map from its start, each time merging into one growing free block.
  if (!candidate->mapped && !map_block(pool, *candidate, std::min(candidate->size, bytes))) return nullptr;
  while (candidate->size < bytes) {
    Block* next = candidate->next;  // unmapped: free mapped neighbours were merged
    if (!map_block(pool, *next, std::min(bytes - candidate->size, next->size))) return nullptr;
    candidate = next;  // it absorbed the block before it
  }
  if (!nodes_.reserve(nodes_.live() + 1)) return nullptr;  // hand_out may split
  pool.blocks.erase(pool.blocks.iterator_to(*candidate));
  return candidate;
}

bool CachingPytorchAllocator::map_block(Pool& pool, Block& to_map, std::uint64_t size) noexcept {
  Segment& segment = *to_map.segment;
  const std::uint64_t page = segment.page_size;
  const std::uint64_t length = round_up(size, page);  // <= to_map.size, which is whole pages
  if (limit_ != 0 && stats_.raw().reserved_bytes.current + length > limit_) return false;
  if (!nodes_.reserve(nodes_.live() + 1)) return false;
  // ExpandableSegment::map: all or nothing; the pages made by a failed map are released again.
  std::uint64_t mapped = 0;
  for (; mapped < length; mapped += page) {
    void* p = upstream_.allocate(page, kSegmentAlignment);
    if (p == nullptr) break;
    try {
      pages_.emplace(to_map.ptr + mapped, std::pair<void*, std::uint64_t>{p, page});
    } catch (const std::bad_alloc&) {
      upstream_.deallocate(p, page, kSegmentAlignment);
      break;
    }
    stats_.on_reserve(page);
  }
  if (mapped < length) {
    while (mapped > 0) {
      mapped -= page;
      const auto it = pages_.find(to_map.ptr + mapped);
      upstream_.deallocate(it->second.first, page, kSegmentAlignment);
      pages_.erase(it);
      stats_.on_release(page);
    }
    return false;
  }
  pool.unmapped.erase(pool.unmapped.iterator_to(to_map));
  to_map.mapped = true;
  if (length < to_map.size) {
    Block* rest = nodes_.make();  // reserved above
    rest->ptr = to_map.ptr + length;
    rest->size = to_map.size - length;
    rest->segment = to_map.segment;
    rest->stream = to_map.stream;
    rest->mapped = false;
    rest->gc_base = pool.searches;
    link_after(to_map, *rest);
    pool.unmapped.insert_equal(*rest);
    to_map.size = length;
  }
  std::uint64_t before = 0;
  for (Block* src : {to_map.prev, to_map.next}) {
    if (src != nullptr && !src->allocated && src->mapped) {
      before += split_bytes(src);
      pool.blocks.erase(pool.blocks.iterator_to(*src));
      absorb(to_map, *src);
    }
  }
  to_map.gc_base = pool.searches;
  pool.blocks.insert_equal(to_map);
  adjust_inactive_split(before, split_bytes(&to_map));
  return true;
}

std::uint64_t CachingPytorchAllocator::unmap_block(Pool& pool, Block& block) noexcept {
  // ExpandableSegment::unmap: only the pages wholly inside the block; partly used pages stay mapped.
  Segment& segment = *block.segment;
  const std::uint64_t page = segment.page_size;
  const std::uintptr_t begin = segment.base + round_up(block.ptr - segment.base, page);
  const std::uintptr_t end = segment.base + (block.ptr + block.size - segment.base) / page * page;
  if (begin >= end) return 0;
  if (!nodes_.reserve(nodes_.live() + 2)) return 0;
  const std::uint64_t before = split_bytes(&block);
  pool.blocks.erase(pool.blocks.iterator_to(block));
  for (std::uintptr_t address = begin; address < end; address += page) {
    const auto it = pages_.find(address);
    upstream_.deallocate(it->second.first, page, kSegmentAlignment);
    pages_.erase(it);
    stats_.on_release(page);
  }
  const auto fragment = [&](std::uintptr_t ptr, std::uint64_t size) {
    Block* b = nodes_.make();  // reserved above
    b->ptr = ptr;
    b->size = size;
    b->segment = &segment;
    b->stream = block.stream;
    b->gc_base = block.gc_base;
    return b;
  };
  Block* head = nullptr;
  Block* tail = nullptr;
  if (begin > block.ptr) {
    head = fragment(block.ptr, begin - block.ptr);
    link_before(block, *head);
    pool.blocks.insert_equal(*head);
  }
  if (end < block.ptr + block.size) {
    tail = fragment(end, block.ptr + block.size - end);
    link_after(block, *tail);
    pool.blocks.insert_equal(*tail);
  }
  block.ptr = begin;
  block.size = end - begin;
  block.mapped = false;
  for (Block* src : {block.prev, block.next}) {
    if (src != nullptr && !src->mapped) {
      pool.unmapped.erase(pool.unmapped.iterator_to(*src));
      absorb(block, *src);
    }
  }
  pool.unmapped.insert_equal(block);
  adjust_inactive_split(before, split_bytes(head) + split_bytes(tail));
  return end - begin;
}

void CachingPytorchAllocator::release_expandable_segment(Pool& pool, Block& block) noexcept {
  Segment* segment = block.segment;
  pool.unmapped.erase(pool.unmapped.iterator_to(block));
  segments_.erase(segments_.iterator_to(*segment));
  segment_count_.subtract(1);
  nodes_.recycle(&block);
  segment_nodes_.recycle(segment);
}

void CachingPytorchAllocator::release_block(Block& block) noexcept {
  Pool& pool = pool_of(block);
  Segment* segment = block.segment;
  pool.blocks.erase(pool.blocks.iterator_to(block));
  segments_.erase(segments_.iterator_to(*segment));
  upstream_.deallocate(pointer_at(segment->base), segment->size, kSegmentAlignment);
  segment_count_.subtract(1);
  stats_.on_release(segment->size);
  nodes_.recycle(&block);
  segment_nodes_.recycle(segment);
}

void CachingPytorchAllocator::garbage_collect_cached_blocks() noexcept {
  // As garbage_collect_cached_blocks(): the trigger compares reserved memory (PyTorch's
  // total_allocated_memory counts cudaMalloc'ed bytes) with threshold x allowed_memory_maximum; only
  // unsplit blocks of the large pool are candidates; age = searches of that pool since the block was freed.
  const auto gc_threshold = static_cast<std::uint64_t>(gc_threshold_ * static_cast<double>(limit_));
  const std::uint64_t reserved = stats_.raw().reserved_bytes.current;
  if (reserved <= gc_threshold) return;
  const std::uint64_t target = reserved - gc_threshold;
  std::uint64_t reclaimed = 0;
  double total_age = 0;
  std::uint64_t freeable = 0;
  for (const Block& block : large_.blocks) {
    if (!block.is_split() && !block.segment->expandable) {
      total_age += static_cast<double>(large_.searches - block.gc_base);
      ++freeable;
    }
  }
  bool freed = true;
  while (reclaimed < target && freed && freeable > 0) {
    // Free every block at least as old as the mean, and do not stop at the target: a GC that frees
    // just enough would run again on the next miss (PyTorch's comment).
    const double age_threshold = total_age / static_cast<double>(freeable);
    freed = false;
    for (auto it = large_.blocks.begin(); it != large_.blocks.end();) {
      Block& block = *it;
      ++it;
      const auto age = static_cast<double>(large_.searches - block.gc_base);
      if (!block.is_split() && !block.segment->expandable && age >= age_threshold) {
        freed = true;
        reclaimed += block.size;
        total_age -= age;
        --freeable;
        release_block(block);
      }
    }
  }
}

std::uint64_t CachingPytorchAllocator::largest_free_block() const noexcept {
  // The last block of each stream's run in each tree is that stream's largest: O(streams x log n).
  std::uint64_t largest = 0;
  for (const Pool* pool : {&small_, &large_}) {
    auto it = pool->blocks.end();
    while (it != pool->blocks.begin()) {
      const Block& last = *std::prev(it);
      largest = std::max(largest, last.size);
      it = pool->blocks.lower_bound(detail::pyt::Key{last.stream, 0, 0}, detail::pyt::ByStreamSizeAddress{});
    }
  }
  return largest;
}

PytorchMemoryStats CachingPytorchAllocator::memory_stats() const {
  const AllocatorStats& s = stats_.raw();
  PytorchMemoryStats out;
  out.allocated_bytes = s.allocated_bytes;
  out.reserved_bytes = s.reserved_bytes;
  out.active_bytes = s.allocated_bytes;
  out.inactive_split_bytes = inactive_split_bytes_;
  out.requested_bytes = s.requested_bytes;
  out.segment = segment_count_;
  out.num_alloc_retries = num_alloc_retries_;
  out.num_ooms = num_ooms_;
  out.num_device_alloc = s.upstream_allocs;
  out.num_device_free = s.upstream_frees;
  return out;
}

std::vector<CachingPytorchAllocator::SegmentInfo> CachingPytorchAllocator::snapshot() const {
  std::vector<SegmentInfo> out;
  for (const Segment& segment : segments_) {
    SegmentInfo info{segment.base, segment.size, segment.stream, segment.small, {}, segment.expandable};
    for (const Block* b = segment.head; b != nullptr; b = b->next) {
      info.blocks.push_back({b->ptr, b->size, b->allocated, b->mapped});
    }
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const SegmentInfo& a, const SegmentInfo& b) { return a.address < b.address; });
  return out;
}

std::string CachingPytorchAllocator::check_invariants() const {
  const auto broken = [](const std::string& why) { return "caching.pytorch: " + why; };
  std::uint64_t reserved = 0, allocated = 0, requested = 0, inactive_split = 0;
  std::uint64_t blocks = 0, live = 0, free = 0, unmapped = 0, mapped_pages = 0, plain_segments = 0;
  std::map<std::uintptr_t, std::uint64_t> ranges;  // base -> size, to check that no two segments overlap
  for (const Segment& segment : segments_) {
    if (segment.size == 0 || segment.base % kMinBlockSize != 0) return broken("segment base not 512-aligned or empty");
    if (!ranges.emplace(segment.base, segment.size).second) return broken("two segments at one base");
    const std::uint64_t page = segment.page_size;
    if (segment.expandable) {
      if (!expandable_ || page != (segment.small ? kSmallBuffer : kLargeBuffer)) return broken("expandable segment with a wrong page size");
      if (segment.size % page != 0) return broken("expandable range not whole pages");
    } else {
      ++plain_segments;
    }
    std::uintptr_t counted_end = segment.base;  // pages below this are counted as mapped already
    const Block* b = segment.head;
    if (b == nullptr || b->prev != nullptr || b->ptr != segment.base) return broken("segment head is not its first block");
    const bool split = b->next != nullptr;
    std::uintptr_t expected = segment.base;
    const Block* previous = nullptr;
    for (; b != nullptr; previous = b, b = b->next) {
      ++blocks;
      if (b->segment != &segment || b->stream != segment.stream) return broken("block with the wrong segment or stream");
      if (b->prev != previous) return broken("prev/next links disagree");
      if (b->ptr != expected) return broken("blocks do not tile their segment (gap or overlap)");
      if (b->size == 0 || b->size % kMinBlockSize != 0) return broken("block size not a positive multiple of 512");
      expected += b->size;
      if (expected > segment.base + segment.size) return broken("blocks run past the end of their segment");
      if (!b->mapped) {
        ++unmapped;
        if (!segment.expandable || b->allocated) return broken("an unmapped block outside an expandable segment, or allocated");
        if ((b->ptr - segment.base) % page != 0 || b->size % page != 0) return broken("an unmapped block is not whole pages");
        if (previous != nullptr && !previous->mapped) return broken("two adjacent unmapped blocks (not merged)");
        const Pool& pool = segment.small ? small_ : large_;
        const auto it = pool.unmapped.find(detail::pyt::Key{b->stream, 0, b->ptr}, detail::pyt::ByStreamAddress{});
        if (it == pool.unmapped.end() || &*it != b) return broken("an unmapped block is missing from its pool's unmapped tree");
        continue;
      }
      if (segment.expandable) {
        // Every page this block touches is mapped; count each page once.
        const std::uintptr_t first = std::max(counted_end, segment.base + (b->ptr - segment.base) / page * page);
        const std::uintptr_t last = segment.base + round_up(b->ptr + b->size - segment.base, page);
        for (std::uintptr_t address = first; address < last; address += page) {
          const auto it = pages_.find(address);
          if (it == pages_.end() || it->second.second != page) return broken("a mapped block touches an unmapped page");
          ++mapped_pages;
          reserved += page;
        }
        counted_end = std::max(counted_end, last);
      }
      if (b->allocated) {
        ++live;
        allocated += b->size;
        requested += b->requested;
        if (b->user_ptr < b->ptr || b->user_ptr + b->requested > b->ptr + b->size) {
          return broken("a live block's handed-out range is outside the block");
        }
        const auto it = live_.find(b->user_ptr, detail::pyt::PointerHash{}, detail::pyt::PointerEqual{});
        if (it == live_.end() || &*it != b) return broken("a live block is missing from the live table");
      } else {
        ++free;
        if (previous != nullptr && !previous->allocated && previous->mapped) return broken("two adjacent free blocks (not merged)");
        if (split) inactive_split += b->size;
        const Pool& pool = segment.small ? small_ : large_;
        const auto it = pool.blocks.find(detail::pyt::Key{b->stream, b->size, b->ptr}, detail::pyt::ByStreamSizeAddress{});
        if (it == pool.blocks.end() || &*it != b) return broken("a free block is missing from its pool's tree");
        if (b->gc_base > pool.searches) return broken("a free block's age is negative");
      }
    }
    if (expected != segment.base + segment.size) return broken("blocks do not cover their segment");
    if (!segment.expandable) reserved += segment.size;
  }
  for (auto it = ranges.begin(); it != ranges.end() && std::next(it) != ranges.end(); ++it) {
    if (it->first + it->second > std::next(it)->first) return broken("two segments overlap");
  }
  if (mapped_pages != pages_.size()) return broken("mapped pages that no block touches");
  std::uint64_t in_trees = 0, in_unmapped_trees = 0;
  for (const Pool* pool : {&small_, &large_}) {
    for (const Block& b : pool->blocks) {
      ++in_trees;
      if (b.allocated || !b.mapped) return broken("an allocated or unmapped block is in a free tree");
      if (b.segment->small != pool->small) return broken("a block is in the other pool's tree");
    }
    for (const Block& b : pool->unmapped) {
      ++in_unmapped_trees;
      if (b.mapped || b.segment->small != pool->small) return broken("a mapped block, or another pool's, is in an unmapped tree");
    }
  }
  if (in_trees != free) return broken("free trees hold blocks outside every segment");
  if (in_unmapped_trees != unmapped) return broken("unmapped trees hold blocks outside every segment");
  if (live_.size() != live) return broken("live table holds blocks outside every segment");
  if (nodes_.live() != blocks) return broken("block nodes in use differ from blocks");
  if (segment_nodes_.live() != segments_.size()) return broken("segment nodes in use differ from segments");

  const AllocatorStats& s = stats_.raw();
  if (s.reserved_bytes.current != reserved) return broken("reserved bytes differ from the sum of segments");
  if (s.allocated_bytes.current != allocated) return broken("allocated bytes differ from the live blocks' sizes");
  if (s.requested_bytes.current != requested) return broken("requested bytes differ from the live blocks' requests");
  if (s.allocs - s.frees != live) return broken("allocs - frees differ from live blocks");
  if (s.upstream_allocs - s.upstream_frees != plain_segments + pages_.size()) {
    return broken("device allocs - frees differ from segments plus mapped pages");
  }
  if (segment_count_.current != segments_.size()) return broken("segment count differs from segments");
  if (inactive_split_bytes_.current != inactive_split) return broken("inactive_split_bytes differs from a recount");
  if (limit_ != 0 && reserved > limit_) return broken("reserved bytes exceed the memory fraction limit");
  if (live_buckets_.size() != live_.bucket_count()) return broken("live table bucket array out of step");
  return "";
}

}  // namespace tiermark
