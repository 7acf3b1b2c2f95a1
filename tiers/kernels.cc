// The kernels, generated once per ISA by TIERMARK_DEFINE_KERNELS from that ISA's intrinsics, each
// function compiled for its ISA alone with a target attribute (the rest of tiermark stays baseline
// x86-64, so the binary runs anywhere and picks the widest ISA at run time). Loops are unrolled to
// 8 vectors: the read kernel keeps 8 independent accumulators so it is bound by loads, not by the
// latency of the additions (Zen 4/5: vaddpd latency 3 cycles, 2 per cycle; so >= 6 sums in flight).
#include "tiers/kernels.h"

#include <immintrin.h>

#include <cstdint>

namespace tiermark {
namespace {

// Elements of the scalar head before `p` reaches an `alignment`-byte boundary (at most n).
inline std::size_t head_to_alignment(const void* p, std::size_t alignment, std::size_t n) {
  const std::size_t misalignment = reinterpret_cast<std::uintptr_t>(p) % alignment;
  const std::size_t head = misalignment == 0 ? 0 : (alignment - misalignment) / sizeof(double);
  return head < n ? head : n;
}

// VEC: vector type; W: doubles per vector; the remaining arguments name the intrinsics.
#define TIERMARK_DEFINE_KERNELS(NS, TARGET, VEC, W, SETZERO, SET1, LOAD, STORE, STREAM, ADD, FMADD, REDUCE)           \
  namespace NS {                                                                                                  \
  __attribute__((target(TARGET))) double read_sum(const double* a, std::size_t n) {                              \
    VEC s0 = SETZERO(), s1 = SETZERO(), s2 = SETZERO(), s3 = SETZERO();                                           \
    VEC s4 = SETZERO(), s5 = SETZERO(), s6 = SETZERO(), s7 = SETZERO();                                           \
    std::size_t i = 0;                                                                                            \
    for (; i + 8 * (W) <= n; i += 8 * (W)) {                                                                      \
      s0 = ADD(s0, LOAD(a + i));                                                                                  \
      s1 = ADD(s1, LOAD(a + i + (W)));                                                                            \
      s2 = ADD(s2, LOAD(a + i + 2 * (W)));                                                                        \
      s3 = ADD(s3, LOAD(a + i + 3 * (W)));                                                                        \
      s4 = ADD(s4, LOAD(a + i + 4 * (W)));                                                                        \
      s5 = ADD(s5, LOAD(a + i + 5 * (W)));                                                                        \
      s6 = ADD(s6, LOAD(a + i + 6 * (W)));                                                                        \
      s7 = ADD(s7, LOAD(a + i + 7 * (W)));                                                                        \
    }                                                                                                             \
    for (; i + (W) <= n; i += (W)) s0 = ADD(s0, LOAD(a + i));                                                     \
    const VEC total = ADD(ADD(ADD(s0, s1), ADD(s2, s3)), ADD(ADD(s4, s5), ADD(s6, s7)));                          \
    double sum = REDUCE(total);                                                                                   \
    for (; i < n; ++i) sum += a[i];                                                                               \
    return sum;                                                                                                   \
  }                                                                                                               \
  __attribute__((target(TARGET))) void write_fill(double* a, std::size_t n, double value) {                      \
    const VEC v = SET1(value);                                                                                    \
    std::size_t i = 0;                                                                                            \
    for (; i + 8 * (W) <= n; i += 8 * (W)) {                                                                      \
      STORE(a + i, v);                                                                                            \
      STORE(a + i + (W), v);                                                                                      \
      STORE(a + i + 2 * (W), v);                                                                                  \
      STORE(a + i + 3 * (W), v);                                                                                  \
      STORE(a + i + 4 * (W), v);                                                                                  \
      STORE(a + i + 5 * (W), v);                                                                                  \
      STORE(a + i + 6 * (W), v);                                                                                  \
      STORE(a + i + 7 * (W), v);                                                                                  \
    }                                                                                                             \
    for (; i + (W) <= n; i += (W)) STORE(a + i, v);                                                               \
    for (; i < n; ++i) a[i] = value;                                                                              \
  }                                                                                                               \
  /* Streaming stores need an aligned address: a scalar head reaches the vector boundary first. */               \
  __attribute__((target(TARGET))) void ntwrite_fill(double* a, std::size_t n, double value) {                    \
    const VEC v = SET1(value);                                                                                    \
    std::size_t i = head_to_alignment(a, sizeof(VEC), n);                                                         \
    for (std::size_t h = 0; h < i; ++h) a[h] = value;                                                             \
    for (; i + 8 * (W) <= n; i += 8 * (W)) {                                                                      \
      STREAM(a + i, v);                                                                                           \
      STREAM(a + i + (W), v);                                                                                     \
      STREAM(a + i + 2 * (W), v);                                                                                 \
      STREAM(a + i + 3 * (W), v);                                                                                 \
      STREAM(a + i + 4 * (W), v);                                                                                 \
      STREAM(a + i + 5 * (W), v);                                                                                 \
      STREAM(a + i + 6 * (W), v);                                                                                 \
      STREAM(a + i + 7 * (W), v);                                                                                 \
    }                                                                                                             \
    for (; i + (W) <= n; i += (W)) STREAM(a + i, v);                                                              \
    for (; i < n; ++i) a[i] = value;                                                                              \
    _mm_sfence();                                                                                                 \
  }                                                                                                               \
  __attribute__((target(TARGET))) void copy(double* dst, const double* src, std::size_t n) {                     \
    std::size_t i = 0;                                                                                            \
    for (; i + 4 * (W) <= n; i += 4 * (W)) {                                                                      \
      const VEC v0 = LOAD(src + i), v1 = LOAD(src + i + (W));                                                     \
      const VEC v2 = LOAD(src + i + 2 * (W)), v3 = LOAD(src + i + 3 * (W));                                       \
      STORE(dst + i, v0);                                                                                         \
      STORE(dst + i + (W), v1);                                                                                   \
      STORE(dst + i + 2 * (W), v2);                                                                               \
      STORE(dst + i + 3 * (W), v3);                                                                               \
    }                                                                                                             \
    for (; i + (W) <= n; i += (W)) STORE(dst + i, LOAD(src + i));                                                 \
    for (; i < n; ++i) dst[i] = src[i];                                                                           \
  }                                                                                                               \
  __attribute__((target(TARGET))) void triad(double* a, const double* b, const double* c, double scalar,         \
                                             std::size_t n) {                                                     \
    const VEC s = SET1(scalar);                                                                                   \
    std::size_t i = 0;                                                                                            \
    for (; i + 4 * (W) <= n; i += 4 * (W)) {                                                                      \
      const VEC v0 = FMADD(s, LOAD(c + i), LOAD(b + i));                                                          \
      const VEC v1 = FMADD(s, LOAD(c + i + (W)), LOAD(b + i + (W)));                                              \
      const VEC v2 = FMADD(s, LOAD(c + i + 2 * (W)), LOAD(b + i + 2 * (W)));                                      \
      const VEC v3 = FMADD(s, LOAD(c + i + 3 * (W)), LOAD(b + i + 3 * (W)));                                      \
      STORE(a + i, v0);                                                                                           \
      STORE(a + i + (W), v1);                                                                                     \
      STORE(a + i + 2 * (W), v2);                                                                                 \
      STORE(a + i + 3 * (W), v3);                                                                                 \
    }                                                                                                             \
    for (; i + (W) <= n; i += (W)) STORE(a + i, FMADD(s, LOAD(c + i), LOAD(b + i)));                              \
    for (; i < n; ++i) a[i] = b[i] + scalar * c[i];                                                               \
  }                                                                                                               \
  }  // namespace NS

// Through memory: GCC 12's _mm512_reduce_add_pd trips its own -Wuninitialized (the masked extract).
__attribute__((target("avx512f"))) inline double reduce_avx512(__m512d v) {
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, v);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}
__attribute__((target("avx2,fma"))) inline double reduce_avx2(__m256d v) {
  const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
}
inline double reduce_sse2(__m128d v) { return _mm_cvtsd_f64(_mm_add_sd(v, _mm_unpackhi_pd(v, v))); }
// SSE2 has no fused multiply-add; the triad's values (small whole numbers) are exact either way.
inline __m128d fmadd_sse2(__m128d s, __m128d c, __m128d b) { return _mm_add_pd(_mm_mul_pd(s, c), b); }

TIERMARK_DEFINE_KERNELS(avx512, "avx512f", __m512d, 8, _mm512_setzero_pd, _mm512_set1_pd, _mm512_loadu_pd,
                        _mm512_storeu_pd, _mm512_stream_pd, _mm512_add_pd, _mm512_fmadd_pd, reduce_avx512)
TIERMARK_DEFINE_KERNELS(avx2, "avx2,fma", __m256d, 4, _mm256_setzero_pd, _mm256_set1_pd, _mm256_loadu_pd,
                        _mm256_storeu_pd, _mm256_stream_pd, _mm256_add_pd, _mm256_fmadd_pd, reduce_avx2)
TIERMARK_DEFINE_KERNELS(sse2, "sse2", __m128d, 2, _mm_setzero_pd, _mm_set1_pd, _mm_loadu_pd, _mm_storeu_pd,
                        _mm_stream_pd, _mm_add_pd, fmadd_sse2, reduce_sse2)

#undef TIERMARK_DEFINE_KERNELS

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kSse2: return "sse2";
  }
  return "sse2";
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (const Isa isa : {Isa::kSse2, Isa::kAvx2, Isa::kAvx512}) {
    if (name == isa_name(isa)) return isa;
  }
  return std::nullopt;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas = {Isa::kSse2};
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back(Isa::kAvx2);
  if (__builtin_cpu_supports("avx512f")) isas.push_back(Isa::kAvx512);
  return isas;
}

