#include "capture/spill_converter.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <queue>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <utility>

#include "workloads/tag_table.h"

namespace tiermark::capture {
namespace {

// Records read per chunk at a time: 8 KiB windows keep a merge over hundreds of open chunks small
// while each pread still moves a useful amount.
constexpr std::size_t kWindowRecords = 256;

void read_exactly(int fd, void* out, std::size_t bytes, std::uint64_t offset) {
  auto* p = static_cast<char*>(out);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw std::runtime_error(std::string("cannot read the spill file: ") + (n < 0 ? std::strerror(errno) : "it is shorter than its index"));
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

// Yields the records of all chunks in ascending seq. Chunks are opened in first_seq order only when
// the merge reaches them, and closed when read to the end.
class SpillMerger {
 public:
  SpillMerger(int fd, const std::vector<SpillChunk>& chunks) : fd_(fd), chunks_(chunks) {}

  bool next(CaptureRecord& record) {
    if (current_ == kNone && !select()) return false;
    Cursor& cursor = *cursors_[current_];
    record = cursor.window[cursor.pos++];
    if (!advance(cursor)) {
      free_cursors_.push_back(current_);
      current_ = kNone;
      return true;
    }
    // The current cursor usually stays the smallest (one thread's run of records): no heap work then.
    const std::uint64_t seq = cursor.window[cursor.pos].seq;
    if ((!heap_.empty() && heap_.top().first < seq) || (next_chunk_ < chunks_.size() && chunks_[next_chunk_].first_seq < seq)) {
      heap_.emplace(seq, current_);
      current_ = kNone;
    }
    return true;
  }

 private:
  struct Cursor {
    std::vector<CaptureRecord> window = std::vector<CaptureRecord>(kWindowRecords);
    std::size_t pos = 0;
    std::size_t end = 0;
    std::uint64_t offset = 0;     // next unread byte of the chunk
    std::uint64_t remaining = 0;  // records of the chunk not yet in the window
  };

  // Makes the cursor with the smallest next record current; false when every chunk is read.
  bool select() {
    // A chunk whose first record comes before every open cursor's next record must join the merge.
    while (next_chunk_ < chunks_.size() && (heap_.empty() || chunks_[next_chunk_].first_seq < heap_.top().first)) {
      open(chunks_[next_chunk_++]);
    }
    if (heap_.empty()) return false;
    current_ = heap_.top().second;
    heap_.pop();
    return true;
  }

  // Makes cursor.pos name a record, refilling the window; false when the chunk is exhausted.
  bool advance(Cursor& cursor) {
    if (cursor.pos < cursor.end) return true;
    if (cursor.remaining == 0) return false;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(cursor.remaining, kWindowRecords));
    read_exactly(fd_, cursor.window.data(), n * sizeof(CaptureRecord), cursor.offset);
    cursor.offset += n * sizeof(CaptureRecord);
    cursor.remaining -= n;
    cursor.pos = 0;
    cursor.end = n;
    return true;
  }

  void open(const SpillChunk& chunk) {
    if (chunk.count == 0) return;
    std::size_t index;
    if (free_cursors_.empty()) {
      index = cursors_.size();
      cursors_.push_back(std::make_unique<Cursor>());
    } else {
      index = free_cursors_.back();
      free_cursors_.pop_back();
    }
    Cursor& cursor = *cursors_[index];
    cursor.pos = cursor.end = 0;
    cursor.offset = chunk.offset;
    cursor.remaining = chunk.count;
    advance(cursor);
    heap_.emplace(cursor.window[0].seq, index);
  }

  int fd_;
  const std::vector<SpillChunk>& chunks_;
  static constexpr std::size_t kNone = SIZE_MAX;
  std::size_t next_chunk_ = 0;
  std::size_t current_ = kNone;  // the cursor being read, not in the heap
  std::vector<std::unique_ptr<Cursor>> cursors_;
  std::vector<std::size_t> free_cursors_;
  using Entry = std::pair<std::uint64_t, std::size_t>;  // next seq of a cursor, cursor index
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
};

// Live blocks by address. Open addressing with linear probing, and deletion that shifts the
// following entries back instead of leaving tombstones, so probes stay short however many
// alloc/free pairs go through. With a million live blocks the table is far larger than the caches
// and each lookup is a cache miss, so callers prefetch() the home slot of records a few steps ahead.
// Address 0 marks an empty slot: no allocation returns it.
template <class Value>
class AddressMap {
 public:
  AddressMap() { rehash(1024); }

