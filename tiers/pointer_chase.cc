// The chase loop is unrolled by 16 dependent loads, so the loop's own branch is off the critical
// path; the loads themselves are the only dependency chain.
#include "tiers/pointer_chase.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace tiermark {

std::vector<std::uint32_t> chase_order(std::uint64_t lines, std::uint64_t lines_per_page, std::uint64_t seed) {
  std::vector<std::uint32_t> order;
  if (lines == 0) return order;
  if (lines_per_page == 0) lines_per_page = 1;
  std::mt19937_64 random(seed);
  const std::uint64_t pages = (lines + lines_per_page - 1) / lines_per_page;
  std::vector<std::uint32_t> page_order(pages);
  std::iota(page_order.begin(), page_order.end(), 0u);
  std::shuffle(page_order.begin(), page_order.end(), random);
  order.reserve(lines);
  std::vector<std::uint32_t> in_page;
  for (const std::uint32_t page : page_order) {
    const std::uint64_t first = std::uint64_t(page) * lines_per_page;
    const std::uint64_t last = std::min(lines, first + lines_per_page);
    in_page.resize(last - first);
    std::iota(in_page.begin(), in_page.end(), std::uint32_t(first));
    std::shuffle(in_page.begin(), in_page.end(), random);
    order.insert(order.end(), in_page.begin(), in_page.end());
  }
  return order;
}

void* link_chase(void* base, std::size_t line_bytes, const std::vector<std::uint32_t>& order) {
  if (order.empty()) return nullptr;
  char* const bytes = static_cast<char*>(base);
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::size_t next = order[(i + 1) % order.size()];
    *reinterpret_cast<void**>(bytes + std::size_t(order[i]) * line_bytes) = bytes + next * line_bytes;
  }
  return bytes + std::size_t(order[0]) * line_bytes;
}

__attribute__((noinline)) void* chase(void* start, std::uint64_t loads) {
  void* p = start;
#define TIERMARK_STEP p = *static_cast<void**>(p);
  std::uint64_t i = 0;
  for (; i + 16 <= loads; i += 16) {
    TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP
    TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP TIERMARK_STEP
  }
  for (; i < loads; ++i) TIERMARK_STEP
#undef TIERMARK_STEP
  return p;
}

}  // namespace tiermark
