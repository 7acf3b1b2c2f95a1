// EagerAutograd: blocks with holder counts, tensors and views over them, autograd nodes with saved
// blocks, and the backward engine (evaluate_function, InputBuffer::add, AccumulateGrad) as
// torch/csrc/autograd does them on one device. The header lists the concepts and invariants.
#include "workloads/eager_autograd.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace tiermark {

EagerAutograd::EagerAutograd(TraceBuilder& builder, std::uint64_t cublas_workspace_bytes, EagerPolicy policy)
    : builder_(builder), workspace_bytes_(cublas_workspace_bytes), policy_(std::move(policy)) {}

// ---------------------------------------------------------------------------------------------
// Blocks

EagerAutograd::BlockId EagerAutograd::alloc(std::uint64_t bytes, const std::string& tag) {
  const SlotId slot = builder_.allocate(bytes, builder_.tag(tag));
  const Block block{slot, 1, allocations_++};
  // Freed ids are reused so that the table stays as small as the live set.
  if (free_blocks_.empty()) {
    blocks_.push_back(block);
    return static_cast<BlockId>(blocks_.size() - 1);
  }
  const BlockId id = free_blocks_.back();
  free_blocks_.pop_back();
  blocks_[static_cast<std::size_t>(id)] = block;
  return id;
}

void EagerAutograd::unref(BlockId block) {
  Block& b = blocks_[static_cast<std::size_t>(block)];
  if (b.holders == 0) throw std::logic_error("eager autograd: a block was released twice");
  if (--b.holders == 0) {
    builder_.deallocate(b.slot);
    free_blocks_.push_back(block);
  }
}

void EagerAutograd::scratch(std::uint64_t bytes, const std::string& tag) {
  if (bytes != 0) unref(alloc(bytes, tag));
}

std::vector<EagerAutograd::BlockId> EagerAutograd::live_blocks_since(std::uint64_t allocation) const {
  std::vector<BlockId> live;
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    if (blocks_[i].holders > 0 && blocks_[i].serial >= allocation) live.push_back(static_cast<BlockId>(i));
  }
  return live;
}

// ---------------------------------------------------------------------------------------------
// Tensors and parameters

EagerAutograd::TensorId EagerAutograd::make(const std::string& tag, std::uint64_t elems, std::uint32_t eb,
                                            bool requires_grad, bool materialise) {
  Tensor t;
  t.tag = tag;
  t.elems = elems;
  t.eb = eb;
  t.requires_grad = requires_grad;
  if (materialise) t.block = alloc(elems * eb, tag);
  tensors_.push_back(std::move(t));
  return static_cast<TensorId>(tensors_.size() - 1);
}

EagerAutograd::TensorId EagerAutograd::leaf(const std::string& tag, std::uint64_t elems, std::uint32_t eb,
                                            bool parameter) {
  const TensorId t = make(tag, elems, eb, parameter, true);
  if (parameter) {
    tensors_[t].param = static_cast<int>(params_.size());
    params_.push_back({t});
  }
  return t;
}

EagerAutograd::TensorId EagerAutograd::view(TensorId x, const std::string& tag, std::uint64_t elems,
                                            bool requires_grad) {
  Tensor t;
  t.tag = tag;
  t.elems = elems;
  t.eb = tensors_[x].eb;
  t.requires_grad = requires_grad;
  t.block = tensors_[x].block;
  if (t.block != kNoBlock) ref(t.block);
  tensors_.push_back(std::move(t));
  return static_cast<TensorId>(tensors_.size() - 1);
}

EagerAutograd::TensorId EagerAutograd::rebind(TensorId x, const std::string& tag, bool requires_grad) {
  Tensor t;
  t.tag = tag;
  t.elems = tensors_[x].elems;
  t.eb = tensors_[x].eb;
  t.requires_grad = requires_grad;
  t.block = tensors_[x].block;  // the caller's holder moves over: no ref
  tensors_.push_back(std::move(t));
  return static_cast<TensorId>(tensors_.size() - 1);
}

bool EagerAutograd::needs_grad(std::initializer_list<TensorId> inputs) const {
  return tracking_ && std::any_of(inputs.begin(), inputs.end(), [this](TensorId t) { return has_grad(t); });
}

void EagerAutograd::free_param_grad(std::size_t p) {
  if (params_[p].grad != kNoBlock) unref(params_[p].grad);
  params_[p].grad = kNoBlock;
}

void EagerAutograd::ensure_cublas_workspace() {
  if (workspace_done_) return;
  workspace_done_ = true;
  if (workspace_bytes_ > 0) workspace_ = alloc(workspace_bytes_, "cublas.workspace");
}

void EagerAutograd::free_cublas_workspace() {
  if (workspace_ != kNoBlock) unref(workspace_);
  workspace_ = kNoBlock;
}

// ---------------------------------------------------------------------------------------------
// Autograd

