// The catalog report behind `tiermark list`: every allocator and memory source with its options and
// defaults, as a human table or as JSON (`{"allocators": [{"name", "description", "options": [...]}]}`).
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>

namespace tiermark {

nlohmann::ordered_json catalog_json();
void print_catalog(std::ostream& out);

}  // namespace tiermark
