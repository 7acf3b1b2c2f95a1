// Tests of EagerAutograd, the eager-framework memory model the transformer and cnn generators share:
// small hand-built graphs whose exact allocation and free sequence is known. Backward frees in
// node order (newest first; incoming gradient, then saved tensors), views and saved tensors keep a
// block alive past its variable, a second gradient is summed in place into the first, and .grad
// follows AccumulateGrad (stolen at first, added into and freed after, tagged by the policy).
#include "workloads/eager_autograd.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "workloads/trace_builder.h"
#include "workloads/trace_recorder.h"

namespace tiermark {
namespace {

using Tid = EagerAutograd::TensorId;
using BlockId = EagerAutograd::BlockId;
using Delivery = EagerAutograd::Delivery;

// The trace as "alloc <tag>", "free <tag>" (the tag of the block freed) and "phase <name>"; the
// slot ids of the gradient allocations, in order, to tell two blocks of the same tag apart.
struct Ops {
  std::vector<std::string> lines;
  std::vector<SlotId> freed;
  std::map<std::string, std::vector<SlotId>> allocated;
};

Ops read(const TraceRecorder& recorder) {
  Ops ops;
  std::map<SlotId, std::string> live;
  for (const TraceEvent& e : recorder.events()) {
    const std::string tag(recorder.tag(e));
    if (e.kind == EventKind::kAlloc) {
      live[e.id] = tag;
      ops.allocated[tag].push_back(e.id);
      ops.lines.push_back("alloc " + tag);
    } else if (e.kind == EventKind::kFree) {
      ops.lines.push_back("free " + live.at(e.id));
      ops.freed.push_back(e.id);
      live.erase(e.id);
    } else if (e.kind == EventKind::kPhase) {
      ops.lines.push_back("phase " + tag);
    }
  }
  return ops;
}

// Lines from the phase `name` (exclusive) to the next phase or the end.
std::vector<std::string> in_phase(const Ops& ops, const std::string& name) {
  std::vector<std::string> out;
  bool inside = false;
  for (const std::string& line : ops.lines) {
    if (line.rfind("phase ", 0) == 0) {
      inside = line == "phase " + name;
      continue;
    }
    if (inside) out.push_back(line);
  }
  return out;
}

// A two-operator chain w -> y -> z: each node saves its input; with the variables gone, backward
// frees each saved input as its node finishes, after the gradient the node received.
TEST(EagerAutograd, BackwardRunsNewestFirstAndFreesReceivedGradientThenSaved) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 0);
  e.set_grad(true);
  const Tid w = e.leaf("w", 4, 4, true);
  const Tid x = e.make("x", 8, 4, false);
  const Tid y = e.make("y", 8, 4, e.needs_grad({x, w}));
  e.record({x, w}, {y}, {x}, [&](std::vector<BlockId>&) { return std::vector<Delivery>{e.fresh_grad(w)}; });
  const Tid z = e.make("z", 8, 4, e.needs_grad({y}));
  e.record({y}, {z}, {y}, [&](std::vector<BlockId>&) { return std::vector<Delivery>{e.fresh_grad(y)}; });
  ASSERT_EQ(e.node_count(), 2u);
  builder.phase("drop");
  e.drop(x);  // saved by the first node: stays
  e.drop(y);  // saved by the second node: stays
  builder.phase("backward");
  e.seed(z, e.alloc(32, "z.grad"));
  e.run_backward(0);
  EXPECT_TRUE(e.all_gradients_delivered());
  EXPECT_NE(e.param_grad(0), EagerAutograd::kNoBlock);  // the gradient became .grad
  builder.phase("teardown");
  e.drop(z);
  e.free_param_grad(0);
  e.drop(w);
  builder.finish();