void EagerAutograd::record(std::initializer_list<TensorId> inputs, std::vector<TensorId> outputs,
                           std::vector<TensorId> saved, Backward backward) {
  if (!recording_) return;
  if (std::none_of(outputs.begin(), outputs.end(), [this](TensorId t) { return has_grad(t); })) return;
  Node node;
  node.outputs = std::move(outputs);
  for (TensorId t : saved) {
    if (t == kNoTensor || tensors_[t].block == kNoBlock) continue;
    ref(tensors_[t].block);
    node.saved.push_back(tensors_[t].block);
  }
  for (TensorId t : inputs) {
    if (has_grad(t) && tensors_[t].param != -1) ++params_[static_cast<std::size_t>(tensors_[t].param)].pending;
  }
  node.backward = std::move(backward);
  nodes_.push_back(std::move(node));
}

std::string EagerAutograd::grad_tag(TensorId t) const {
  const int p = tensors_[t].param;
  const bool accumulating = p != -1 && params_[static_cast<std::size_t>(p)].grad != kNoBlock;
  return tensors_[t].tag + (accumulating ? policy_.accumulating_grad_suffix : std::string(".grad"));
}

EagerAutograd::BlockId EagerAutograd::grad_alloc(TensorId of, std::uint64_t elems, std::uint32_t eb) {
  const Tensor& t = tensors_[of];
  if (elems == t.elems && eb == t.eb) return alloc(elems * eb, grad_tag(of));
  return alloc(elems * eb, t.tag + ".grad.tmp");
}

void EagerAutograd::run_backward(std::size_t first) {
  while (nodes_.size() > first) {
    Node node = std::move(nodes_.back());
    nodes_.pop_back();
    execute(node);
  }
}

std::vector<EagerAutograd::Delivery> EagerAutograd::take_grad(TensorId from, TensorId to) {
  const BlockId g = tensors_[from].grad;
  tensors_[from].grad = kNoBlock;
  if (g == kNoBlock) return {};
  return {give(to, g)};
}

bool EagerAutograd::all_gradients_delivered() const {
  return std::all_of(params_.begin(), params_.end(), [](const Param& p) { return p.pending == 0; });
}

// One node, as Engine::evaluate_function runs it.
void EagerAutograd::execute(Node& node) {
  std::vector<BlockId> grads;
  bool any = false;
  for (TensorId out : node.outputs) {
    grads.push_back(tensors_[out].grad);
    any = any || tensors_[out].grad != kNoBlock;
    tensors_[out].grad = kNoBlock;
  }
  std::vector<Delivery> deliveries;
  if (any) deliveries = node.backward(grads);
  // validate_outputs: sum a broadcast gradient down to the input's shape, then cast it to the
  // input's dtype.
  for (Delivery& d : deliveries) {
    const std::uint64_t n = tensors_[d.to].elems;
    const std::uint32_t e = tensors_[d.to].eb;
    if (d.elems != n) {
      const BlockId reduced = alloc(n * d.eb, grad_tag(d.to));
      unref(d.block);
      d = {d.to, reduced, n, d.eb};
    }
    if (d.eb != e) {
      const BlockId converted = alloc(n * e, grad_tag(d.to));
      unref(d.block);
      d = {d.to, converted, n, e};
    }
  }
  // The gradients this node received, then its saved tensors, are released before its outputs
  // reach the nodes before it.
  for (BlockId g : grads) {
    if (g != kNoBlock) unref(g);
  }
  for (BlockId block : node.saved) unref(block);
  std::vector<int> ready;
  for (const Delivery& d : deliveries) deliver(d, ready);
  for (int p : ready) accumulate_grad(static_cast<std::size_t>(p));
}

// InputBuffer::add: the first gradient is kept; a later one is summed in place into whichever of
// the two this buffer holds alone, else into a new block.
void EagerAutograd::deliver(const Delivery& d, std::vector<int>& ready) {
  Tensor& t = tensors_[d.to];
  if (!t.requires_grad) {
    unref(d.block);
    return;
  }
  if (t.grad == kNoBlock) {
    t.grad = d.block;
  } else if (exclusive(t.grad)) {
    unref(d.block);
  } else if (exclusive(d.block)) {
    unref(t.grad);
    tensors_[d.to].grad = d.block;
  } else {
    const BlockId sum = alloc(t.elems * t.eb, grad_tag(d.to));
    unref(tensors_[d.to].grad);
    unref(d.block);
    tensors_[d.to].grad = sum;
  }
  const int p = tensors_[d.to].param;
  if (p != -1 && --params_[static_cast<std::size_t>(p)].pending == 0) ready.push_back(p);
}

// AccumulateGrad: the first gradient of a step becomes .grad (stolen when nothing else holds it,
// else cloned); with .grad already there (gradients kept across steps) it is added in place and
// the new one freed.
void EagerAutograd::accumulate_grad(std::size_t p) {
  Tensor& t = tensors_[params_[p].tensor];
  const BlockId g = t.grad;
  t.grad = kNoBlock;
  if (params_[p].grad != kNoBlock) {
    unref(g);
  } else if (exclusive(g)) {
    params_[p].grad = g;
  } else {
    params_[p].grad = alloc(t.elems * t.eb, t.tag + ".grad");
    unref(g);
  }
}

}  // namespace tiermark
