// AtomicFile: output that appears under its final name whole or not at all. Writes go to a
// temporary file in the same directory (so rename() cannot cross file systems); commit() flushes and
// renames it over the destination; a destructor without commit() removes the temporary. A run that
// fails half-way therefore never corrupts or replaces a result already on disk.
#pragma once

#include <fstream>
#include <string>

namespace tiermark {

class AtomicFile {
 public:
  // Throws InputError "<path>: cannot create: <reason>" when the directory is missing or unwritable.
  explicit AtomicFile(std::string path, std::ios::openmode mode = std::ios::out);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  std::ostream& stream() { return out_; }
  // Throws std::runtime_error when the write or the rename failed.
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string temporary_;
  std::ofstream out_;
  bool committed_ = false;
};

// Checks before a run that `path` can become an AtomicFile, so a bad --json or -o fails at once with
// exit 2 instead of after minutes of measuring: throws InputError "<option> <path>: <why>" when it is
// a directory or its directory is missing or unwritable. An empty path passes (the option was not given).
void check_output_file(const std::string& path, const std::string& option);

}  // namespace tiermark
