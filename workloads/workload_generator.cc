#include "workloads/workload_generator.h"

#include <array>
#include <stdexcept>

#include "common/input_error.h"
#include "common/spec.h"
#include "workloads/cnn_generator.h"
#include "workloads/llm_serve_generator.h"
#include "workloads/trace_validator.h"
#include "workloads/transformer_generator.h"

namespace tiermark {
namespace {

// Validates a generator's events on their way to the sink: an invalid one is a generator bug.
class ValidatingSink final : public TraceSink {
 public:
  ValidatingSink(TraceSink& next, std::string_view generator) : next_(next), generator_(generator) {}
  void begin(const TraceMetadata& metadata, const TagTable& tags) override {
    tags_ = &tags;
    next_.begin(metadata, tags);
  }
  void event(const TraceEvent& event) override {
    if (std::string problem = validator_.check(event, tags_->size()); !problem.empty()) {
      throw std::logic_error("generator " + generator_ + " wrote an invalid event " +
                             std::to_string(validator_.events() + 1) + ": " + problem);
    }
    next_.event(event);
  }
  void end() override {
    if (validator_.live_blocks() != 0) {
      throw std::logic_error("generator " + generator_ + " left " + std::to_string(validator_.live_blocks()) +
                             " blocks live at the end of its trace");
    }
    next_.end();
  }

 private:
  TraceSink& next_;
  std::string generator_;
  const TagTable* tags_ = nullptr;
  TraceValidator validator_;
};

}  // namespace

std::span<const GeneratorInfo> generator_catalog() {
  static const std::array<GeneratorInfo, 3> kCatalog = {transformer_generator(), cnn_generator(), llm_serve_generator()};
  return kCatalog;
}

ResolvedWorkload resolve_workload(std::string_view text) {
  const Spec spec = parse_spec(text);
  const GeneratorInfo* generator = nullptr;
  std::string known;
  for (const GeneratorInfo& info : generator_catalog()) {
    if (info.name == spec.name) generator = &info;
    known += (known.empty() ? "" : ", ") + std::string(info.name);
  }
  if (generator == nullptr) throw InputError("unknown workload '" + spec.name + "' (known: " + known + ")");

  std::vector<std::pair<std::string, std::string>> settings;
  if (!spec.preset.empty()) {
    const WorkloadPreset* preset = nullptr;
    std::string presets;
    for (const WorkloadPreset& p : generator->presets) {
      if (p.name == spec.preset) preset = &p;
      presets += (presets.empty() ? "" : ", ") + std::string(p.name);
    }
    if (preset == nullptr) {
      throw InputError(spec.name + ": unknown preset '" + spec.preset + "' (known: " + (presets.empty() ? "none" : presets) + ")");
    }
    settings = parse_spec(std::string(generator->name) + ":" + std::string(preset->settings)).settings;
  }
  // The user's settings come after the preset's, so they override it.
  settings.insert(settings.end(), spec.settings.begin(), spec.settings.end());
  return {generator, spec.preset, Options(std::string(generator->name), generator->options, settings)};
}

std::uint64_t generate_workload(std::string_view spec, TraceSink& sink) {
  ResolvedWorkload workload = resolve_workload(spec);
  ValidatingSink validating(sink, workload.generator->name);
  TraceBuilder builder(validating);
  builder.set_metadata("generator", workload.generator->name);
  if (!workload.preset.empty()) builder.set_metadata("preset", workload.preset);
  builder.set_metadata("spec", workload.options.canonical());
  // Every generator frees what it allocated (a teardown phase), so a block live at the end of a
  // replay is a leak; ValidatingSink::end() holds generators to it.
  builder.set_metadata("ends_empty", "true");
  workload.generator->generate(workload.options, builder);
  builder.finish();
  return builder.events();
}

}  // namespace tiermark
