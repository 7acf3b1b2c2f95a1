#pragma once

#include "workloads/workload_generator.h"

namespace tiermark {

const GeneratorInfo& cnn_generator();

}  // namespace tiermark
