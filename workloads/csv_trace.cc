#include "workloads/csv_trace.h"

#include <bit>
#include <charconv>
#include <vector>

#include "common/input_error.h"

namespace tiermark {
namespace {

constexpr std::array<std::string_view, 7> kColumnNames = {"op", "id", "size", "align", "stream", "thread", "tag"};
constexpr std::string_view kMetaPrefix = "#meta ";

// Splits one CSV line into fields, honouring RFC 4180 quotes. Returns false on a broken quote.
bool split_fields(std::string_view line, std::vector<std::string>& fields) {
  fields.clear();
  std::string field;
  std::size_t i = 0;
  while (true) {
    field.clear();
    if (i < line.size() && line[i] == '"') {
      ++i;
      while (true) {
        if (i >= line.size()) return false;
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      if (i < line.size() && line[i] != ',') return false;
    } else {
      const std::size_t comma = line.find(',', i);
      const std::size_t stop = comma == std::string_view::npos ? line.size() : comma;
      field.assign(line.substr(i, stop - i));
      if (field.find('"') != std::string::npos) return false;
      i = stop;
    }
    fields.push_back(field);
    if (i >= line.size()) return true;
    ++i;  // the comma
  }
}

void append_field(std::string& row, std::string_view text) {
  // A carriage return is quoted too: unquoted at the end of a row, the reader would take it for a
  // \r\n line end and drop it.
  if (text.find_first_of(",\"\r") == std::string_view::npos && (text.empty() || (text.front() != ' ' && text.back() != ' '))) {
    row += text;
    return;
  }
  row += '"';
  for (char c : text) {
    if (c == '"') row += '"';
    row += c;
  }
  row += '"';
}

void append_number(std::string& row, std::uint64_t value) {
  char buffer[24];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  row.append(buffer, end);
}

}  // namespace

CsvTraceReader::CsvTraceReader(std::istream& in, std::string name) : in_(in), name_(std::move(name)) {
  column_of_.fill(-1);
  parse_header();
}

void CsvTraceReader::fail(const std::string& problem) const { throw InputError(name_ + ": " + position() + ": " + problem); }

bool CsvTraceReader::read_line() {
  while (std::getline(in_, line_)) {
    ++line_number_;
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) continue;
    if (line_.front() == '#') {
      if (line_.starts_with(kMetaPrefix)) fail("metadata after the header (put #meta lines first)");
      continue;
    }
    return true;
  }
  if (in_.bad()) fail("read error");
  return false;
}

void CsvTraceReader::parse_header() {
  // Metadata lines, comments and empty lines, up to the header.
  while (true) {
    if (!std::getline(in_, line_)) {
      if (in_.bad()) fail("read error");
      fail("no header line (expected op,id,size[,align,stream,thread,tag])");
    }
    ++line_number_;
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) continue;
    if (line_.starts_with(kMetaPrefix)) {
      const std::string_view item = std::string_view(line_).substr(kMetaPrefix.size());
      const std::size_t equals = item.find('=');
      if (equals == std::string_view::npos) fail("metadata line without '=' (expected #meta key=value)");
      try {
        metadata_.set(item.substr(0, equals), item.substr(equals + 1));
      } catch (const InputError& e) {
        fail(e.what());
      }
      continue;
    }
    if (line_.front() == '#') continue;
    break;
  }
  std::vector<std::string> fields;
  if (!split_fields(line_, fields)) fail("bad header: broken quotes");
  if (fields.size() < 3 || fields[0] != "op" || fields[1] != "id" || fields[2] != "size") {
    fail("bad header '" + line_ + "' (expected op,id,size[,align,stream,thread,tag])");
  }
  for (std::size_t i = 0; i < fields.size(); ++i) {
    int column = -1;
    for (int c = 0; c < kColumnCount; ++c) {
      if (kColumnNames[c] == fields[i]) column = c;
    }
    if (column < 0) fail("bad header: unknown column '" + fields[i] + "' (known: op,id,size,align,stream,thread,tag)");
    if (column_of_[column] >= 0) fail("bad header: column '" + fields[i] + "' appears twice");
    column_of_[column] = static_cast<int>(i);
  }
  columns_ = static_cast<int>(fields.size());
}

