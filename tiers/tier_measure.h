// Measurement of memory tiers: bandwidth of the kernels (tiers/kernels.h) and pointer-chase latency
// (tiers/pointer_chase.h) at one working-set size, on threads pinned one per core with hwloc.
// The method (shared/REFERENCE.md section 7): each thread maps and first-touches its own memory
// (writing it, so no page is the shared zero page) before anything is timed; a sample repeats the
// kernel k times, k calibrated so a sample lasts at least `min_sample_seconds` (10 ms); the
// calibration's last sample is the warm-up and is dropped; then `samples` samples give best, median
// and coefficient of variation. Threads start each sample together from a barrier, and a sample's
// time runs from the first thread leaving the barrier to the last thread finishing.
// Kernels are interleaved sample by sample (read, write, ..., read, write, ...), so drift on a
// shared machine spreads over all of them; each kernel has regions of its own and one untimed pass
// before each sample, so the previous kernel's data does not sit in the caches it is measured on.
// Invariants: every result is checked (sums against the known pattern, destinations against their
// sources, the chase back at its start); a wrong result throws std::runtime_error, never a number.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "tiers/kernels.h"
#include "tiers/topology.h"

namespace tiermark {

struct MeasureSettings {
  Isa isa = Isa::kSse2;
  int samples = 10;                  // kept samples (after the dropped warm-up)
  double min_sample_seconds = 0.01;  // 10 ms: STREAM's and likwid's floor against clock resolution
  std::optional<unsigned> membind_node;  // bind every region to this NUMA node (OS index)
};

struct SampleSummary {
  double best = 0;    // the highest bandwidth, or the lowest latency
  double median = 0;
  double cv = 0;      // standard deviation / mean of the kept samples
  int samples = 0;
};

// The working-set split: `size_bytes` is the total of all arrays of all threads (likwid-bench's -w
// convention), each thread's share divided among the kernel's arrays.
struct BandwidthPoint {
  Kernel kernel = Kernel::kRead;
  std::uint64_t size_bytes = 0;
  int threads = 1;
  std::uint64_t elements_per_array = 0;     // per thread
  std::uint64_t counted_bytes_per_pass = 0; // STREAM-counted bytes of one pass of all threads
  std::uint64_t repeats_per_sample = 0;     // k
  SampleSummary bytes_per_second;
  bool pinned = false;                      // every thread was bound to its core
};

// Runs `kernels` at `size_bytes` with `threads` threads bound to cores `cores[0..threads)` (logical
// indexes; empty: cores 0..threads-1). Throws std::runtime_error on a wrong result.
std::vector<BandwidthPoint> measure_bandwidth(const Topology& topology, const std::vector<Kernel>& kernels,
                                              std::uint64_t size_bytes, int threads, const MeasureSettings& settings,
                                              const std::vector<unsigned>& cores = {});

struct LatencyPoint {
  std::uint64_t size_bytes = 0;
  bool huge_pages = false;                       // asked for (madvise MADV_HUGEPAGE); see huge_page_bytes
  std::optional<std::uint64_t> huge_page_bytes;  // AnonHugePages over the region, read after the run
  std::uint64_t loads_per_sample = 0;
  SampleSummary ns_per_load;
  bool pinned = false;
};

// Chases a random page-grouped cycle of `line_bytes` lines over `size_bytes` on one thread bound to
// `core`. 4 KiB pages (MADV_NOHUGEPAGE) or transparent huge pages (MADV_HUGEPAGE).
LatencyPoint measure_latency(const Topology& topology, std::uint64_t size_bytes, bool huge_pages, unsigned line_bytes,
                             const MeasureSettings& settings, unsigned core = 0);

// One thread's arrays for one kernel, the unit tier_measure and bench_tiers share: maps `share_bytes`
// (divided among the kernel's arrays, staggered so they do not alias modulo 4 KiB), writes every byte
// from the calling thread (first touch, off the zero page) with the kernel's pattern.
class KernelBuffers {
 public:
  KernelBuffers(Kernel kernel, std::uint64_t share_bytes, Isa isa, const Topology* topology = nullptr,
                std::optional<unsigned> node = std::nullopt);
  KernelBuffers(const KernelBuffers&) = delete;
  KernelBuffers& operator=(const KernelBuffers&) = delete;
  KernelBuffers(KernelBuffers&&) noexcept;
  KernelBuffers& operator=(KernelBuffers&&) noexcept;
  ~KernelBuffers();

  void run_pass();                       // one pass of the kernel over the arrays
  bool verify() const;                   // every result of every pass so far was right
  std::uint64_t elements() const;        // per array
  std::uint64_t counted_bytes() const;   // STREAM-counted bytes of one pass

  struct Data;  // opaque: defined in tier_measure.cc

 private:
  std::unique_ptr<Data> data_;
};

// Summary of samples; `higher_is_better` picks the best as the maximum (bandwidth) or minimum (latency).
SampleSummary summarize(std::vector<double> values, bool higher_is_better);

}  // namespace tiermark
