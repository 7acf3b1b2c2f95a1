#include "allocators/registry.h"

#include "allocators/allocator_types.h"
#include "allocators/cuda_upstream.h"
#include "allocators/host_upstream.h"
#include "allocators/simulated_upstream.h"
#include "common/input_error.h"
#include "common/spec.h"

namespace tiermark {
namespace {

template <class T>
ComponentInfo info_of() {
  return {T::kName, T::kDescription, T::option_specs()};
}

// Options for a spec already parsed and known to name `name`.
Options options_of(const Spec& spec, std::span<const OptionSpec> declared) {
  if (!spec.preset.empty()) throw InputError(spec.name + ": has no presets, but '/" + spec.preset + "' was given");
  return Options(spec.name, declared, spec.settings);
}

std::string known_names(const std::vector<ComponentInfo>& catalog) {
  std::string names;
  for (const ComponentInfo& info : catalog) names += (names.empty() ? "" : ", ") + std::string(info.name);
  return names;
}

}  // namespace

std::vector<ComponentInfo> allocator_catalog() {
  std::vector<ComponentInfo> catalog;
  AllAllocatorTypes::for_each([&]<class T>(std::type_identity<T>) { catalog.push_back(info_of<T>()); });
  return catalog;
}

std::vector<ComponentInfo> test_allocator_catalog() {
  std::vector<ComponentInfo> catalog;
  TestAllocatorTypes::for_each([&]<class T>(std::type_identity<T>) { catalog.push_back(info_of<T>()); });
  return catalog;
}

std::vector<ComponentInfo> upstream_catalog() { return {info_of<HostUpstream>(), info_of<SimulatedUpstream>(), info_of<CudaUpstream>()}; }

Options make_options(std::string_view spec_text, std::string_view name, std::span<const OptionSpec> declared) {
  const Spec spec = parse_spec(spec_text);
  if (spec.name != name) throw InputError("spec '" + std::string(spec_text) + "' does not name " + std::string(name));
  return options_of(spec, declared);
}

std::unique_ptr<Allocator> make_allocator(std::string_view spec_text, Upstream& upstream) {
  const Spec spec = parse_spec(spec_text);
  std::unique_ptr<Allocator> made;
  const auto build = [&]<class T>(std::type_identity<T>) {
    if (made == nullptr && spec.name == T::kName) {
      made = std::make_unique<AllocatorAdapter<T>>(options_of(spec, T::option_specs()), upstream);
    }
  };
  AllAllocatorTypes::for_each(build);
  TestAllocatorTypes::for_each(build);
  if (made == nullptr) {
    throw InputError("unknown allocator '" + spec.name + "' (known: " + known_names(allocator_catalog()) + ")");
  }
  return made;
}

std::unique_ptr<Upstream> make_upstream(std::string_view spec_text) {
  const Spec spec = parse_spec(spec_text);
  if (spec.name == HostUpstream::kName) {
    return std::make_unique<HostUpstream>(options_of(spec, HostUpstream::option_specs()));
  }
  if (spec.name == SimulatedUpstream::kName) {
    return std::make_unique<SimulatedUpstream>(
        options_of(spec, SimulatedUpstream::option_specs()));
  }
  if (spec.name == CudaUpstream::kName) return std::make_unique<CudaUpstream>(options_of(spec, CudaUpstream::option_specs()));
  throw InputError("unknown memory source '" + spec.name + "' (known: " + known_names(upstream_catalog()) + ")");
}

}  // namespace tiermark
