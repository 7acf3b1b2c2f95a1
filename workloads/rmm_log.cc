#include "workloads/rmm_log.h"

#include <charconv>
#include <string_view>
#include <vector>

#include "common/input_error.h"

namespace tiermark {
namespace {

std::vector<std::string_view> split_commas(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = line.find(',', start);
    fields.push_back(line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return fields;
    start = comma + 1;
  }
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// A pointer or stream as RMM prints it: 0x-prefixed hex (or plain hex digits).
bool parse_hex(std::string_view text, std::uint64_t& value) {
  if (text.starts_with("0x") || text.starts_with("0X")) text.remove_prefix(2);
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

void RmmLogReader::fail(const std::string& problem) const { throw InputError(name_ + ": " + position() + ": " + problem); }

RmmLogReader::RmmLogReader(std::istream& in, std::string name) : in_(in), name_(std::move(name)) {
  if (!std::getline(in_, line_)) fail("empty file (expected the RMM log header Thread,Time,Action,Pointer,Size,Stream)");
  ++line_number_;
  if (!line_.empty() && line_.back() == '\r') line_.pop_back();
  const std::vector<std::string_view> header = split_commas(line_);
  static constexpr std::string_view kNames[kColumnCount] = {"Thread", "Action", "Pointer", "Size", "Stream"};
  for (std::size_t i = 0; i < header.size(); ++i) {
    for (int c = 0; c < kColumnCount; ++c) {
      if (trim(header[i]) == kNames[c]) column_of_[c] = static_cast<int>(i);
    }
  }
  for (int c = 0; c < kColumnCount; ++c) {
    if (column_of_[c] < 0) {
      fail("not an RMM log header: no '" + std::string(kNames[c]) + "' column (expected Thread,Time,Action,Pointer,Size,Stream)");
    }
  }
  columns_ = static_cast<int>(header.size());
  metadata_.set("source", "rmm-log");
  metadata_.set("source.file", name_);
  metadata_.set("ends_empty", "false");
  failure_tag_ = tags_.intern("rmm.allocate_failure");
}

bool RmmLogReader::next(TraceEvent& event) {
  while (true) {
    if (!std::getline(in_, line_)) {
      if (in_.bad()) fail("read error");
      return false;
    }
    ++line_number_;
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (!trim(line_).empty()) break;
  }
  const std::vector<std::string_view> fields = split_commas(line_);
  if (static_cast<int>(fields.size()) != columns_) {
    fail(std::to_string(fields.size()) + " fields where the header has " + std::to_string(columns_));
  }
  auto field = [&](Column c) { return trim(fields[column_of_[c]]); };

  std::uint64_t pointer = 0;
  if (!parse_hex(field(kPointer), pointer)) fail("pointer '" + std::string(field(kPointer)) + "' is not a hex address");
  const std::string_view size_text = field(kSize);
  std::uint64_t size = 0;
  if (!size_text.empty() && size_text.front() == '-') fail("size '" + std::string(size_text) + "' is negative");
  auto [end, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size);
  if (ec == std::errc::result_out_of_range) fail("size '" + std::string(size_text) + "' overflows 64 bits");
  if (ec != std::errc() || end != size_text.data() + size_text.size()) fail("size '" + std::string(size_text) + "' is not a number");
  std::uint64_t stream_pointer = 0;
  if (!parse_hex(field(kStream), stream_pointer)) fail("stream '" + std::string(field(kStream)) + "' is not a hex value");

  event = TraceEvent{};
  const auto thread = threads_.try_emplace(std::string(field(kThread)), static_cast<ThreadId>(threads_.size())).first->second;
  const auto stream =
      stream_pointer == 0 ? StreamId{0}
                          : streams_.try_emplace(stream_pointer, static_cast<StreamId>(streams_.size() + 1)).first->second;
  const std::string_view action = field(kAction);
  if (action == "allocate") {
    if (size == 0) fail("allocate of size 0");
    if (live_.contains(pointer)) fail("pointer " + std::string(field(kPointer)) + " allocated again while live");
    event.kind = EventKind::kAlloc;
    event.id = next_id_++;
    live_.emplace(pointer, event.id);
  } else if (action == "free" || action == "deallocate") {
    auto it = live_.find(pointer);
    if (it == live_.end()) fail("free of pointer " + std::string(field(kPointer)) + ", which is not live");
    event.kind = EventKind::kFree;
    event.id = it->second;
    live_.erase(it);
  } else if (action == "allocate failure") {
    event.kind = EventKind::kCounter;
    event.tag = failure_tag_;
    event.size = size;
    return true;
  } else {
    fail("unknown action '" + std::string(action) + "' (expected allocate, allocate failure, free or deallocate)");
  }
  event.size = size;
  event.stream = stream;
  event.thread = thread;
  return true;
}

}  // namespace tiermark
