#include "replay/flat_trace.h"

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "allocators/bits.h"
#include "common/input_error.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

// Thrown through pump() or a generator when a for_each_chunk callback asks to stop.
struct StopReading {};

using ChunkFunction = std::function<bool(std::span<const ReplayOp>, std::uint64_t)>;

// A sink that flattens events as they arrive, so a generated workload never exists as an event list.
// It keeps ops in out.ops while there are at most `max_ops` of them (then keeps none: the trace will
// be streamed), or, with `chunk` set, hands them to `chunk` a buffer at a time.
class Flattener final : public TraceSink {
 public:
  explicit Flattener(FlatTrace& out, std::uint64_t max_ops = UINT64_MAX, const ChunkFunction* chunk = nullptr,
                     std::size_t chunk_ops = kStreamChunkOps)
      : out_(out), max_ops_(max_ops), chunk_(chunk), chunk_ops_(chunk_ops) {
    if (chunk_ != nullptr) out_.ops.reserve(chunk_ops_);
  }
  bool overflowed() const { return overflowed_; }

  void begin(const TraceMetadata& metadata, const TagTable& tags) override {
    out_.metadata = metadata;
    tags_ = &tags;
  }

  void event(const TraceEvent& e) override {
    switch (e.kind) {
      case EventKind::kAlloc: alloc(e); break;
      case EventKind::kFree: free(e); break;
      case EventKind::kCounter: out_.counters.push_back({out_.events, e.tag, e.size}); break;
      case EventKind::kPhase: break;
    }
  }

  void end() override {
    if (chunk_ != nullptr && !out_.ops.empty()) flush();
    for (TagId tag = 0; tag < tags_->size(); ++tag) out_.tag_names.emplace_back(tags_->name(tag));
    for (const auto& [id, op] : live_) out_.leftovers.push_back(op);
    // Leftovers in slot order, so that every run releases them in the same order.
    std::sort(out_.leftovers.begin(), out_.leftovers.end(),
              [](const ReplayOp& a, const ReplayOp& b) { return a.slot < b.slot; });
    out_.end_live_bytes = requested_;
  }

 private:
  void alloc(const TraceEvent& e) {
    if (e.thread > std::numeric_limits<std::uint16_t>::max()) {
      throw InputError("thread id " + std::to_string(e.thread) + " is above 65535, the most a replay handles");
    }
    std::uint32_t slot;
    if (free_slots_.empty()) {
      if (out_.slots == std::numeric_limits<std::uint32_t>::max()) throw InputError("more than 2^32 live blocks");
      slot = static_cast<std::uint32_t>(out_.slots++);
    } else {
      slot = free_slots_.back();
      free_slots_.pop_back();
    }
    const ReplayOp op{e.size, slot, e.stream, e.tag, static_cast<std::uint16_t>(e.thread),
                      static_cast<std::uint8_t>(log2_floor(e.alignment)), ReplayOpKind::kAlloc};
    live_.emplace(e.id, ReplayOp{op.size, op.slot, op.stream, op.tag, op.thread, op.align_log2, ReplayOpKind::kFree});
    ++out_.allocs;
    out_.threads = std::max<std::size_t>(out_.threads, std::size_t{e.thread} + 1);
    requested_ += e.size;
    if (requested_ > out_.peak_requested_bytes) {
      out_.peak_requested_bytes = requested_;
      out_.peak_op = out_.events;
    }
    keep(op);
  }

  void free(const TraceEvent& e) {
    // pump() validated the trace, so the id is live.
    const auto it = live_.find(e.id);
    ReplayOp op = it->second;
    live_.erase(it);
    // The free runs on the thread the trace gives it (cross-thread frees stay cross-thread).
    op.thread = static_cast<std::uint16_t>(std::min<ThreadId>(e.thread, std::numeric_limits<std::uint16_t>::max()));
    ++out_.frees;
    requested_ -= op.size;
    free_slots_.push_back(op.slot);
    keep(op);
  }

  void keep(const ReplayOp& op) {
    ++out_.events;
    if (overflowed_) return;
    out_.ops.push_back(op);
    if (chunk_ != nullptr) {
      if (out_.ops.size() == chunk_ops_) flush();
    } else if (out_.ops.size() > max_ops_) {
      overflowed_ = true;
      out_.ops.clear();
      out_.ops.shrink_to_fit();
    }
  }

  void flush() {
    const std::uint64_t first = out_.events - out_.ops.size();
    if (!(*chunk_)(out_.ops, first)) throw StopReading{};
    out_.ops.clear();
  }

