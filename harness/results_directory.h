// Where a command's results go: `--out DIR`, or results/<UTC date>_<host>_<commit>/ by default (the
// layout results/README.md describes; scratch runs there are ignored by git). Shared by `tiermark
// replay` and `tiermark capacity`.
#pragma once

#include <filesystem>
#include <string>

namespace tiermark {

// The directory, created if needed. Throws InputError "--out DIR: cannot create the directory: ..."
// when it cannot be created.
std::filesystem::path results_directory(const std::string& out_dir);

}  // namespace tiermark