  const Ops ops = read(recorder);
  EXPECT_TRUE(in_phase(ops, "drop").empty());
  const std::vector<std::string> backward = {
      "alloc z.grad",
      "alloc y.grad", "free z.grad", "free y",  // the newest node: its input gradient, then releases
      "alloc w.grad", "free y.grad", "free x",  // w.grad is kept as w's .grad
  };
  EXPECT_EQ(in_phase(ops, "backward"), backward);
  const std::vector<std::string> teardown = {"free z", "free w.grad", "free w"};
  EXPECT_EQ(in_phase(ops, "teardown"), teardown);
}

TEST(EagerAutograd, ViewKeepsItsBaseAlive) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 0);
  const Tid base = e.make("base", 16, 4, false);
  const Tid v = e.view(base, "base.view", 8, false);
  builder.phase("drop base");
  e.drop(base);
  builder.phase("drop view");
  e.drop(v);
  builder.finish();
  const Ops ops = read(recorder);
  EXPECT_TRUE(in_phase(ops, "drop base").empty());
  EXPECT_EQ(in_phase(ops, "drop view"), std::vector<std::string>{"free base"});
}

// An in-place result takes over the variable's holder: the block goes when the new name goes.
TEST(EagerAutograd, InPlaceResultTakesOverTheHolder) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 0);
  const Tid x = e.make("x", 4, 4, false);
  const Tid y = e.rebind(x, "x.relu", false);
  EXPECT_EQ(e.block(x), e.block(y));
  builder.phase("drop");
  e.drop(y);
  builder.finish();
  EXPECT_EQ(in_phase(read(recorder), "drop"), std::vector<std::string>{"free x"});
}

// A tensor saved by a node outlives its variable until that node's backward has run; under
// no_grad nothing is saved and the variable is the last holder.
TEST(EagerAutograd, SavedTensorOutlivesItsVariableUntilBackward) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 0);
  const Tid w = e.leaf("w", 4, 4, true);
  for (const bool grad : {false, true}) {
    e.set_grad(grad);
    const std::string name = grad ? "grad" : "no_grad";
    builder.phase(name + ".forward");
    const Tid a = e.make("a", 4, 4, false);
    const Tid y = e.make("y", 4, 4, e.needs_grad({a, w}));
    e.record({a, w}, {y}, {a}, [&](std::vector<BlockId>&) { return std::vector<Delivery>{e.fresh_grad(w)}; });
    e.drop(a);
    builder.phase(name + ".backward");
    if (grad) {
      e.seed(y, e.alloc(16, "y.grad"));
      e.run_backward(0);
    }
    e.drop(y);
  }
  builder.phase("teardown");
  e.free_param_grad(0);
  e.drop(w);
  builder.finish();
  const Ops ops = read(recorder);
  const std::vector<std::string> no_grad = {"alloc a", "alloc y", "free a"};
  EXPECT_EQ(in_phase(ops, "no_grad.forward"), no_grad);
  const std::vector<std::string> grad_forward = {"alloc a", "alloc y"};
  EXPECT_EQ(in_phase(ops, "grad.forward"), grad_forward);
  const std::vector<std::string> grad_backward = {"alloc y.grad", "alloc w.grad", "free y.grad", "free a", "free y"};
  EXPECT_EQ(in_phase(ops, "grad.backward"), grad_backward);
}

