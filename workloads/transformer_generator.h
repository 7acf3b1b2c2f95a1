// transformer: the device allocations and frees of an eager framework (PyTorch) running transformer
// training steps (forward, backward, optimizer) or inference forwards, from the formulas of
// shared/REFERENCE.md section 5. Presets: gpt2-small, bert-base, llama2-7b, llama3-8b, cs336-2.7b.
// The options, the per-layer operator list with every tensor's size and lifetime, and what is
// simplified are in docs/workload-transformer.md.
#pragma once

#include "workloads/workload_generator.h"

namespace tiermark {

const GeneratorInfo& transformer_generator();

}  // namespace tiermark
