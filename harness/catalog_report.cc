#include "harness/catalog_report.h"

#include <string>
#include <vector>

#include "allocators/registry.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

nlohmann::ordered_json options_json(std::span<const OptionSpec> specs) {
  nlohmann::ordered_json options = nlohmann::ordered_json::array();
  for (const OptionSpec& option : specs) {
    nlohmann::ordered_json item = {
        {"name", option.name},
        {"type", std::string(option_type_name(option.type))},
        {"default", option.default_value.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(option.default_value)},
        {"description", option.description},
    };
    if (!option.choices.empty()) item["choices"] = option.choices;
    options.push_back(std::move(item));
  }
  return options;
}

nlohmann::ordered_json component_json(const ComponentInfo& info) {
  return {{"name", std::string(info.name)}, {"description", std::string(info.description)}, {"options", options_json(info.options)}};
}

nlohmann::ordered_json generator_json(const GeneratorInfo& info) {
  nlohmann::ordered_json presets = nlohmann::ordered_json::array();
  for (const WorkloadPreset& preset : info.presets) {
    presets.push_back({{"name", std::string(preset.name)},
                       {"description", std::string(preset.description)},
                       {"settings", std::string(preset.settings)}});
  }
  return {{"name", std::string(info.name)},
          {"description", std::string(info.description)},
          {"presets", presets},
          {"options", options_json(info.options)}};
}

void print_options(std::ostream& out, std::span<const OptionSpec> specs) {
  for (const OptionSpec& option : specs) {
    const std::string value = option.default_value.empty() ? "(unset)" : option.default_value;
    out << "      " << option.name << "=" << value << "  [" << option_type_name(option.type) << "] " << option.description << "\n";
  }
}

void print_components(std::ostream& out, const std::string& title, const std::vector<ComponentInfo>& catalog,
                      const std::string& tag = "") {
  out << title << "\n";
  for (const ComponentInfo& info : catalog) {
    out << "  " << info.name << "  " << tag << info.description << "\n";
    print_options(out, info.options);
  }
}

}  // namespace

nlohmann::ordered_json catalog_json() {
  nlohmann::ordered_json out;
  out["allocators"] = nlohmann::ordered_json::array();
  for (const ComponentInfo& info : allocator_catalog()) out["allocators"].push_back(component_json(info));
  out["memory_sources"] = nlohmann::ordered_json::array();
  for (const ComponentInfo& info : upstream_catalog()) out["memory_sources"].push_back(component_json(info));
  out["workloads"] = nlohmann::ordered_json::array();
  for (const GeneratorInfo& info : generator_catalog()) out["workloads"].push_back(generator_json(info));
  // Allocators built for tests of tiermark itself (broken.overlap): listed apart and marked, in no
  // `--allocator all`.
  out["test_allocators"] = nlohmann::ordered_json::array();
  for (const ComponentInfo& info : test_allocator_catalog()) {
    nlohmann::ordered_json item = component_json(info);
    item["test_only"] = true;
    out["test_allocators"].push_back(std::move(item));
  }
  return out;
}

void print_catalog(std::ostream& out) {
  print_components(out, "Allocators (configure as NAME:key=value,...):", allocator_catalog());
  out << "\n";
  print_components(out, "Test-only allocators (planted faults for testing tiermark's own checks; never in --allocator all):",
                   test_allocator_catalog(), "[test only] ");
  out << "\n";
  print_components(out, "Memory sources the allocators sit on:", upstream_catalog());
  out << "\nWorkload generators (configure as NAME[/PRESET]:key=value,...; `tiermark trace gen SPEC -o FILE`):\n";
  for (const GeneratorInfo& info : generator_catalog()) {
    out << "  " << info.name << "  " << info.description << "\n";
    for (const WorkloadPreset& preset : info.presets) {
      out << "    preset " << info.name << "/" << preset.name << "  " << preset.description << "  (" << preset.settings << ")\n";
    }
    print_options(out, info.options);
  }
}

}  // namespace tiermark
