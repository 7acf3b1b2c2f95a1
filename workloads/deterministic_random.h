// Deterministic random numbers for generators: the same seed gives the same workload with any
// standard library. std::uniform_real_distribution, std::exponential_distribution and friends are
// not usable for that, because the standard fixes their results but not their algorithms, and
// libstdc++ and libc++ turn the same engine bits into different numbers. Only raw 64-bit words
// (SplitMix64 here) and our own transforms below are portable.
//
// Invariants: every transform consumes a fixed number of 64-bit words (uniform01 and exponential
// one, standard_normal and log_normal two), so a change of parameters never shifts the stream of a
// later draw. The transforms use only IEEE arithmetic and std::log/std::sqrt/std::cos/std::exp; the
// libm functions may differ in the last bit between C libraries, which changes a value rounded to
// an integer (a token count, a nanosecond) only when it lies within about 1e-15 of a rounding edge.
#pragma once

#include <cmath>
#include <cstdint>

namespace tiermark {

// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014;
// constants as in Vigna's public-domain splitmix64.c). Small state, passes BigCrush, and any seed,
// 0 included, is a good one.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_;
};

// An independent stream for `purpose` under one user seed: hashing (rather than adding) keeps two
// streams of neighbouring seeds from being shifted copies of each other.
inline SplitMix64 random_stream(std::uint64_t seed, std::uint64_t purpose) {
  SplitMix64 mix(seed ^ (purpose * 0xD1B54A32D192ED03ull));
  return SplitMix64(mix.next());
}

// Uniform in [0, 1): the top 53 bits, exactly representable in a double.
inline double uniform01(SplitMix64& rng) { return static_cast<double>(rng.next() >> 11) * 0x1.0p-53; }

// Exponential with the given mean, by inversion; 1 - u lies in (0, 1], so the log is finite.
inline double exponential(SplitMix64& rng, double mean) { return -mean * std::log(1.0 - uniform01(rng)); }

// Standard normal by Box-Muller (one of the pair; the second is dropped so every draw costs two
// words).
inline double standard_normal(SplitMix64& rng) {
  const double u1 = 1.0 - uniform01(rng);  // (0, 1]
  const double u2 = uniform01(rng);
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

// Log-normal given by its mean and the standard deviation sigma of its logarithm: mu = ln(mean) -
// sigma^2 / 2 keeps E[X] = mean for every sigma, so a spread can change without moving the mean.
struct LogNormal {
  double mean;
  double sigma;
};

inline double log_normal(SplitMix64& rng, const LogNormal& dist) {
  const double mu = std::log(dist.mean) - 0.5 * dist.sigma * dist.sigma;
  return std::exp(mu + dist.sigma * standard_normal(rng));
}

}  // namespace tiermark
