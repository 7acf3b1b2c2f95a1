// The run context: facts about the machine, build and software a result was measured with, stamped on
// every result file (schema tiermark/1) the way Google Benchmark's JSON `context` is. Invariants: every
// key is always present, and a fact that cannot be read is null, never guessed or defaulted.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tiermark {

// Gathered once per run (it loads the hwloc topology). Keys, in order:
//   date (UTC, 2026-11-23T17:02:11Z), host, cpu, cpu_mhz, cores, threads, numa_nodes,
//   caches: [{level "L1".."L3", type "data"|"unified", size_bytes, line_bytes, associativity,
//             shared_by_pus, count}], one item per level and type; associativity -1 means fully
//             associative (hwloc's convention); a field on which the instances disagree (hybrid
//             CPUs) is null, since no single value describes them,
//   memory_bytes, memory_available_bytes, kernel, os, compiler, build_type, sanitizer ("" for none),
//   tiermark_version, git_commit, library_versions {hwloc, glibc, libstdc++, nlohmann_json, boost},
//   transparent_hugepage, transparent_hugepage_defrag, page_size, cpu_governor, load_average [1, 5, 15].
// The command line is not included: the caller adds `command`.
nlohmann::ordered_json run_context();

// The short host name (up to the first '.'; characters outside [A-Za-z0-9_-] become '-'), safe in a
// directory name such as results/<date>_<host>_<commit>/. "unknown" when the system gives none.
std::string host_name();

// The commit tiermark was built from: TIERMARK_GIT_COMMIT from the environment when set, else the one
// read when CMake configured the build ("<12 hex digits>[-dirty]"), else "unknown".
std::string git_commit();

}  // namespace tiermark
