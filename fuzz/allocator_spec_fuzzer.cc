// allocator_spec_fuzzer: the allocator configuration parser, the way a user's `--allocator` and
// `--memory` reach it: make_upstream() and make_allocator() of allocators/registry.h, with the spec
// syntax of common/spec.h (`NAME[/PRESET][:key=value,...]`, brackets holding commas), the typed options
// of common/options.h (sizes with units, counts, numbers, booleans, choices) and each allocator's own
// checks, caching.pytorch's `alloc_conf=[...]` (PYTORCH_CUDA_ALLOC_CONF) and roundup_power2_divisions
// `[256:1,>:8]` included.
//
// Input: `MEMORY\nALLOCATOR`, or just `ALLOCATOR` on `simulated:capacity=1GiB`. Host memory sources
// are kept to a capacity of at most 64 MiB and without `populate` so that one input cannot take the
// machine's memory (asking for it is legitimate, not a bug).
//
// Oracle: a bad spec must end in InputError (caught: the correct outcome); nothing else may escape.
// A spec that builds must give an allocator whose invariants hold before and after a few requests
// and a trim, and whose canonical configuration (config(), every option spelled out) builds again to
// the same canonical configuration, as results files promise (`tiermark replay` records it).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "allocators/registry.h"
#include "common/input_error.h"
#include "common/spec.h"

namespace {

using namespace tiermark;

[[noreturn]] void fail(const std::string& spec, const std::string& what) {
  std::fprintf(stderr, "allocator_spec_fuzzer: '%s': %s\n", spec.c_str(), what.c_str());
  std::abort();
}

void check(const Allocator& allocator, const std::string& spec, const char* when) {
  const std::string broken = allocator.check_invariants();
  if (!broken.empty()) fail(spec, std::string(when) + ": check_invariants: " + broken);
}

// A few requests across the size range, freed again; only the contract is checked (alignment, stats
// back to zero), as the allocator_ops fuzzer checks sequences in depth.
void exercise(Allocator& allocator, const std::string& spec) {
  struct Request {
    std::size_t size;
    std::size_t alignment;
  };
  const Request requests[] = {{1, 1}, {24, 16}, {512, 256}, {4096, 4096}, {100000, 64}, {3u << 20, 512}};
  std::vector<std::pair<void*, Request>> live;
  for (const Request& r : requests) {
    void* p = allocator.allocate(r.size, r.alignment, 0);
    check(allocator, spec, "after allocate");
    if (p == nullptr) continue;
    if (reinterpret_cast<std::uintptr_t>(p) % r.alignment != 0) fail(spec, "misaligned block");
    live.emplace_back(p, r);
  }
  for (auto it = live.rbegin(); it != live.rend(); ++it) {
    allocator.deallocate(it->first, it->second.size, it->second.alignment, 0);
    check(allocator, spec, "after deallocate");
  }
  const AllocatorStats stats = allocator.stats();
  if (stats.requested_bytes.current != 0 || stats.allocated_bytes.current != 0) fail(spec, "bytes still allocated after every free");
  allocator.trim();
  check(allocator, spec, "after trim");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string memory_spec(newline == std::string_view::npos ? "simulated:capacity=1GiB" : input.substr(0, newline));
  const std::string allocator_spec(newline == std::string_view::npos ? input : input.substr(newline + 1));

  std::unique_ptr<Upstream> upstream;
  std::unique_ptr<Allocator> allocator;
  try {
    const Spec memory = parse_spec(memory_spec);
    if (memory.name == "host") {
      // Bound what one input may take from the machine; see the file comment.
      for (const auto& [key, value] : memory.settings) {
        if (key == "populate" || key == "numa_node" || key == "huge_pages") return 0;
      }
    }
    upstream = make_upstream(memory_spec);
    if (upstream->touchable() && (upstream->capacity() == 0 || upstream->capacity() > (std::uint64_t{64} << 20))) return 0;
    allocator = make_allocator(allocator_spec, *upstream);
  } catch (const InputError&) {
    return 0;  // a bad spec, rejected with a message: the correct outcome
  }
  const std::string spec = memory_spec + " | " + allocator_spec;
  check(*allocator, spec, "after construction");
  exercise(*allocator, spec);

  // The canonical configuration must build the same allocator again.
  const std::string canonical = allocator->config();
  allocator.reset();  // its memory goes back first, so a small capacity fits the rebuilt one too
  std::unique_ptr<Allocator> again;
  try {
    again = make_allocator(canonical, *upstream);
  } catch (const InputError& e) {
    fail(spec, "its canonical configuration '" + canonical + "' is refused: " + e.what());
  }
  if (again->config() != canonical) fail(spec, "canonical '" + canonical + "' builds as '" + again->config() + "'");
  check(*again, spec, "rebuilt from its canonical configuration");
  return 0;
}
