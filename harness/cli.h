// The `tiermark` command line: `tiermark <command> [options]`. Exit codes are part of the contract:
// 0 success, 1 a run that failed, 2 bad input (one line on stderr naming the problem).
#pragma once

#include <ostream>

namespace tiermark {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace tiermark
