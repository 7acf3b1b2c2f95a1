// The main() every bench_* binary shares: Google Benchmark's flags, exit code 2 for an unknown flag
// (tiermark's bad-input code), the build's type and sanitizer in the JSON context (so numbers from a
// debug or sanitizer build are tagged as such), then the binary's own context and benchmarks.
#pragma once

#include <benchmark/benchmark.h>

#include <string>
#include <utility>
#include <vector>

namespace tiermark {

inline int run_benchmark_main(int argc, char** argv, void (*register_benchmarks)(),
                              const std::vector<std::pair<std::string, std::string>>& context = {}) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::AddCustomContext("tiermark_build_type", TIERMARK_BUILD_TYPE);
  benchmark::AddCustomContext("tiermark_sanitizer", TIERMARK_SANITIZER);
  for (const auto& [key, value] : context) benchmark::AddCustomContext(key, value);
  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace tiermark
