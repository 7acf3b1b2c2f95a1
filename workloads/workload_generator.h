// Workload generators: the synthetic transformer, CNN and LLM-serving allocation patterns, named by
// a spec `GENERATOR[/PRESET][:key=value,...]` as everywhere else in tiermark. A preset is data: a
// settings string applied before the user's own settings, so a larger model is one override away
// (`transformer/llama2-7b:L=80,h=8192`). Generators are deterministic for a given spec (seed
// included) and write through a TraceBuilder; their output is validated on the way to the sink.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/options.h"
#include "workloads/trace_builder.h"
#include "workloads/trace_stream.h"

namespace tiermark {

struct WorkloadPreset {
  std::string_view name;
  std::string_view description;
  std::string_view settings;  // `key=value,...` in the generator's option names
};

struct GeneratorInfo {
  std::string_view name;
  std::string_view description;
  std::span<const OptionSpec> options;
  std::span<const WorkloadPreset> presets;
  // Writes the whole workload; may call builder.set_metadata() before its first event. Throws
  // InputError (through options.reject) for a combination of options it cannot honour.
  void (*generate)(const Options& options, TraceBuilder& builder);
};

std::span<const GeneratorInfo> generator_catalog();

// The generator, preset and options a spec names, resolved and validated (preset settings first,
// then the user's). Throws InputError for an unknown generator or preset, or a bad option.
struct ResolvedWorkload {
  const GeneratorInfo* generator;
  std::string preset;  // empty when none
  Options options;
};
ResolvedWorkload resolve_workload(std::string_view spec);

// Generates the workload `spec` names into `sink`, with metadata `generator`, `preset`, `spec` (the
// canonical spec with every option) and `ends_empty`. Returns the number of events.
std::uint64_t generate_workload(std::string_view spec, TraceSink& sink);

}  // namespace tiermark
