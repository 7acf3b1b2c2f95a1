/* chase.c: an independent pointer chase, written apart from tiermark's (tiers/pointer_chase.cc) to
 * check its latency figures. Debian 12 packages neither lmbench nor multichase, so this is the
 * reference: plain C, its own generator, its own permutation code, its own timing.
 *
 *   cc -O2 -o chase tools/chase.c && taskset -c 0 ./chase SIZE_KIB MODE PAGES
 *   MODE: grouped  random order of 4 KiB pages, lines random within each page (multichase -s, as tiermark)
 *         random   one random cycle over all lines (Sattolo's algorithm; multichase's default)
 *   PAGES: 4k (MADV_NOHUGEPAGE) or thp (MADV_HUGEPAGE on a 2 MiB-aligned range)
 * Prints ns per load: the best of 7 runs of at least 100 ms each, after one warm-up run.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t state = 88172645463325252ull;
static uint64_t next_random(void) { /* xorshift64 */
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}
static void shuffle(uint32_t* a, size_t n) { /* Fisher-Yates */
  for (size_t i = n - 1; i > 0; --i) {
    size_t j = next_random() % (i + 1);
    uint32_t t = a[i]; a[i] = a[j]; a[j] = t;
  }
}
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  if (argc != 4) { fprintf(stderr, "usage: chase SIZE_KIB grouped|random 4k|thp\n"); return 2; }
  const size_t bytes = (size_t)atol(argv[1]) * 1024, line = 64, lines = bytes / line, per_page = 4096 / line;
  const int grouped = strcmp(argv[2], "grouped") == 0, thp = strcmp(argv[3], "thp") == 0;
  const size_t huge = 2u << 20, mapped = (bytes + huge - 1) / huge * huge + huge;
  char* map = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) { perror("mmap"); return 1; }
  char* base = (char*)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));
  madvise(base, mapped - huge, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  memset(base, 1, bytes);
  uint32_t* order = malloc(lines * sizeof *order);
  if (grouped) {
    const size_t pages = (lines + per_page - 1) / per_page;
    uint32_t* page_order = malloc(pages * sizeof *page_order);
    for (size_t p = 0; p < pages; ++p) page_order[p] = (uint32_t)p;
    shuffle(page_order, pages);
    size_t k = 0;
    for (size_t p = 0; p < pages; ++p) {
      size_t first = page_order[p] * per_page, count = first + per_page <= lines ? per_page : lines - first;
      for (size_t i = 0; i < count; ++i) order[k + i] = (uint32_t)(first + i);
      shuffle(order + k, count);
      k += count;
    }
    free(page_order);
  } else {
    for (size_t i = 0; i < lines; ++i) order[i] = (uint32_t)i;
    shuffle(order, lines); /* a random order visited in sequence is one cycle */
  }
  for (size_t i = 0; i < lines; ++i) *(char**)(base + order[i] * line) = base + order[(i + 1) % lines] * line;
  char** p = (char**)(base + order[0] * line);
  size_t loads = lines;
  while (1) { /* calibrate to >= 100 ms, the first run being the warm-up */
    double t0 = now();
    for (size_t i = 0; i < loads; ++i) p = (char**)*p;
    if (now() - t0 >= 0.1) break;
    loads *= 2;
  }
  double best = 1e30;
  for (int r = 0; r < 7; ++r) {
    double t0 = now();
    for (size_t i = 0; i < loads; ++i) p = (char**)*p;
    double ns = (now() - t0) * 1e9 / (double)loads;
    if (ns < best) best = ns;
  }
  printf("%s %s %s %.2f ns %p\n", argv[1], argv[2], argv[3], best, (void*)p);
  return 0;
}