// Two nodes use w; a third hands one gradient block to both of their outputs. The second gradient
// w receives is summed in place into the first (which w's buffer holds alone) and freed; .grad
// is made once every recorded use has delivered.
TEST(EagerAutograd, SecondGradientAccumulatesInPlace) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 0);
  e.set_grad(true);
  const Tid w = e.leaf("w", 4, 4, true);
  const Tid a = e.make("a", 4, 4, false);
  const Tid y1 = e.make("y1", 4, 4, e.needs_grad({a, w}));
  e.record({a, w}, {y1}, {}, [&](std::vector<BlockId>&) { return std::vector<Delivery>{e.fresh_grad(w)}; });
  const Tid y2 = e.make("y2", 4, 4, e.needs_grad({a, w}));
  e.record({a, w}, {y2}, {}, [&](std::vector<BlockId>&) { return std::vector<Delivery>{e.fresh_grad(w)}; });
  const Tid s = e.make("s", 4, 4, e.needs_grad({y1, y2}));
  e.record({y1, y2}, {s}, {}, [&](std::vector<BlockId>& g) {
    return std::vector<Delivery>{e.alias(y1, g[0], 4, 4), e.alias(y2, g[0], 4, 4)};
  });
  builder.phase("backward");
  e.seed(s, e.alloc(16, "s.grad"));
  e.run_backward(0);
  EXPECT_TRUE(e.all_gradients_delivered());
  builder.phase("teardown");
  for (Tid t : {a, y1, y2, s}) e.drop(t);
  e.free_param_grad(0);
  e.drop(w);
  builder.finish();

  const Ops ops = read(recorder);
  // s's node shares its gradient with y1 and y2; y2's node (newer) runs first.
  const std::vector<std::string> backward = {"alloc s.grad", "alloc w.grad", "alloc w.grad", "free s.grad",
                                             "free w.grad"};
  EXPECT_EQ(in_phase(ops, "backward"), backward);
  const std::vector<SlotId>& grads = ops.allocated.at("w.grad");
  ASSERT_EQ(grads.size(), 2u);
  // The block freed in backward is the second gradient; the first one lives on as .grad.
  EXPECT_NE(std::find(ops.freed.begin(), ops.freed.end(), grads[1]), ops.freed.end());
  const std::vector<std::string> teardown = {"free a", "free y1", "free y2", "free s", "free w.grad", "free w"};
  EXPECT_EQ(in_phase(ops, "teardown"), teardown);
}

// With .grad kept from an earlier backward, a fresh weight gradient is added into it and freed,
// tagged with the policy's suffix.
TEST(EagerAutograd, GradientIntoExistingGradIsTaggedByPolicyAndFreed) {
  for (const std::string suffix : {".grad", ".grad.new"}) {
    TraceRecorder recorder;
    TraceBuilder builder(recorder);
    EagerAutograd e(builder, 0, EagerPolicy{suffix});
    e.set_grad(true);
    const Tid w = e.leaf("w", 4, 4, true);
    for (int step = 0; step < 2; ++step) {
      builder.phase("step" + std::to_string(step));
      const Tid y = e.make("y", 4, 4, e.needs_grad({w}));
      e.record({w}, {y}, {}, [&](std::vector<BlockId>&) { return std::vector<Delivery>{e.fresh_grad(w)}; });
      e.seed(y, e.alloc(16, "y.grad"));
      e.run_backward(0);
      e.drop(y);
    }
    builder.phase("teardown");
    e.free_param_grad(0);
    e.drop(w);
    builder.finish();
    const Ops ops = read(recorder);
    const std::vector<std::string> first = {"alloc y", "alloc y.grad", "alloc w.grad", "free y.grad", "free y"};
    EXPECT_EQ(in_phase(ops, "step0"), first) << suffix;
    const std::vector<std::string> second = {"alloc y",       "alloc y.grad", "alloc w" + suffix,
                                             "free y.grad",   "free w" + suffix, "free y"};
    EXPECT_EQ(in_phase(ops, "step1"), second) << suffix;
  }
}

TEST(EagerAutograd, ReleasingADeadBlockThrows) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 0);
  const BlockId b = e.alloc(8, "b");
  e.unref(b);
  EXPECT_THROW(e.unref(b), std::logic_error);
}

// The cuBLAS workspace is taken once, at the first call, and only when it has a size.
TEST(EagerAutograd, CublasWorkspaceIsTakenOnce) {
  TraceRecorder recorder;
  TraceBuilder builder(recorder);
  EagerAutograd e(builder, 1024);
  e.ensure_cublas_workspace();
  e.ensure_cublas_workspace();
  e.free_cublas_workspace();
  builder.finish();
  const std::vector<std::string> expected = {"alloc cublas.workspace", "free cublas.workspace"};
  EXPECT_EQ(read(recorder).lines, expected);
}

}  // namespace
}  // namespace tiermark