Isa best_isa() { return supported_isas().back(); }

const char* kernel_name(Kernel kernel) {
  switch (kernel) {
    case Kernel::kRead: return "read";
    case Kernel::kWrite: return "write";
    case Kernel::kNtWrite: return "ntwrite";
    case Kernel::kCopy: return "copy";
    case Kernel::kTriad: return "triad";
  }
  return "read";
}

std::optional<Kernel> parse_kernel(std::string_view name) {
  for (const Kernel kernel : kAllKernels) {
    if (name == kernel_name(kernel)) return kernel;
  }
  return std::nullopt;
}

int kernel_arrays(Kernel kernel) {
  switch (kernel) {
    case Kernel::kCopy: return 2;
    case Kernel::kTriad: return 3;
    default: return 1;
  }
}

int kernel_bytes_per_element(Kernel kernel) { return 8 * kernel_arrays(kernel); }

const KernelTable& kernel_table(Isa isa) {
  static constexpr KernelTable kAvx512 = {avx512::read_sum, avx512::write_fill, avx512::ntwrite_fill, avx512::copy,
                                          avx512::triad};
  static constexpr KernelTable kAvx2 = {avx2::read_sum, avx2::write_fill, avx2::ntwrite_fill, avx2::copy, avx2::triad};
  static constexpr KernelTable kSse2 = {sse2::read_sum, sse2::write_fill, sse2::ntwrite_fill, sse2::copy, sse2::triad};
  switch (isa) {
    case Isa::kAvx512: return kAvx512;
    case Isa::kAvx2: return kAvx2;
    case Isa::kSse2: break;
  }
  return kSse2;
}

double read_sum(Isa isa, const double* a, std::size_t n) { return kernel_table(isa).read_sum(a, n); }
void write_fill(Isa isa, double* a, std::size_t n, double value) { kernel_table(isa).write_fill(a, n, value); }
void ntwrite_fill(Isa isa, double* a, std::size_t n, double value) { kernel_table(isa).ntwrite_fill(a, n, value); }
void copy(Isa isa, double* dst, const double* src, std::size_t n) { kernel_table(isa).copy(dst, src, n); }
void triad(Isa isa, double* a, const double* b, const double* c, double scalar, std::size_t n) {
  kernel_table(isa).triad(a, b, c, scalar, n);
}

}  // namespace tiermark
