// The registry: every allocator and upstream memory source tiermark knows, by name, built from a
// spec string (`buddy:min_block=512,arena=64GiB`, `simulated:capacity=80GiB`). Specs are parsed and
// validated once, here; a bad one throws InputError with a one-line message.
//
// Allocators are listed once, in AllAllocatorTypes (allocator_types.h): the run-time registry and
// the compile-time iteration used by benchmarks both come from that one list.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/upstream.h"
#include "common/options.h"

namespace tiermark {

struct ComponentInfo {
  std::string_view name;
  std::string_view description;
  std::span<const OptionSpec> options;
};

std::vector<ComponentInfo> allocator_catalog();
// The allocators built for tests of tiermark itself (TestAllocatorTypes: broken.overlap). make_allocator
// builds them, but they are in no other list: `tiermark list` shows them apart, marked test-only.
std::vector<ComponentInfo> test_allocator_catalog();
std::vector<ComponentInfo> upstream_catalog();

// Throws InputError for an unknown name (listing the known ones, not the test-only ones), an unknown
// option or a bad value.
std::unique_ptr<Allocator> make_allocator(std::string_view spec, Upstream& upstream);
std::unique_ptr<Upstream> make_upstream(std::string_view spec);

// Validated options for component `name` from `spec` (whose name must be `name`); used to build a
// concrete allocator type directly, without the virtual adapter.
Options make_options(std::string_view spec, std::string_view name, std::span<const OptionSpec> declared);

}  // namespace tiermark
