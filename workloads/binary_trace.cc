#include "workloads/binary_trace.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/input_error.h"

namespace tiermark {
namespace {

// 0x89 and the CR LF / ^Z / LF tail catch 7-bit and text-mode transfers, as PNG's signature does.
constexpr std::array<unsigned char, 8> kMagic = {0x89, 'T', 'M', 'T', 0x0D, 0x0A, 0x1A, 0x0A};

constexpr std::uint8_t kOpMask = 0x03;
constexpr std::uint8_t kOpAlloc = 0, kOpFree = 1, kOpPhase = 2, kOpCounter = 3;
// alloc: bit 2 explicit id, bit 3 context follows, bits 4-7 size code.
constexpr std::uint8_t kAllocExplicitId = 0x04, kAllocContext = 0x08;
constexpr int kSizeLiteral = 14;
constexpr std::uint8_t kEndRecord = 0xF0;  // an alloc header with size code 15
// free: bits 2-3 id mode, bit 4 size follows, bit 5 tag follows, bit 6 context follows.
constexpr std::uint8_t kFreeSize = 0x10, kFreeTag = 0x20, kFreeContext = 0x40;
enum FreeIdMode : std::uint8_t { kBelowLastFree = 0, kLastAlloc = 1, kAboveLastFree = 2, kExplicit = 3 };
// context mask bits
constexpr std::uint8_t kContextAlign = 1, kContextStream = 2, kContextThread = 4;
constexpr std::uint64_t kMaxTagLength = 1 << 20;
constexpr std::uint64_t kMaxMetadataItems = 1 << 16;
constexpr std::uint64_t kMaxMetadataLength = 64 << 20;
constexpr std::size_t kIoChunk = 1 << 16;

// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zlib and PNG compute it.
const std::array<std::uint32_t, 256>& crc_table() {
  static const std::array<std::uint32_t, 256> kTable = [] {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return table;
  }();
  return kTable;
}

std::uint32_t crc_update(std::uint32_t crc, const char* data, std::size_t size) {
  const auto& table = crc_table();
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ static_cast<unsigned char>(data[i])) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::uint64_t zigzag_encode(std::int64_t v) { return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63); }
std::int64_t zigzag_decode(std::uint64_t v) { return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1); }

}  // namespace

namespace detail {

int BinaryTraceState::find_size(std::uint64_t size) {
  for (int i = 0; i < kSizeCacheEntries; ++i) {
    if (sizes[i] == size) return i;
  }
  return -1;
}

std::uint64_t BinaryTraceState::take_size(int index) {
  const std::uint64_t size = sizes[index];
  std::copy_backward(sizes.begin(), sizes.begin() + index, sizes.begin() + index + 1);
  sizes[0] = size;
  return size;
}

void BinaryTraceState::push_size(std::uint64_t size) {
  std::copy_backward(sizes.begin(), sizes.end() - 1, sizes.end());
  sizes[0] = size;
}

}  // namespace detail

bool looks_like_binary_trace(std::istream& in) {
  std::array<char, kMagic.size()> head{};
  const std::streampos start = in.tellg();
  in.read(head.data(), head.size());
  const bool match = in.gcount() == static_cast<std::streamsize>(head.size()) && std::memcmp(head.data(), kMagic.data(), head.size()) == 0;
  in.clear();
  in.seekg(start);
  return match;
}

// ---- writer ----

void BinaryTraceWriter::put_varint(std::uint64_t value) {
  while (value >= 0x80) {
    put(static_cast<std::uint8_t>(value | 0x80));
    value >>= 7;
  }
  put(static_cast<std::uint8_t>(value));
}

void BinaryTraceWriter::put_zigzag(std::int64_t value) { put_varint(zigzag_encode(value)); }

void BinaryTraceWriter::flush_record() {
  if (record_.size() < kIoChunk) return;
  crc_ = crc_update(crc_, record_.data(), record_.size());
  out_.write(record_.data(), static_cast<std::streamsize>(record_.size()));
  bytes_ += record_.size();
  record_.clear();
}

void BinaryTraceWriter::begin(const TraceMetadata& metadata, const TagTable& tags) {
  tags_ = &tags;
  record_.append(reinterpret_cast<const char*>(kMagic.data()), kMagic.size());
  put(kBinaryTraceVersion & 0xFF);
  put(kBinaryTraceVersion >> 8);
  put(0);  // flags
  put(0);
  put_varint(metadata.items().size());
  for (const auto& [key, value] : metadata.items()) {
    put_varint(key.size());
    record_ += key;
    put_varint(value.size());
    record_ += value;
  }
  flush_record();
}