  FlatTrace& out_;
  std::uint64_t max_ops_;
  const ChunkFunction* chunk_;
  std::size_t chunk_ops_;
  bool overflowed_ = false;
  const TagTable* tags_ = nullptr;
  std::unordered_map<SlotId, ReplayOp> live_;  // id -> the free op it will need
  std::vector<std::uint32_t> free_slots_;
  std::uint64_t requested_ = 0;
};

std::vector<TagBytes> by_tag(const FlatTrace& trace, const std::vector<TagBytes>& per_tag_id, std::size_t limit) {
  std::vector<TagBytes> out;
  for (std::size_t tag = 0; tag < per_tag_id.size(); ++tag) {
    if (per_tag_id[tag].blocks == 0) continue;
    out.push_back(per_tag_id[tag]);
    out.back().tag = trace.tag_names[tag];
  }
  std::sort(out.begin(), out.end(), [](const TagBytes& a, const TagBytes& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.tag < b.tag;
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

}  // namespace

bool FlatTrace::meant_to_end_empty() const { return metadata.get("ends_empty") != "false"; }

TagId FlatTrace::counter_tag(std::string_view counter) const {
  for (std::size_t tag = 1; tag < tag_names.size(); ++tag) {
    if (tag_names[tag] == counter) return static_cast<TagId>(tag);
  }
  return kNoTag;
}

FlatTrace flatten_trace(TraceSource& source) {
  FlatTrace out;
  out.name = source.source_name();
  Flattener flattener(out);
  pump(source, flattener);
  return out;
}

FlatTrace flatten_workload(std::string_view spec) {
  FlatTrace out;
  out.name = std::string(spec);
  Flattener flattener(out);
  generate_workload(spec, flattener);
  return out;
}

FlatTrace flatten_emitted(const TraceEmitter& emit, std::string name, std::uint64_t max_ops_in_memory,
                          std::size_t chunk_ops) {
  FlatTrace out;
  out.name = std::move(name);
  out.chunk_ops = std::max<std::size_t>(chunk_ops, 1);
  Flattener flattener(out, max_ops_in_memory);
  emit(flattener);
  if (flattener.overflowed()) out.emit = emit;
  return out;
}

void for_each_chunk(const FlatTrace& trace, const ChunkFunction& fn) {
  if (!trace.streamed()) {
    fn(trace.ops, 0);
    return;
  }
  FlatTrace scratch;  // the facts found again are dropped; only the ops matter
  Flattener flattener(scratch, UINT64_MAX, &fn, trace.chunk_ops);
  try {
    trace.emit(flattener);
  } catch (const StopReading&) {
  }
}

std::vector<TagBytes> live_by_tag_after(const FlatTrace& trace, std::uint64_t op_index, std::size_t limit) {
  std::vector<TagBytes> per_tag(trace.tag_names.size());
  for_each_chunk(trace, [&](std::span<const ReplayOp> ops, std::uint64_t first) {
    for (std::uint64_t i = 0; i < ops.size() && first + i <= op_index; ++i) {
      const ReplayOp& op = ops[i];
      TagBytes& t = per_tag[op.tag];
      if (op.kind == ReplayOpKind::kAlloc) {
        t.bytes += op.size;
        ++t.blocks;
      } else {
        t.bytes -= op.size;
        --t.blocks;
      }
    }
    return first + ops.size() <= op_index;
  });
  return by_tag(trace, per_tag, limit);
}

std::vector<TagBytes> leftovers_by_tag(const FlatTrace& trace, std::size_t limit) {
  std::vector<TagBytes> per_tag(trace.tag_names.size());
  for (const ReplayOp& op : trace.leftovers) {
    per_tag[op.tag].bytes += op.size;
    ++per_tag[op.tag].blocks;
  }
  return by_tag(trace, per_tag, limit);
}

std::vector<PlannedBuffer> planner_buffers(const FlatTrace& trace) {
  std::vector<PlannedBuffer> buffers;
  buffers.reserve(trace.allocs);
  std::vector<std::size_t> buffer_of_slot(trace.slots);
  for (std::size_t i = 0; i < trace.ops.size(); ++i) {
    const ReplayOp& op = trace.ops[i];
    if (op.kind == ReplayOpKind::kAlloc) {
      buffer_of_slot[op.slot] = buffers.size();
      buffers.push_back({op.size, op.alignment(), i, trace.ops.size()});
    } else {
      buffers[buffer_of_slot[op.slot]].last_use = i;
    }
  }
  // A block never freed keeps last_use = ops.size(): it lives to the end.
  return buffers;
}

}  // namespace tiermark
