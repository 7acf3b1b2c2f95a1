// Pointer chasing for load-to-use latency, the method of lmbench lat_mem_rd and google multichase:
// every cache line of a working set holds the address of the next line of one random cyclic
// permutation, so each load depends on the one before and no prefetcher can guess the next address.
// The permutation is grouped by pages to limit TLB misses (multichase's "random within pages"):
// the pages are visited in random order and, inside each page, its lines in random order, so a page's
// lines are all visited before the chase leaves it and a TLB entry serves every line of the page.
// Invariants of chase_order(): a permutation of [0, lines) (one cycle once linked: each line exactly
// once, the last line pointing back to the first), and the lines of one page are contiguous in it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tiermark {

// The visiting order of `lines` lines, `lines_per_page` to a page (the last page may be partial),
// from a seeded generator (the same seed gives the same order).
std::vector<std::uint32_t> chase_order(std::uint64_t lines, std::uint64_t lines_per_page, std::uint64_t seed);

// Writes the cycle into [base, base + order.size() * line_bytes): the first word of line order[i]
// holds the address of line order[i + 1], and the last line's the address of line order[0].
// Returns the address of line order[0].
void* link_chase(void* base, std::size_t line_bytes, const std::vector<std::uint32_t>& order);

// Follows `loads` pointers from `start` and returns where it ends: after a whole number of cycles,
// `start` again. The result must be used (it is the chase's only output).
void* chase(void* start, std::uint64_t loads);

}  // namespace tiermark
