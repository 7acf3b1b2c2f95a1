// The replay loop itself, shared by `tiermark replay` (replay_runner.cc) and bench_replay, so that
// both measure exactly the same code: for each op, allocate into its slot or free the slot's block
// (skipping blocks whose allocation failed), and optionally write into each new block. Templated
// on the concrete allocator, so there is no virtual call, no clock and no bookkeeping in the loop.
#pragma once

#include <cstring>

#include "replay/flat_trace.h"
#include "replay/replay_runner.h"

namespace tiermark {

// Compiler barriers (what Google Benchmark's ClobberMemory and DoNotOptimize do; an input-only
// operand, because GCC 12 miscompiles the "+m,r" form: see benchmarks/bench_allocators.cc).
inline void clobber_memory() { asm volatile("" : : : "memory"); }
inline void keep(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

inline constexpr std::size_t kTouchPage = 4096;

template <Touch kTouch>
inline void touch_block(void* p, std::size_t size) {
  if constexpr (kTouch == Touch::kFirst) {
    auto* bytes = static_cast<volatile unsigned char*>(p);
    for (std::size_t offset = 0; offset < size; offset += kTouchPage) bytes[offset] = 1;
  } else if constexpr (kTouch == Touch::kFull) {
    std::memset(p, 0xA5, size);
    keep(p);  // the block escapes: the stores stay
  }
}

// The replay loop: nothing but the operations (and the asked-for touch).
template <Touch kTouch, class A>
void run_ops(A& allocator, const ReplayOp* op, const ReplayOp* end, void** slots) {
  for (; op != end; ++op) {
    if (op->kind == ReplayOpKind::kAlloc) {
      void* p = allocator.allocate(op->size, op->alignment(), op->stream);
      slots[op->slot] = p;
      if constexpr (kTouch != Touch::kNone) {
        if (p != nullptr) touch_block<kTouch>(p, op->size);
      }
    } else if (void* p = slots[op->slot]; p != nullptr) [[likely]] {
      allocator.deallocate(p, op->size, op->alignment(), op->stream);
    }
  }
}

template <class A>
inline void run_ops(Touch touch, A& allocator, const ReplayOp* begin, const ReplayOp* end, void** slots) {
  switch (touch) {
    case Touch::kNone: run_ops<Touch::kNone>(allocator, begin, end, slots); break;
    case Touch::kFirst: run_ops<Touch::kFirst>(allocator, begin, end, slots); break;
    case Touch::kFull: run_ops<Touch::kFull>(allocator, begin, end, slots); break;
  }
}

template <class A>
inline void release_leftovers(A& allocator, const FlatTrace& trace, void** slots) {
  for (const ReplayOp& op : trace.leftovers) {
    if (slots[op.slot] != nullptr) allocator.deallocate(slots[op.slot], op.size, op.alignment(), op.stream);
  }
}

}  // namespace tiermark
