// EagerAutograd: the memory model of an eager framework with reverse-mode autograd (PyTorch 2.x on
// one device, one stream), shared by the generators that simulate it (transformer, cnn). Each
// generator keeps its own operators and architecture; this is the one home of the rules below.
//
// Concepts:
// - Block: one device allocation with a holder count. Holders are whatever keeps the memory: a
//   Python variable (a tensor handle), a view, a saved tensor of an autograd node, a gradient
//   buffer, a parameter's .grad, optimizer state. The block is freed when its last holder lets go.
// - Tensor: a handle the program sees. It may own a fresh block (make, leaf), share another
//   tensor's block as a view (one more holder) or as the result of an in-place operator (taking
//   over the caller's holder), or have no block at all (an operator past a recompute's early stop).
//   Each tensor has its own gradient buffer (InputBuffer) filled during backward.
// - Parameter: a leaf tensor with a .grad block that survives the step, filled by AccumulateGrad
//   once every recorded node that uses the parameter has handed its gradient over.
// - Node: what autograd records per operator in grad mode: its outputs, the blocks it saved (one
//   holder each) and a backward function that allocates the input gradients and returns them as
//   deliveries. Nodes run newest first (the ready node with the highest sequence number, as the
//   engine does on one device).
//
// Invariants:
// - A block's holder count never goes below zero and reaches zero exactly once, at its free.
// - A node's backward runs, then the gradients it received are released, then its saved blocks,
//   then its deliveries reach their tensors (torch/csrc/autograd/engine.cpp evaluate_function);
//   a second gradient for a tensor is summed in place into whichever of the two nobody else holds
//   (input_buffer.cpp), else into a new block.
// - Nothing here is random or clock-driven: the same calls give the same trace.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "workloads/trace_builder.h"

namespace tiermark {

// The choices on which the simulated frameworks differ in what the trace shows. Each is a policy
// rather than a fork so both generators run the same engine.
struct EagerPolicy {
  // The tag suffix of a parameter's freshly computed gradient when the parameter already has a
  // .grad (it is then added into .grad and freed). The transformer names it like any gradient
  // (".grad"); the cnn generator marks it ".grad.new" so that traces tell the transient apart from
  // the persistent .grad.
  std::string accumulating_grad_suffix = ".grad";
};

class EagerAutograd {
 public:
  using TensorId = std::uint32_t;
  using BlockId = int;
  static constexpr TensorId kNoTensor = std::numeric_limits<TensorId>::max();
  static constexpr BlockId kNoBlock = -1;

  // A gradient handed from a node to the tensor it belongs to: `block` holds `elems` elements of
  // `eb` bytes, possibly more elements than the tensor has (a broadcast input) or another element
  // type (a mixed-dtype operator); the engine reduces and casts it first, as validate_outputs() does.
  struct Delivery {
    TensorId to;
    BlockId block;
    std::uint64_t elems;
    std::uint32_t eb;
  };
  // A backward function receives the blocks of its outputs' gradients (kNoBlock for an output that
  // got none) and may take one over by setting its entry to kNoBlock. It returns its deliveries in
  // the order they reach their tensors.
  using Backward = std::function<std::vector<Delivery>(std::vector<BlockId>& grads)>;

  // `cublas_workspace_bytes`: the cuBLAS workspace ensure_cublas_workspace() takes; 0 for none.
  EagerAutograd(TraceBuilder& builder, std::uint64_t cublas_workspace_bytes, EagerPolicy policy = {});

  // --- Grad mode. Recording makes operators record nodes and save tensors; tracking marks outputs
  // of operators on grad-requiring inputs as requiring grad. torch.no_grad turns both off; a
  // checkpointed forward tracks without recording.
  void set_grad(bool on) { recording_ = tracking_ = on; }
  void set_recording(bool on) { recording_ = on; }
  void set_tracking(bool on) { tracking_ = on; }
  bool recording() const { return recording_; }
  bool tracking() const { return tracking_; }

  // --- Blocks. alloc returns a block with one holder.
  BlockId alloc(std::uint64_t bytes, const std::string& tag);
  void ref(BlockId block) { ++blocks_[static_cast<std::size_t>(block)].holders; }
  void unref(BlockId block);
  bool exclusive(BlockId block) const { return blocks_[static_cast<std::size_t>(block)].holders == 1; }
  // A kernel's scratch: allocated and freed at once (nothing when bytes is 0).
  void scratch(std::uint64_t bytes, const std::string& tag);
  // Allocations made so far; with live_blocks_since, what a phase left alive.
  std::uint64_t allocations() const { return allocations_; }
  std::vector<BlockId> live_blocks_since(std::uint64_t allocation) const;

