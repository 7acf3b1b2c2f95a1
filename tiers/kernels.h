// Bandwidth kernels over arrays of doubles, one per ISA (AVX-512, AVX2, SSE2) chosen at run time.
// They are written with intrinsics in functions of their own translation unit (kernels.cc), called
// through this interface, so the compiler can neither drop the loads nor merge repeated calls: every
// read is summed into a result the caller checks, every store lands in memory the caller verifies.
// Invariants: every kernel handles any length n (0 included) and any 8-byte-aligned pointer (a
// scalar head and tail around the vector body); results do not depend on the ISA for the patterns
// used here (small whole numbers, exact in double whatever the order of the additions).
//
// Byte counting follows STREAM (McCalpin, stream.c): bytes read plus bytes written by the program,
// no write-allocate traffic: read 8 B, write 8 B, ntwrite 8 B, copy 16 B, triad 24 B per element.
// likwid-bench counts the same way (its kernel files' BYTES: load 8, store 8, copy 16, stream 24).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tiermark {

enum class Isa { kSse2, kAvx2, kAvx512 };

// "sse2", "avx2", "avx512".
const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(std::string_view name);
// The ISAs this CPU runs (__builtin_cpu_supports), widest last; SSE2 is always there on x86-64.
std::vector<Isa> supported_isas();
Isa best_isa();

enum class Kernel { kRead, kWrite, kNtWrite, kCopy, kTriad };

constexpr Kernel kAllKernels[] = {Kernel::kRead, Kernel::kWrite, Kernel::kNtWrite, Kernel::kCopy, Kernel::kTriad};

// "read", "write", "ntwrite", "copy", "triad".
const char* kernel_name(Kernel kernel);
std::optional<Kernel> parse_kernel(std::string_view name);
// Arrays a kernel touches: read, write, ntwrite 1; copy 2; triad 3.
int kernel_arrays(Kernel kernel);
// STREAM byte counting per 8-byte element: 8, 8, 8, 16, 24.
int kernel_bytes_per_element(Kernel kernel);

// One ISA's kernels, for callers that run a kernel many times and resolve the ISA once: at L1 sizes
// a pass lasts about 50 ns, and a dispatch per pass would cost several percent.
struct KernelTable {
  double (*read_sum)(const double* a, std::size_t n);
  void (*write_fill)(double* a, std::size_t n, double value);
  void (*ntwrite_fill)(double* a, std::size_t n, double value);
  void (*copy)(double* dst, const double* src, std::size_t n);
  void (*triad)(double* a, const double* b, const double* c, double scalar, std::size_t n);
};
const KernelTable& kernel_table(Isa isa);

// The sum of a[0..n).
double read_sum(Isa isa, const double* a, std::size_t n);
// a[i] = value.
void write_fill(Isa isa, double* a, std::size_t n, double value);
// a[i] = value with non-temporal (streaming) stores, then a store fence.
void ntwrite_fill(Isa isa, double* a, std::size_t n, double value);
// dst[i] = src[i].
void copy(Isa isa, double* dst, const double* src, std::size_t n);
// a[i] = b[i] + scalar * c[i] (STREAM Triad).
void triad(Isa isa, double* a, const double* b, const double* c, double scalar, std::size_t n);

}  // namespace tiermark
