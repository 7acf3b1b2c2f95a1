// The compact binary trace format `.tmt` (docs/trace-format.md has the byte layout). A versioned
// header with the metadata, then one record per event: a header byte, then zigzag varint deltas
// against the previous alloc id, free id and tag, with a 14-entry move-to-front cache of recent sizes
// and a context register (alignment, stream, thread) written only when it changes. Tags are defined
// inline at their first use, as dot-separated components (`layer3` `attn` `scores`) sharing a prefix
// with the tag defined before, each component spelled once; so both ends stream in memory bounded by
// the tag table, and the hundreds of per-layer tag names of a model cost a few bytes each. An end record
// carries the event count and a CRC-32 of every byte before it, so truncation and corruption are
// caught, at the byte offset where they show.
#pragma once

#include <array>
#include <cstdint>
#include <istream>
#include <unordered_map>
#include <ostream>
#include <string>
#include <vector>

#include "workloads/trace_stream.h"

namespace tiermark {

inline constexpr std::uint16_t kBinaryTraceVersion = 1;

namespace detail {

// What reader and writer both track to encode an event as a delta from the ones before it.
struct BinaryTraceState {
  static constexpr int kSizeCacheEntries = 14;

  SlotId last_alloc_id = UINT64_MAX;  // so that the first alloc, id 0, is "the next id"
  SlotId last_free_id = 0;
  TagId last_tag = kNoTag;
  std::uint64_t alignment = kDefaultAlignment;
  StreamId stream = 0;
  ThreadId thread = 0;
  std::array<std::uint64_t, kSizeCacheEntries> sizes{};
  // The position of `size` in the cache, or -1; moves a hit to the front.
  int find_size(std::uint64_t size);
  void push_size(std::uint64_t size);
  std::uint64_t take_size(int index);  // the size at `index`, moved to the front
};

}  // namespace detail

class BinaryTraceReader final : public TraceSource {
 public:
  // Reads the header; throws InputError "<name>: byte N: <problem>" for a bad magic number, an
  // unknown version or a truncated header.
  BinaryTraceReader(std::istream& in, std::string name);

  const TraceMetadata& metadata() const override { return metadata_; }
  const TagTable& tags() const override { return tags_; }
  bool next(TraceEvent& event) override;
  std::string position() const override { return "byte " + std::to_string(record_offset_); }
  const std::string& source_name() const override { return name_; }

 private:
  std::uint8_t byte();
  std::uint64_t varint();
  std::int64_t zigzag() ;
  TagId tag_delta();
  std::string tag_definition();
  void read_context();
  [[noreturn]] void fail(const std::string& problem) const;

  std::istream& in_;
  std::string name_;
  TraceMetadata metadata_;
  TagTable tags_;
  detail::BinaryTraceState state_;
  std::vector<std::string> components_;             // tag name components by id
  std::vector<std::uint32_t> last_definition_;      // component ids of the tag defined last
  std::uint32_t crc_ = 0;
  std::uint64_t offset_ = 0;         // bytes consumed
  std::uint64_t record_offset_ = 0;  // where the current record starts
  std::uint64_t events_ = 0;
  bool done_ = false;
  std::vector<char> buffer_;
  std::size_t buffer_pos_ = 0;
  std::size_t buffer_end_ = 0;
};

class BinaryTraceWriter final : public TraceSink {
 public:
  explicit BinaryTraceWriter(std::ostream& out) : out_(out) {}
  void begin(const TraceMetadata& metadata, const TagTable& tags) override;
  void event(const TraceEvent& event) override;
  void end() override;

  std::uint64_t bytes_written() const { return bytes_; }

 private:
  void put(std::uint8_t byte) { record_.push_back(static_cast<char>(byte)); }
  void put_varint(std::uint64_t value);
  void put_zigzag(std::int64_t value);
  void put_tag(TagId source_tag);
  void put_tag_definition(std::string_view name);
  void put_context(const TraceEvent& event);
  void flush_record();

  std::ostream& out_;
  const TagTable* tags_ = nullptr;
  std::vector<TagId> file_tag_;  // source tag id -> file tag id (first-use order), 0 = not yet defined
  TagId file_tags_ = 1;          // file tag ids handed out; 0 is the empty tag
  std::unordered_map<std::string, std::uint32_t> component_ids_;
  std::vector<std::uint32_t> last_definition_;
  detail::BinaryTraceState state_;
  std::string record_;
  std::uint32_t crc_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t events_ = 0;
};

// True when the stream starts with the `.tmt` magic number (peeks; consumes nothing).
bool looks_like_binary_trace(std::istream& in);

}  // namespace tiermark
