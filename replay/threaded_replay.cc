#include "replay/threaded_replay.h"

#include <limits>

#include "common/input_error.h"

namespace tiermark {

std::vector<ThreadOps> split_by_thread(const FlatTrace& trace, std::size_t threads) {
  std::vector<ThreadOps> streams(threads);
  std::vector<std::uint32_t> turns(trace.slots, 0);
  for (const ReplayOp& op : trace.ops) {
    ThreadOps& s = streams[op.thread % threads];
    s.ops.push_back(op);
    if (turns[op.slot] == std::numeric_limits<std::uint32_t>::max()) throw InputError("more than 2^32 operations on one slot");
    s.turns.push_back(turns[op.slot]++);
  }
  return streams;
}

}  // namespace tiermark
