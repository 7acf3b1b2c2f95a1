// The allocators a `--allocator LIST` names, shared by `tiermark replay` and `tiermark capacity`: a
// comma list of specs (`buddy:min_block=256,caching.pytorch`, split as common/spec.h splits it) or
// `all`. Syntax only: whether each spec is a valid allocator is found when a runner is made.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tiermark {

// Every registered allocator but `system` (the process's own malloc: it cannot sit on a simulated
// device, and the system.* rows measure malloc implementations in their own processes); never a
// test-only allocator (broken.overlap: registry.h's test_allocator_catalog(), not allocator_catalog()).
std::vector<std::string> all_allocators();

// The specs `list` names: all_allocators() for "all", else the comma list split into specs.
std::vector<std::string> allocator_specs(std::string_view list);

}  // namespace tiermark
