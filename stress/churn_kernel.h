// tiermark's default stress kernel: random churn (docs/stress.md).
#pragma once

#include "stress/stress_kernel.h"

namespace tiermark {

StressResult run_churn(StressTarget& target, const StressSettings& settings);

}  // namespace tiermark
