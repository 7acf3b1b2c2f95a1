#pragma once

#include "workloads/workload_generator.h"

namespace tiermark {

const GeneratorInfo& llm_serve_generator();

}  // namespace tiermark
