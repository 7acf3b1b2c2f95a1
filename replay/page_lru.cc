#include "replay/page_lru.h"

#include <algorithm>

namespace tiermark {

std::uint64_t PageLru::touch(std::uintptr_t begin, std::uint64_t bytes) {
  if (bytes == 0 || capacity_pages_ == 0) return 0;
  const std::uint64_t end = begin + bytes;
  std::uint64_t resident = 0;
  for (std::uint64_t page = begin / kPage; page * kPage < end; ++page) {
    const std::uint64_t lo = std::max<std::uint64_t>(page * kPage, begin);
    const std::uint64_t hi = std::min<std::uint64_t>((page + 1) * kPage, end);
    const auto it = where_.find(page);
    if (it != where_.end()) {
      resident += hi - lo;
      order_.splice(order_.begin(), order_, it->second);  // most recent now
      continue;
    }
    if (order_.size() == capacity_pages_) {  // evict the least recent
      where_.erase(order_.back());
      order_.pop_back();
    }
    order_.push_front(page);
    where_.emplace(page, order_.begin());
  }
  return resident;
}

void PageLru::forget(std::uintptr_t begin, std::uint64_t bytes) {
  const std::uint64_t first = (begin + kPage - 1) / kPage;
  const std::uint64_t end = (begin + bytes) / kPage;
  if (end <= first) return;
  if (end - first > where_.size()) {  // a range larger than what is held: walk what is held
    for (auto it = order_.begin(); it != order_.end();) {
      if (*it >= first && *it < end) {
        where_.erase(*it);
        it = order_.erase(it);
      } else {
        ++it;
      }
    }
    return;
  }
  for (std::uint64_t page = first; page < end; ++page) {
    if (const auto it = where_.find(page); it != where_.end()) {
      order_.erase(it->second);
      where_.erase(it);
    }
  }
}

}  // namespace tiermark
