#include "harness/trace_files.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/input_error.h"
#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/rmm_log.h"

namespace tiermark {
namespace {

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

bool looks_like_rmm_log(std::istream& in) {
  const std::streampos start = in.tellg();
  std::string first;
  std::getline(in, first);
  in.clear();
  in.seekg(start);
  return first.starts_with("Thread,");
}

}  // namespace

TraceFormat parse_trace_format(std::string_view name) {
  if (name == "auto") return TraceFormat::kAuto;
  if (name == "csv") return TraceFormat::kCsv;
  if (name == "tmt") return TraceFormat::kBinary;
  if (name == "rmm") return TraceFormat::kRmm;
  throw InputError("unknown trace format '" + std::string(name) + "' (known: auto, csv, tmt, rmm)");
}

TraceFile::TraceFile(const std::string& path, TraceFormat format) : format_(format) {
  if (std::filesystem::is_directory(path)) throw InputError(path + ": is a directory, not a trace file");
  in_.open(path, std::ios::in | std::ios::binary);
  if (!in_) throw InputError(path + ": cannot open: " + std::strerror(errno));
  if (format_ == TraceFormat::kAuto) {
    if (looks_like_binary_trace(in_)) {
      format_ = TraceFormat::kBinary;
    } else if (looks_like_rmm_log(in_)) {
      format_ = TraceFormat::kRmm;
    } else {
      format_ = TraceFormat::kCsv;
    }
  }
  switch (format_) {
    case TraceFormat::kBinary: source_ = std::make_unique<BinaryTraceReader>(in_, path); break;
    case TraceFormat::kRmm: source_ = std::make_unique<RmmLogReader>(in_, path); break;
    case TraceFormat::kCsv:
    case TraceFormat::kAuto: source_ = std::make_unique<CsvTraceReader>(in_, path); break;
  }
}

TraceFileWriter::TraceFileWriter(const std::string& path)
    : file_((ends_with(path, ".csv") || ends_with(path, ".tmt"))
                ? path
                : throw InputError(path + ": unknown trace format (name the output .csv for text or .tmt for binary)"),
            std::ios::out | std::ios::binary) {
  if (ends_with(path, ".tmt")) {
    writer_ = std::make_unique<BinaryTraceWriter>(file_.stream());
  } else {
    writer_ = std::make_unique<CsvTraceWriter>(file_.stream());
  }
}

TraceFileWriter::~TraceFileWriter() = default;

void TraceFileWriter::end() {
  writer_->end();
  bytes_ = static_cast<std::uint64_t>(file_.stream().tellp());
  file_.commit();
}

}  // namespace tiermark
