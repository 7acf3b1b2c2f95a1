// ProgressLine: "[done/total] what" redrawn in place on stderr while a command runs, only when stderr
// is a terminal (CI logs and pipes stay clean); erased when the command finishes.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <string>

namespace tiermark {

class ProgressLine {
 public:
  explicit ProgressLine(std::uint64_t total) : total_(total), enabled_(isatty(STDERR_FILENO) == 1) {}
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  ~ProgressLine() {
    if (enabled_ && done_ != 0) std::cerr << "\r\033[K" << std::flush;
  }

  void step(const std::string& what) {
    ++done_;
    if (done_ > total_) total_ = done_;
    if (enabled_) std::cerr << "\r\033[K[" << done_ << "/" << total_ << "] " << what << std::flush;
  }

 private:
  std::uint64_t total_, done_ = 0;
  bool enabled_;
};

}  // namespace tiermark