void BinaryTraceWriter::put_tag(TagId source_tag) {
  if (source_tag >= file_tag_.size()) file_tag_.resize(std::max<std::size_t>(source_tag + 1, file_tag_.size() * 2), 0);
  TagId file_tag = source_tag == kNoTag ? kNoTag : file_tag_[source_tag];
  const bool define = source_tag != kNoTag && file_tag == kNoTag;
  if (define) file_tag = file_tag_[source_tag] = file_tags_++;
  put_zigzag(static_cast<std::int64_t>(file_tag) - static_cast<std::int64_t>(state_.last_tag));
  state_.last_tag = file_tag;
  if (define) put_tag_definition(tags_->name(source_tag));
}

void BinaryTraceWriter::put_tag_definition(std::string_view name) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  std::vector<std::uint32_t> ids;
  std::size_t shared = 0;
  for (std::string_view part : parts) {
    auto it = component_ids_.find(std::string(part));
    const bool known = it != component_ids_.end();
    if (ids.size() == shared && shared < last_definition_.size() && known && it->second == last_definition_[shared]) ++shared;
    ids.push_back(known ? it->second : UINT32_MAX);
  }
  put_varint(shared);
  put_varint(parts.size() - shared);
  for (std::size_t i = shared; i < parts.size(); ++i) {
    if (ids[i] == UINT32_MAX) {
      // A new component: its id is the next one, then its spelling. (A part repeated within this
      // one name is new only at its first occurrence.)
      auto [it, inserted] = component_ids_.try_emplace(std::string(parts[i]), static_cast<std::uint32_t>(component_ids_.size()));
      ids[i] = it->second;
      put_varint(ids[i]);
      if (inserted) {
        put_varint(parts[i].size());
        record_ += parts[i];
      }
    } else {
      put_varint(ids[i]);
    }
  }
  last_definition_ = std::move(ids);
}

void BinaryTraceWriter::put_context(const TraceEvent& event) {
  std::uint8_t mask = 0;
  if (event.alignment != state_.alignment) mask |= kContextAlign;
  if (event.stream != state_.stream) mask |= kContextStream;
  if (event.thread != state_.thread) mask |= kContextThread;
  put(mask);
  if ((mask & kContextAlign) != 0) put_varint(static_cast<std::uint64_t>(std::countr_zero(event.alignment)));
  if ((mask & kContextStream) != 0) put_varint(event.stream);
  if ((mask & kContextThread) != 0) put_varint(event.thread);
  state_.alignment = event.alignment;
  state_.stream = event.stream;
  state_.thread = event.thread;
}

void BinaryTraceWriter::event(const TraceEvent& event) {
  const bool context_changed =
      event.alignment != state_.alignment || event.stream != state_.stream || event.thread != state_.thread;
  switch (event.kind) {
    case EventKind::kAlloc: {
      const bool explicit_id = event.id != state_.last_alloc_id + 1;
      int code = state_.find_size(event.size);
      std::uint8_t head = kOpAlloc;
      if (explicit_id) head |= kAllocExplicitId;
      if (context_changed) head |= kAllocContext;
      head |= static_cast<std::uint8_t>((code < 0 ? kSizeLiteral : code) << 4);
      put(head);
      if (explicit_id) put_zigzag(static_cast<std::int64_t>(event.id - (state_.last_alloc_id + 1)));
      if (context_changed) put_context(event);
      if (code < 0) {
        put_varint(event.size);
        state_.push_size(event.size);
      } else {
        state_.take_size(code);
      }
      put_tag(event.tag);
      state_.last_alloc_id = event.id;
      break;
    }
    case EventKind::kFree: {
      FreeIdMode mode = kExplicit;
      if (event.id == state_.last_free_id - 1) {
        mode = kBelowLastFree;
      } else if (event.id == state_.last_alloc_id) {
        mode = kLastAlloc;
      } else if (event.id == state_.last_free_id + 1) {
        mode = kAboveLastFree;
      }
      std::uint8_t head = kOpFree | static_cast<std::uint8_t>(mode << 2);
      if (event.size != 0) head |= kFreeSize;
      if (event.tag != kNoTag) head |= kFreeTag;
      if (context_changed) head |= kFreeContext;
      put(head);
      if (mode == kExplicit) put_zigzag(static_cast<std::int64_t>(event.id - state_.last_alloc_id));
      if (event.size != 0) put_varint(event.size);
      if (event.tag != kNoTag) put_tag(event.tag);
      if (context_changed) put_context(event);
      state_.last_free_id = event.id;
      break;
    }
    case EventKind::kPhase:
      put(kOpPhase);
      put_tag(event.tag);
      break;
    case EventKind::kCounter:
      put(kOpCounter);
      put_tag(event.tag);
      put_varint(event.size);
      break;
  }
  ++events_;
  flush_record();
}

