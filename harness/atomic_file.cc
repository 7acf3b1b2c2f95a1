#include "harness/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "common/input_error.h"

namespace tiermark {

AtomicFile::AtomicFile(std::string path, std::ios::openmode mode)
    : path_(std::move(path)), temporary_(path_ + ".tmp." + std::to_string(::getpid())) {
  out_.open(temporary_, mode | std::ios::out | std::ios::trunc);
  if (!out_) throw InputError(path_ + ": cannot create: " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    out_.close();
    std::remove(temporary_.c_str());
  }
}

void AtomicFile::commit() {
  out_.flush();
  const bool written = static_cast<bool>(out_);
  out_.close();
  if (!written || out_.fail()) throw std::runtime_error(path_ + ": write failed (disk full?)");
  if (std::rename(temporary_.c_str(), path_.c_str()) != 0) {
    throw std::runtime_error(path_ + ": cannot rename the temporary file into place: " + std::strerror(errno));
  }
  committed_ = true;
}

void check_output_file(const std::string& path, const std::string& option) {
  if (path.empty()) return;
  const std::filesystem::path file(path);
  std::error_code error;
  if (std::filesystem::is_directory(file, error)) throw InputError(option + " " + path + ": is a directory, not a file");
  const std::filesystem::path parent = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(parent, error)) {
    throw InputError(option + " " + path + ": no such directory " + parent.string());
  }
  if (::access(parent.c_str(), W_OK) != 0) {
    throw InputError(option + " " + path + ": cannot write in " + parent.string() + ": " + std::strerror(errno));
  }
}

}  // namespace tiermark