  void prefetch(std::uint64_t address) const { __builtin_prefetch(&slots_[home(address)]); }

  static constexpr std::size_t kNotFound = SIZE_MAX;

  // The slot holding `address`, or kNotFound. Valid until the next insert or erase.
  std::size_t find(std::uint64_t address) const {
    for (std::size_t i = home(address);; i = (i + 1) & mask_) {
      if (slots_[i].address == address) return i;
      if (slots_[i].address == 0) return kNotFound;
    }
  }
  const Value& value(std::size_t slot) const { return slots_[slot].value; }

  // `address` must not be live.
  void insert(std::uint64_t address, const Value& entry) {
    // At most 70% full: linear probing's expected probe count grows quickly beyond that (Knuth,
    // TAOCP vol. 3, section 6.4).
    if ((size_ + 1) * 10 > slots_.size() * 7) rehash(slots_.size() * 2);
    std::size_t i = home(address);
    while (slots_[i].address != 0) i = (i + 1) & mask_;
    slots_[i].address = address;
    slots_[i].value = entry;
    ++size_;
  }

  // Erases the entry in `slot` (from find).
  void erase(std::size_t slot) {
    std::size_t i = slot;
    for (std::size_t j = (i + 1) & mask_; slots_[j].address != 0; j = (j + 1) & mask_) {
      const std::size_t k = home(slots_[j].address);
      // Entry j may move back to the hole at i unless its home lies cyclically in (i, j].
      const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (stays) continue;
      slots_[i] = slots_[j];
      i = j;
    }
    slots_[i].address = 0;
    --size_;
  }

  std::size_t size() const { return size_; }

 private:
  struct Slot {
    std::uint64_t address = 0;
    [[no_unique_address]] Value value{};
  };

  // Fibonacci hashing (Knuth, TAOCP vol. 3, 6.4) of the address without its low 4 bits, which
  // malloc's 16-byte alignment leaves zero.
  std::size_t home(std::uint64_t address) const { return static_cast<std::size_t>(((address >> 4) * 0x9E3779B97F4A7C15ull) >> shift_); }

  void rehash(std::size_t capacity) {
    std::vector<Slot> old(capacity);
    old.swap(slots_);
    mask_ = capacity - 1;
    shift_ = 64 - std::countr_zero(capacity);
    size_ = 0;
    for (const Slot& slot : old) {
      if (slot.address != 0) insert(slot.address, slot.value);
    }
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  int shift_ = 0;
  std::size_t size_ = 0;
};

// What the writing pass keeps per live block; the counting pass keeps only the address.
struct Block {
  SlotId id;
  std::uint64_t size;
  std::uint8_t alignment_log2;
};
struct NoBlock {};

// The address map and thread numbering, replayed identically by the counting pass (kWrite false:
// no events, an address set eight bytes a slot) and the writing pass.
template <bool kWrite>
class Converter {
 public:
  using Map = AddressMap<std::conditional_t<kWrite, Block, NoBlock>>;

  Converter(TraceSink* sink, TagId first_kind_tag, TagId missed_free_tag)
      : sink_(sink), first_kind_tag_(first_kind_tag), missed_free_tag_(missed_free_tag) {}

  void prefetch(const CaptureRecord& r) const { live_.prefetch(r.address); }

  void apply(const CaptureRecord& r) {
    ++summary_.records;
    if (r.op == CallOp::kAlloc) {
      if (const std::size_t old = live_.find(r.address); old != Map::kNotFound) {
        ++summary_.missed_frees;
        free_block(old, r.thread, missed_free_tag_);
      }
      // malloc(0) returns a distinct block; a trace needs a size of at least 1.
      const std::uint64_t size = std::clamp<std::uint64_t>(r.size, 1, kMaxTraceSize);
      const ThreadId thread = trace_thread(r.thread);
      ++summary_.allocs;
      ++summary_.events;
      if constexpr (kWrite) {
        TraceEvent event;
        event.kind = EventKind::kAlloc;
        event.id = next_id_++;
        event.size = size;
        event.alignment = std::uint64_t{1} << std::min<std::uint64_t>(r.alignment_log2, 30);
        event.thread = thread;
        event.tag = kind_tag(r.kind);
        live_.insert(r.address, Block{event.id, size, r.alignment_log2});
        summary_.live_bytes += size;
        sink_->event(event);
      } else {
        live_.insert(r.address, NoBlock{});
      }
      return;
    }
    if (r.address == 0) {
      ++summary_.null_frees;
      return;
    }
    const std::size_t block = live_.find(r.address);
    if (block == Map::kNotFound) {
      ++summary_.unmatched_frees;
      return;
    }
    free_block(block, r.thread, kind_tag(r.kind));
  }

