// The system.* replay rows: `system.glibc`, `system.jemalloc`, `system.mimalloc`, `system.tcmalloc`.
// jemalloc, mimalloc and tcmalloc replace malloc for the whole process when preloaded, so each row
// runs every pass (memory, throughput, latency) in a fresh child process, `tiermark replay-child`,
// with its library in LD_PRELOAD (glibc: no LD_PRELOAD at all, an inherited one removed). The child
// flattens the same trace, replays it with the in-process `system` allocator on host memory and
// prints the pass's result as one JSON object on its stdout (a pipe; its stderr is passed through).
// Besides the usual metrics the child measures itself: peak_rss_bytes, page_faults and
// rss_before_pass_bytes (docs/replay-system-allocators.md).
//
// The library table, the child process and what a child measures of itself are malloc_child.h's,
// shared with `tiermark stress`.
//
// Invariants: the child checks that the malloc it was meant to run is the one serving it before it
// replays anything; its trace must have the parent's op count; a child that crashes, exits non-zero
// or prints something other than the expected JSON makes the pass throw PassFailure (the row fails
// with a note), never the whole run.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "harness/malloc_child.h"
#include "replay/flat_trace.h"
#include "harness/replay_source.h"
#include "replay/replay_runner.h"

namespace tiermark {

// The runner of system.* row `spec` for `trace`, which was read from `source`; the trace must outlive
// it. `settings` gives touch and sample_every; the upstream is always the host's memory. Throws
// MallocLibraryMissing for an uninstalled library, InputError for an unknown name, options (there are
// none) or a trace whose peak of requested bytes exceeds half of this host's MemAvailable.
std::unique_ptr<AllocatorRunner> make_system_malloc_runner(std::string_view spec, const ReplaySource& source,
                                                           const FlatTrace& trace, const ReplaySettings& settings);

// The hidden `tiermark replay-child` command a system.* row runs in its own process.
int replay_child_command(const std::vector<std::string>& args, std::ostream& out);

}  // namespace tiermark