void BinaryTraceWriter::end() {
  put(kEndRecord);
  put_varint(events_);
  crc_ = crc_update(crc_, record_.data(), record_.size());
  for (int i = 0; i < 4; ++i) record_.push_back(static_cast<char>((crc_ >> (8 * i)) & 0xFF));
  out_.write(record_.data(), static_cast<std::streamsize>(record_.size()));
  bytes_ += record_.size();
  record_.clear();
  out_.flush();
}

// ---- reader ----

void BinaryTraceReader::fail(const std::string& problem) const { throw InputError(name_ + ": " + position() + ": " + problem); }

std::uint8_t BinaryTraceReader::byte() {
  if (buffer_pos_ == buffer_end_) {
    in_.read(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    buffer_end_ = static_cast<std::size_t>(in_.gcount());
    buffer_pos_ = 0;
    if (buffer_end_ == 0) {
      if (in_.bad()) fail("read error");
      fail("truncated file: it ends inside a record (at byte " + std::to_string(offset_) + ") or before the end record");
    }
  }
  const char c = buffer_[buffer_pos_++];
  crc_ = crc_update(crc_, &c, 1);
  ++offset_;
  return static_cast<std::uint8_t>(c);
}

std::uint64_t BinaryTraceReader::varint() {
  std::uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    const std::uint8_t b = byte();
    if (shift == 63 && b > 1) fail("corrupt varint (more than 64 bits)");
    value |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return value;
  }
  fail("corrupt varint (more than 10 bytes)");
}

std::int64_t BinaryTraceReader::zigzag() { return zigzag_decode(varint()); }

TagId BinaryTraceReader::tag_delta() {
  const std::int64_t tag = static_cast<std::int64_t>(state_.last_tag) + zigzag();
  if (tag < 0 || tag > static_cast<std::int64_t>(tags_.size())) fail("corrupt tag reference " + std::to_string(tag));
  if (tag == static_cast<std::int64_t>(tags_.size())) {
    const std::string name = tag_definition();
    if (tags_.intern(name) != static_cast<TagId>(tag)) fail("corrupt tag definition: '" + name + "' is defined twice");
  }
  state_.last_tag = static_cast<TagId>(tag);
  return state_.last_tag;
}

std::string BinaryTraceReader::tag_definition() {
  const std::uint64_t shared = varint();
  if (shared > last_definition_.size()) fail("corrupt tag definition (shares " + std::to_string(shared) + " components)");
  const std::uint64_t count = varint();
  if (shared + count == 0 || count > kMaxTagLength) fail("corrupt tag definition (" + std::to_string(count) + " components)");
  last_definition_.resize(shared);
  std::string name;
  for (std::uint64_t i = 0; i < shared + count; ++i) {
    if (i >= shared) {
      const std::uint64_t id = varint();
      if (id > components_.size()) fail("corrupt tag component reference " + std::to_string(id));
      if (id == components_.size()) {
        const std::uint64_t length = varint();
        if (length > kMaxTagLength) fail("corrupt tag component (length " + std::to_string(length) + ")");
        std::string part(length, '\0');
        for (char& c : part) c = static_cast<char>(byte());
        // Tags are one line, as trace metadata values are: the CSV form could not hold a line feed.
        if (part.find('\n') != std::string::npos) fail("corrupt tag component (holds a line feed)");
        components_.push_back(std::move(part));
      }
      last_definition_.push_back(static_cast<std::uint32_t>(id));
    }
    if (i != 0) name += '.';
    name += components_[last_definition_[i]];
    if (name.size() > kMaxTagLength) fail("corrupt tag definition (name longer than 1MiB)");
  }
  return name;
}

void BinaryTraceReader::read_context() {
  const std::uint8_t mask = byte();
  if (mask == 0 || (mask & ~(kContextAlign | kContextStream | kContextThread)) != 0) fail("corrupt context mask");
  if ((mask & kContextAlign) != 0) {
    const std::uint64_t log2 = varint();
    if (log2 > 30) fail("corrupt alignment 2^" + std::to_string(log2));
    state_.alignment = std::uint64_t{1} << log2;
  }
  auto u32 = [&](const char* what) {
    const std::uint64_t v = varint();
    if (v > UINT32_MAX) fail(std::string("corrupt ") + what + " " + std::to_string(v));
    return static_cast<std::uint32_t>(v);
  };
  if ((mask & kContextStream) != 0) state_.stream = u32("stream");
  if ((mask & kContextThread) != 0) state_.thread = u32("thread");
}

