// Stress kernels modelled on mimalloc-bench's stress tests, with their default parameters
// (docs/stress-kernels.md gives each one's source and parameters).
#pragma once

#include "stress/stress_kernel.h"

namespace tiermark {

StressResult run_larson(StressTarget& target, const StressSettings& settings);
StressResult run_xmalloc_test(StressTarget& target, const StressSettings& settings);
StressResult run_cache_scratch(StressTarget& target, const StressSettings& settings);
StressResult run_cache_thrash(StressTarget& target, const StressSettings& settings);
StressResult run_glibc_thread(StressTarget& target, const StressSettings& settings);
StressResult run_mstress(StressTarget& target, const StressSettings& settings);
StressResult run_rptest(StressTarget& target, const StressSettings& settings);

}  // namespace tiermark
