#pragma once

#include "workloads/workload_generator.h"

namespace tiermark {

const GeneratorInfo& transformer_generator();

}  // namespace tiermark