  ConversionSummary finish() {
    summary_.live_blocks = live_.size();
    summary_.threads = thread_count_;
    return summary_;
  }

 private:
  void free_block(std::size_t slot, std::uint32_t raw_thread, TagId tag) {
    const ThreadId thread = trace_thread(raw_thread);
    ++summary_.frees;
    ++summary_.events;
    if constexpr (kWrite) {
      TraceEvent event;
      const Block& block = live_.value(slot);
      event.kind = EventKind::kFree;
      event.id = block.id;
      // The block's own alignment: a replaying allocator is handed the request as it was allocated.
      event.alignment = std::uint64_t{1} << std::min<std::uint64_t>(block.alignment_log2, 30);
      event.thread = thread;
      event.tag = tag;
      summary_.live_bytes -= block.size;
      sink_->event(event);
    }
    live_.erase(slot);
  }

  // Recorder thread indexes are dense (one atomic counter), so a vector maps them.
  ThreadId trace_thread(std::uint32_t raw) {
    if (raw >= threads_.size()) threads_.resize(std::max<std::size_t>(raw + 1, threads_.size() * 2), kUnseen);
    if (threads_[raw] == kUnseen) threads_[raw] = thread_count_++;
    return threads_[raw];
  }

  TagId kind_tag(CallKind kind) const {
    const auto k = static_cast<TagId>(kind);
    return k < static_cast<TagId>(CallKind::kCount) ? first_kind_tag_ + k : kNoTag;
  }

  static constexpr ThreadId kUnseen = UINT32_MAX;
  TraceSink* sink_;
  TagId first_kind_tag_;
  TagId missed_free_tag_;
  Map live_;
  std::vector<ThreadId> threads_;  // recorder thread index -> trace thread, kUnseen before its first event
  ThreadId thread_count_ = 0;
  SlotId next_id_ = 0;
  ConversionSummary summary_;
};

// Feeds every merged record to `converter`, prefetching the map slot of the record kLookahead
// places ahead so that its cache miss overlaps the work on the records before it.
template <bool kWrite>
ConversionSummary run_pass(int fd, const std::vector<SpillChunk>& chunks, Converter<kWrite> converter) {
  constexpr std::size_t kLookahead = 16;
  SpillMerger merger(fd, chunks);
  CaptureRecord ring[kLookahead];
  std::size_t filled = 0;
  while (filled < kLookahead && merger.next(ring[filled])) converter.prefetch(ring[filled++]);
  for (std::size_t i = 0; i < filled;) {
    const std::size_t slot = i % kLookahead;
    converter.apply(ring[slot]);
    if (merger.next(ring[slot])) {
      converter.prefetch(ring[slot]);
      ++filled;
    }
    ++i;
  }
  return converter.finish();
}

}  // namespace

ConversionSummary convert_spill(int fd, std::vector<SpillChunk> chunks, TraceMetadata metadata, TraceSink& sink) {
  std::sort(chunks.begin(), chunks.end(), [](const SpillChunk& a, const SpillChunk& b) { return a.first_seq < b.first_seq; });
  TagTable tags;
  const TagId first_kind_tag = tags.intern(call_kind_name(CallKind{}));
  for (std::size_t k = 1; k < static_cast<std::size_t>(CallKind::kCount); ++k) tags.intern(call_kind_name(static_cast<CallKind>(k)));
  const TagId missed_free_tag = tags.intern(kMissedFreeTag);

  // The header comes first in the file, so the counts it carries need a pass of their own.
  const ConversionSummary counted = run_pass(fd, chunks, Converter<false>(nullptr, first_kind_tag, missed_free_tag));
  metadata.set("capture.threads", std::to_string(counted.threads));
  metadata.set("capture.records", std::to_string(counted.records));
  metadata.set("capture.unmatched_frees", std::to_string(counted.unmatched_frees));
  metadata.set("capture.null_frees", std::to_string(counted.null_frees));
  metadata.set("capture.missed_frees", std::to_string(counted.missed_frees));
  metadata.set("capture.live_blocks", std::to_string(counted.live_blocks));
  metadata.set("ends_empty", counted.live_blocks == 0 ? "true" : "false");
  sink.begin(metadata, tags);
  const ConversionSummary written = run_pass(fd, chunks, Converter<true>(&sink, first_kind_tag, missed_free_tag));
  sink.end();
  return written;
}

}  // namespace tiermark::capture
