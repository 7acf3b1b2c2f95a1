// PageLru: a model of which memory is still in a cache of a given size, for the allocator-locality
// metric of `tiermark replay --memory host --touch full`: a least-recently-used set of 4 KiB pages
// holding at most capacity / 4 KiB of them. touch(range) reports how many bytes of the range lay in
// pages the model still held (recently touched memory that an allocator handed out again: cache-hot
// reuse), then makes every page of the range the most recent. Page granularity, full associativity
// and LRU are the model's simplifications of a real last-level cache (set-associative, per-line,
// with an adaptive replacement policy); docs/replay.md says how the model is checked against the
// measured touch bandwidth. O(pages touched) per call, O(capacity / page) memory.
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>

namespace tiermark {

class PageLru {
 public:
  static constexpr std::uint64_t kPage = 4096;

  explicit PageLru(std::uint64_t capacity_bytes) : capacity_pages_(capacity_bytes / kPage) {}

  // Bytes of [begin, begin + bytes) in pages held before this call; afterwards all its pages are held
  // (the last capacity's worth of them, when the range is larger than the cache).
  std::uint64_t touch(std::uintptr_t begin, std::uint64_t bytes);

  // Forgets the pages wholly inside [begin, begin + bytes): memory given back to the operating system
  // returns as fresh pages, whatever its address.
  void forget(std::uintptr_t begin, std::uint64_t bytes);

  std::uint64_t pages_held() const { return order_.size(); }

 private:
  std::uint64_t capacity_pages_;
  std::list<std::uint64_t> order_;  // most recent first
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where_;
};

}  // namespace tiermark