BinaryTraceReader::BinaryTraceReader(std::istream& in, std::string name)
    : in_(in), name_(std::move(name)), buffer_(kIoChunk) {
  for (unsigned char expected : kMagic) {
    if (byte() != expected) fail("not a tiermark binary trace (bad magic number)");
  }
  const std::uint16_t version = static_cast<std::uint16_t>(byte() | (byte() << 8));
  record_offset_ = offset_ - 2;
  if (version != kBinaryTraceVersion) {
    fail("format version " + std::to_string(version) + ", but this tiermark reads version " + std::to_string(kBinaryTraceVersion));
  }
  record_offset_ = offset_;
  if (byte() != 0 || byte() != 0) fail("unknown header flags");
  record_offset_ = offset_;
  const std::uint64_t items = varint();
  if (items > kMaxMetadataItems) fail("corrupt header (" + std::to_string(items) + " metadata items)");
  for (std::uint64_t i = 0; i < items; ++i) {
    record_offset_ = offset_;
    std::string text[2];
    for (std::string& part : text) {
      const std::uint64_t length = varint();
      if (length > kMaxMetadataLength) fail("corrupt metadata length " + std::to_string(length));
      part.resize(length);
      for (char& c : part) c = static_cast<char>(byte());
    }
    try {
      metadata_.set(text[0], text[1]);
    } catch (const InputError& e) {
      fail(std::string("corrupt metadata: ") + e.what());
    }
  }
}

bool BinaryTraceReader::next(TraceEvent& event) {
  if (done_) return false;
  record_offset_ = offset_;
  const std::uint8_t head = byte();
  event = TraceEvent{};
  switch (head & kOpMask) {
    case kOpAlloc: {
      if (head == kEndRecord) {
        const std::uint64_t count = varint();
        const std::uint32_t expected_crc = crc_;
        std::uint32_t stored = 0;
        for (int i = 0; i < 4; ++i) stored |= static_cast<std::uint32_t>(byte()) << (8 * i);
        if (count != events_) fail("corrupt file: the end record counts " + std::to_string(count) + " events, read " + std::to_string(events_));
        if (stored != expected_crc) fail("corrupt file: checksum mismatch");
        char extra = 0;
        if (buffer_pos_ < buffer_end_ || in_.read(&extra, 1).gcount() == 1) fail("corrupt file: bytes after the end record");
        done_ = true;
        return false;
      }
      const int code = head >> 4;
      if (code > kSizeLiteral) fail("corrupt record header 0x" + std::to_string(head));
      event.kind = EventKind::kAlloc;
      event.id = state_.last_alloc_id + 1;
      if ((head & kAllocExplicitId) != 0) event.id += static_cast<std::uint64_t>(zigzag());
      if ((head & kAllocContext) != 0) read_context();
      event.size = code == kSizeLiteral ? varint() : state_.take_size(code);
      if (code == kSizeLiteral) state_.push_size(event.size);
      event.tag = tag_delta();
      state_.last_alloc_id = event.id;
      break;
    }
    case kOpFree: {
      if ((head & 0x80) != 0) fail("corrupt free record header");
      event.kind = EventKind::kFree;
      switch (static_cast<FreeIdMode>((head >> 2) & 3)) {
        case kBelowLastFree: event.id = state_.last_free_id - 1; break;
        case kLastAlloc: event.id = state_.last_alloc_id; break;
        case kAboveLastFree: event.id = state_.last_free_id + 1; break;
        case kExplicit: event.id = state_.last_alloc_id + static_cast<std::uint64_t>(zigzag()); break;
      }
      if ((head & kFreeSize) != 0) {
        event.size = varint();
        if (event.size == 0) fail("corrupt free record (explicit size 0)");
      }
      if ((head & kFreeTag) != 0) event.tag = tag_delta();
      if ((head & kFreeContext) != 0) read_context();
      state_.last_free_id = event.id;
      break;
    }
    case kOpPhase:
    case kOpCounter:
      if ((head & ~kOpMask) != 0) fail("corrupt record header");
      event.kind = (head & kOpMask) == kOpPhase ? EventKind::kPhase : EventKind::kCounter;
      event.tag = tag_delta();
      if (event.kind == EventKind::kCounter) event.size = varint();
      ++events_;
      return true;
  }
  event.alignment = state_.alignment;
  event.stream = state_.stream;
  event.thread = state_.thread;
  ++events_;
  return true;
}

}  // namespace tiermark
