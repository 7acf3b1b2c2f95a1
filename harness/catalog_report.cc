#include "harness/catalog_report.h"

#include <string>
#include <vector>

#include "allocators/registry.h"

namespace tiermark {
namespace {

nlohmann::ordered_json component_json(const ComponentInfo& info) {
  nlohmann::ordered_json options = nlohmann::ordered_json::array();
  for (const OptionSpec& option : info.options) {
    nlohmann::ordered_json item = {
        {"name", option.name},
        {"type", std::string(option_type_name(option.type))},
        {"default", option.default_value.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(option.default_value)},
        {"description", option.description},
    };
    if (!option.choices.empty()) item["choices"] = option.choices;
    options.push_back(std::move(item));
  }
  return {{"name", std::string(info.name)}, {"description", std::string(info.description)}, {"options", options}};
}

void print_components(std::ostream& out, const std::string& title, const std::vector<ComponentInfo>& catalog) {
  out << title << "\n";
  for (const ComponentInfo& info : catalog) {
    out << "  " << info.name << "  " << info.description << "\n";
    for (const OptionSpec& option : info.options) {
      const std::string value = option.default_value.empty() ? "(unset)" : option.default_value;
      out << "      " << option.name << "=" << value << "  [" << option_type_name(option.type) << "] "
          << option.description << "\n";
    }
  }
}

}  // namespace

nlohmann::ordered_json catalog_json() {
  nlohmann::ordered_json out;
  out["allocators"] = nlohmann::ordered_json::array();
  for (const ComponentInfo& info : allocator_catalog()) out["allocators"].push_back(component_json(info));
  out["memory_sources"] = nlohmann::ordered_json::array();
  for (const ComponentInfo& info : upstream_catalog()) out["memory_sources"].push_back(component_json(info));
  return out;
}

void print_catalog(std::ostream& out) {
  print_components(out, "Allocators (configure as NAME:key=value,...):", allocator_catalog());
  out << "\n";
  print_components(out, "Memory sources the allocators sit on:", upstream_catalog());
}

}  // namespace tiermark
