// Runs the real tiermark binary (TIERMARK_CLI_PATH, set by CMake) as a user would, capturing exit
// code, standard output and standard error. Shared by the integration tests of every command.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace tiermark::testing {

struct Result {
  int exit_code;
  std::string out;
  std::string err;
};

inline Result run(const std::string& args) {
  // A file of this process's own: ctest runs test processes in parallel.
  const std::string err_path = ::testing::TempDir() + "/tiermark_cli_stderr." + std::to_string(::getpid()) + ".txt";
  const std::string command = std::string(TIERMARK_CLI_PATH) + " " + args + " 2>" + err_path;
  Result result{-1, "", ""};
  FILE* pipe = popen(command.c_str(), "r");
  std::array<char, 4096> buffer{};
  while (std::size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) result.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (FILE* err = fopen(err_path.c_str(), "r")) {
    while (std::size_t n = fread(buffer.data(), 1, buffer.size(), err)) result.err.append(buffer.data(), n);
    fclose(err);
  }
  std::remove(err_path.c_str());
  return result;
}

inline int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace tiermark::testing
