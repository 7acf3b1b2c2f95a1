// The `llm-serve` workload: the device allocation sequence of an LLM inference server doing
// iteration-level continuous batching (Orca, OSDI 2022; vLLM, SOSP 2023) over Poisson arrivals
// with ShareGPT- or Alpaca-like lengths, for one of five KV-cache policies (contiguous-max, pow2,
// exact, paged, concat). Weights are allocated once, KV memory per the policy, activations per
// scheduler step; counters `kv.token_bytes` and `kv.committed_bytes` with `sim.step_ns` let a
// replay compute the time-averaged KV utilisation of the vLLM paper's Fig. 2.
// docs/workload-llm-serve.md describes every option, the scheduler, the time model and the counters.
#pragma once

#include "workloads/workload_generator.h"

namespace tiermark {

const GeneratorInfo& llm_serve_generator();

}  // namespace tiermark