  // --- Tensors. A tensor from make/leaf/view carries one holder for the caller's variable; drop()
  // is that variable going away (nothing for kNoTensor or an unmaterialised tensor).
  TensorId make(const std::string& tag, std::uint64_t elems, std::uint32_t eb, bool requires_grad,
                bool materialise = true);
  // A leaf: model state made outside autograd. A parameter requires grad and may get a .grad.
  TensorId leaf(const std::string& tag, std::uint64_t elems, std::uint32_t eb, bool parameter);
  // A view of x: the same block, one more holder.
  TensorId view(TensorId x, const std::string& tag, std::uint64_t elems, bool requires_grad);
  // The result of an in-place operator on x (x.relu_(), x += y): the same block under a new tensor
  // (its own gradient buffer), taking over the caller's holder of x; x must not be dropped after.
  TensorId rebind(TensorId x, const std::string& tag, bool requires_grad);
  // Another variable takes a reference to t (a second name for the same tensor).
  void hold(TensorId t) { ref(tensors_[t].block); }
  void drop(TensorId t) {
    if (t != kNoTensor && tensors_[t].block != kNoBlock) unref(tensors_[t].block);
  }
  const std::string& tag(TensorId t) const { return tensors_[t].tag; }
  std::uint64_t elems(TensorId t) const { return tensors_[t].elems; }
  std::uint32_t eb(TensorId t) const { return tensors_[t].eb; }
  BlockId block(TensorId t) const { return tensors_[t].block; }
  // A mark an operator library keeps on a tensor (the transformer's head layout); never read here.
  int layout(TensorId t) const { return tensors_[t].layout; }
  void set_layout(TensorId t, int layout) { tensors_[t].layout = layout; }
  void require_grad(TensorId t) { tensors_[t].requires_grad = true; }
  bool has_grad(TensorId t) const { return t != kNoTensor && tensors_[t].requires_grad; }
  bool tracked_grad(TensorId t) const { return tracking_ && has_grad(t); }
  bool needs_grad(std::initializer_list<TensorId> inputs) const;
  // Forgets every tensor made after the first `keep` (all dead by then); keeps ids small.
  void truncate_tensors(std::size_t keep) { tensors_.resize(keep); }
  std::size_t tensor_count() const { return tensors_.size(); }

  // --- Parameters (indices in leaf() order) and their .grad.
  std::size_t param_count() const { return params_.size(); }
  TensorId param_tensor(std::size_t p) const { return params_[p].tensor; }
  BlockId param_grad(std::size_t p) const { return params_[p].grad; }
  void free_param_grad(std::size_t p);

  // --- The cuBLAS workspace: at::cuda::getCurrentCUDABlasHandle() takes it from the caching
  // allocator the first time a cuBLAS call runs (after that call's output is allocated) and keeps
  // it for the life of the handle.
  void ensure_cublas_workspace();
  void free_cublas_workspace();
  BlockId cublas_workspace() const { return workspace_; }

  // --- Recording. In recording mode and when some output requires grad, appends a node that
  // saves the blocks of `saved` (unmaterialised ones and kNoTensor are skipped) and counts one
  // pending gradient for every grad-requiring parameter among `inputs`.
  void record(std::initializer_list<TensorId> inputs, std::vector<TensorId> outputs, std::vector<TensorId> saved,
              Backward backward);
  std::size_t node_count() const { return nodes_.size(); }

  // --- Helpers for backward functions.
  // A gradient for `of` with `elems` elements of `eb` bytes, tagged `<tag>.grad` (or the policy's
  // suffix for a parameter that has a .grad), or `<tag>.grad.tmp` when its shape or type differs.
  BlockId grad_alloc(TensorId of, std::uint64_t elems, std::uint32_t eb);
  BlockId temp_alloc(TensorId of, std::uint64_t elems, std::uint32_t eb) {
    return alloc(elems * eb, tag(of) + ".grad.tmp");
  }
  // Hands over `block` (the backward's own holder) as the gradient of `to`.
  Delivery give(TensorId to, BlockId block) const { return {to, block, tensors_[to].elems, tensors_[to].eb}; }
  // A fresh gradient of `to`'s shape, handed over.
  Delivery fresh_grad(TensorId to) { return give(to, grad_alloc(to, elems(to), eb(to))); }
  // Hands over a block the backward does not own (the incoming gradient, or a view of it): one
  // more holder.
  Delivery alias(TensorId to, BlockId block, std::uint64_t elems, std::uint32_t eb) {
    ref(block);
    return {to, block, elems, eb};
  }

  // --- Backward. seed() gives the root its gradient (torch.autograd.backward: ones_like(loss),
  // whose holder passes to the engine); run_backward runs the recorded nodes from the newest down
  // to `first`, each popped before it runs.
  void seed(TensorId root, BlockId grad) { tensors_[root].grad = grad; }
  void run_backward(std::size_t first);
  // Moves the gradient accumulated at `from` to `to`, outside any node (a recompute's input).
  std::vector<Delivery> take_grad(TensorId from, TensorId to);
  bool all_gradients_delivered() const;

 private:
  struct Block {
    SlotId slot = 0;
    std::uint32_t holders = 0;
    std::uint64_t serial = 0;  // allocation number
  };
  struct Tensor {
    std::string tag;
    std::uint64_t elems = 0;
    std::uint32_t eb = 0;
    BlockId block = kNoBlock;    // kNoBlock: not materialised
    bool requires_grad = false;
    int layout = 0;
    int param = -1;              // index into params_, -1 for none
    BlockId grad = kNoBlock;     // the gradient accumulated so far in backward
  };
  struct Param {
    TensorId tensor;
    BlockId grad = kNoBlock;  // .grad
    int pending = 0;          // recorded nodes that will still hand it a gradient this backward
  };
  struct Node {
    std::vector<TensorId> outputs;
    std::vector<BlockId> saved;  // one holder each
    Backward backward;
  };

  std::string grad_tag(TensorId t) const;
  void execute(Node& node);
  void deliver(const Delivery& d, std::vector<int>& ready);
  void accumulate_grad(std::size_t p);

  TraceBuilder& builder_;
  std::uint64_t workspace_bytes_;
  EagerPolicy policy_;
  bool recording_ = false, tracking_ = false;
  std::vector<Block> blocks_;
  std::vector<BlockId> free_blocks_;
  std::uint64_t allocations_ = 0;
  std::vector<Tensor> tensors_;
  std::vector<Param> params_;
  std::vector<Node> nodes_;
  bool workspace_done_ = false;
  BlockId workspace_ = kNoBlock;
};

}  // namespace tiermark
