#include "harness/results_directory.h"

#include <ctime>
#include <system_error>

#include "common/input_error.h"
#include "harness/run_context.h"

namespace tiermark {
namespace {

std::string utc_stamp(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, format, &tm);
  return buffer;
}

}  // namespace

std::filesystem::path results_directory(const std::string& out_dir) {
  const std::filesystem::path dir =
      out_dir.empty() ? std::filesystem::path("results") / (utc_stamp("%Y-%m-%d") + "_" + host_name() + "_" + git_commit())
                      : std::filesystem::path(out_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) throw InputError("--out " + dir.string() + ": cannot create the directory: " + ec.message());
  return dir;
}

}  // namespace tiermark
