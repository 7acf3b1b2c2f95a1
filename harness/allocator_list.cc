#include "harness/allocator_list.h"

#include "allocators/registry.h"
#include "common/spec.h"

namespace tiermark {

std::vector<std::string> all_allocators() {
  std::vector<std::string> out;
  for (const ComponentInfo& info : allocator_catalog()) {
    if (info.name != "system") out.emplace_back(info.name);
  }
  return out;
}

std::vector<std::string> allocator_specs(std::string_view list) {
  return list == "all" ? all_allocators() : split_spec_list(list);
}

}  // namespace tiermark