bool CsvTraceReader::next(TraceEvent& event) {
  if (!read_line()) return false;
  std::vector<std::string>& fields = fields_;
  if (!split_fields(line_, fields)) fail("broken quotes");
  if (static_cast<int>(fields.size()) != columns_) {
    fail(std::to_string(fields.size()) + " fields where the header has " + std::to_string(columns_));
  }
  auto field = [&](Column column) -> std::string_view {
    return column_of_[column] < 0 ? std::string_view() : std::string_view(fields[column_of_[column]]);
  };
  // An unsigned integer field; nullopt when empty. `what` names it in messages.
  auto number = [&](Column column, std::uint64_t limit) -> std::optional<std::uint64_t> {
    const std::string_view text = field(column);
    if (text.empty()) return std::nullopt;
    const std::string name(kColumnNames[column]);
    if (text.front() == '-') fail(name + " '" + std::string(text) + "' is negative");
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range) fail(name + " '" + std::string(text) + "' overflows 64 bits");
    if (ec != std::errc() || end != text.data() + text.size()) fail(name + " '" + std::string(text) + "' is not a number");
    if (value > limit) fail(name + " " + std::string(text) + " is above the largest accepted (" + std::to_string(limit) + ")");
    return value;
  };
  auto require_empty = [&](Column column, std::string_view op) {
    if (!field(column).empty()) fail(std::string(op) + " rows leave " + std::string(kColumnNames[column]) + " empty");
  };

  const std::string_view op = field(kOp);
  event = TraceEvent{};
  if (op == "alloc" || op == "free") {
    event.kind = op == "alloc" ? EventKind::kAlloc : EventKind::kFree;
    const auto id = number(kId, UINT64_MAX);
    if (!id) fail(std::string(op) + " without an id");
    event.id = *id;
    const auto size = number(kSize, kMaxTraceSize);
    if (event.kind == EventKind::kAlloc && !size) fail("alloc of id " + std::to_string(event.id) + " without a size");
    if (size && *size == 0) fail(std::string(op) + " of id " + std::to_string(event.id) + " has size 0");
    event.size = size.value_or(0);
    event.alignment = number(kAlign, UINT64_MAX).value_or(kDefaultAlignment);
    // The validator checks an alloc's alignment; a free's is checked here, as no format could write
    // it back otherwise (.tmt stores log2 of the alignment).
    if (event.kind == EventKind::kFree && (!std::has_single_bit(event.alignment) || event.alignment > kMaxTraceAlignment)) {
      fail("free of id " + std::to_string(event.id) + " has alignment " + std::to_string(event.alignment) +
           ", not a power of two up to 1GiB");
    }
    event.stream = static_cast<StreamId>(number(kStream, UINT32_MAX).value_or(0));
    event.thread = static_cast<ThreadId>(number(kThread, UINT32_MAX).value_or(0));
    event.tag = tags_.intern(field(kTag));
  } else if (op == "phase" || op == "counter") {
    event.kind = op == "phase" ? EventKind::kPhase : EventKind::kCounter;
    for (Column column : {kId, kAlign, kStream, kThread}) require_empty(column, op);
    if (event.kind == EventKind::kPhase) {
      require_empty(kSize, op);
    } else {
      const auto value = number(kSize, UINT64_MAX);
      if (!value) fail("counter without a value in the size column");
      event.size = *value;
    }
    if (field(kTag).empty()) fail(std::string(op) + " without a name in the tag column");
    event.tag = tags_.intern(field(kTag));
  } else {
    fail("unknown op '" + std::string(op) + "' (expected alloc, free, phase or counter)");
  }
  return true;
}

void CsvTraceWriter::begin(const TraceMetadata& metadata, const TagTable& tags) {
  tags_ = &tags;
  for (const auto& [key, value] : metadata.items()) out_ << kMetaPrefix << key << '=' << value << '\n';
  out_ << "op,id,size,align,stream,thread,tag\n";
}

void CsvTraceWriter::event(const TraceEvent& event) {
  row_.clear();
  row_ += event_kind_name(event.kind);
  row_ += ',';
  const bool block = event.kind == EventKind::kAlloc || event.kind == EventKind::kFree;
  if (block) append_number(row_, event.id);
  row_ += ',';
  if (event.kind == EventKind::kAlloc || event.kind == EventKind::kCounter || event.size != 0) append_number(row_, event.size);
  row_ += ',';
  if (block && event.alignment != kDefaultAlignment) append_number(row_, event.alignment);
  row_ += ',';
  if (block && event.stream != 0) append_number(row_, event.stream);
  row_ += ',';
  if (block && event.thread != 0) append_number(row_, event.thread);
  row_ += ',';
  append_field(row_, tags_->name(event.tag));
  row_ += '\n';
  out_.write(row_.data(), static_cast<std::streamsize>(row_.size()));
}

void CsvTraceWriter::end() { out_.flush(); }

}  // namespace tiermark
