// The `cnn` generator: what an eager framework (PyTorch + cuDNN, one device, one stream) asks its
// allocator for while it trains or serves ResNet-50 or VGG-16 as torchvision lays them out.
//
// Two halves. An Architecture is data: the modules in torchvision's registration order with their
// shapes and the parameter and buffer tensors `model.to(device)` creates, named as
// `model.named_parameters()` names them. A Simulation then walks the modules and plays the
// framework's memory behaviour: Python references keep a tensor alive until the variable holding it
// is rebound (`x = layer(x)`), autograd nodes keep what they saved until their backward has run,
// backward runs nodes in reverse creation order (PyTorch's ready queue pops the highest sequence
// number), gradients meeting at a tensor are summed in place into the first one, weight gradients
// are stolen into `.grad` when none exists and added into it otherwise, and the optimizer keeps
// state tensors that it creates at its first step. docs/workload-cnn.md lists each rule with its
// source. The framework rules (holders, saved tensors, backward order, gradient accumulation) live in
// workloads/eager_autograd.h, shared with the transformer generator; the Simulation holds the CNN
// operators, the training loop and the optimizers.
//
// Invariants: every size is exact (b·C·H·W·p for activations); tags name the torchvision module
// and the tensor (`layer2.1.conv2.out`, `layer2.1.conv2.out.grad`, `layer2.1.conv2.weight`); at
// the end of every step only the tensors the training loop's own variables hold are live (checked,
// a violation is a generator bug); `teardown` frees everything.
#include "workloads/cnn_generator.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "workloads/eager_autograd.h"

namespace tiermark {
namespace {

// ---------------------------------------------------------------------------------------------
// Configuration

enum class Model { kResNet50, kVgg16 };
enum class Optimizer { kSgd, kAdam, kNone };

struct Config {
  Model model = Model::kResNet50;
  std::uint64_t batch = 0;
  std::uint64_t element_bytes = 0;  // p
  bool train = true;
  std::uint64_t steps = 0;
  std::uint64_t image = 0;
  std::uint64_t classes = 0;
  Optimizer optimizer = Optimizer::kSgd;
  double momentum = 0;
  double weight_decay = 0;
  bool foreach = true;
  bool set_to_none = false;
  double dropout = 0;
  bool workspace = true;
  std::uint64_t workspace_limit = 0;
  std::uint64_t cublas_workspace = 0;
};

// fp32 statistics that batch norm saves whatever the model's dtype (cuDNN keeps them in the weight's
// type, fp32; PyTorch's native kernel, used for half weights, in the accumulate type, also fp32).
constexpr std::uint64_t kStatBytes = 4;
// int64: class labels, max-pool indices and `num_batches_tracked` (PyTorch's index and counter type).
constexpr std::uint64_t kIndexBytes = 8;
// torch.bool: the dropout mask of native_dropout.
constexpr std::uint64_t kMaskBytes = 1;
constexpr std::size_t kNone = static_cast<std::size_t>(-1);

// ---------------------------------------------------------------------------------------------
// Architecture: modules and state tensors, as data

struct Shape {  // one sample: channels x height x width
  std::uint64_t c = 0, h = 0, w = 0;
  std::uint64_t elements() const { return c * h * w; }
};

// A parameter or buffer tensor that `model.to(device)` allocates, in `Module._apply` order: children
// depth-first, each module's parameters before its buffers.
struct StateTensor {
  std::string name;  // torchvision's state_dict key
  std::uint64_t elements = 0;
  bool parameter = true;   // false: a buffer (running_mean, running_var, num_batches_tracked)
  bool int64 = false;      // num_batches_tracked keeps its integer type under model.to(dtype)
};

struct Conv {
  std::string name;
  std::uint64_t c_in = 0, c_out = 0, k = 0, stride = 0, pad = 0;
  Shape in, out;
  std::size_t weight = kNone, bias = kNone;  // indices into Architecture::state
};

struct BatchNorm {
  std::string name;
  std::uint64_t channels = 0;
  std::size_t weight = kNone, bias = kNone;
};

struct Linear {
  std::string name;
  std::uint64_t in = 0, out = 0;
  std::size_t weight = kNone, bias = kNone;
};

// torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 conv2).
struct Bottleneck {
  std::string name;  // `layer2.0`
  Conv conv1, conv2, conv3;
  BatchNorm bn1, bn2, bn3;
  bool has_downsample = false;
  Conv down_conv;    // `layer2.0.downsample.0`
  BatchNorm down_bn; // `layer2.0.downsample.1`
};

// One entry of VGG's `features`: a conv followed by its in-place ReLU, or a 2x2 max pool.
struct VggFeature {
  bool pool = false;
  Conv conv;              // when !pool
  std::string relu_name;  // `features.1`
  std::string pool_name;  // `features.4`
  Shape in, out;
};

struct Architecture {
  Model model = Model::kResNet50;
  std::vector<StateTensor> state;
  // ResNet-50
  Conv stem;
  BatchNorm stem_bn;
  Shape pooled;                                 // after the stem's max pool
  std::vector<std::vector<Bottleneck>> stages;  // layer1..layer4
  // VGG-16
  std::vector<VggFeature> features;
  Shape features_out;
  Shape avgpool_out;
  // Both: ResNet's `fc`, or VGG's classifier.0, .3, .6.
  std::vector<Linear> linears;
  std::vector<std::string> dropout_names;  // VGG: classifier.2, classifier.5 (after linears 0 and 1)

  std::uint64_t parameters = 0;
  std::uint64_t convolutions = 0;
  std::uint64_t conv_output_elements = 0;  // per sample, summed over every convolution
};

std::uint64_t conv_side(std::uint64_t side, std::uint64_t k, std::uint64_t stride, std::uint64_t pad) {
  return (side + 2 * pad - k) / stride + 1;  // PyTorch's floor rule (dilation 1)
}

class ArchitectureBuilder {
 public:
  explicit ArchitectureBuilder(Model model) { arch_.model = model; }

  std::size_t tensor(std::string name, std::uint64_t elements, bool parameter, bool int64 = false) {
    arch_.state.push_back({std::move(name), elements, parameter, int64});
    if (parameter) arch_.parameters += elements;
    return arch_.state.size() - 1;
  }

  Conv conv(std::string name, Shape in, std::uint64_t c_out, std::uint64_t k, std::uint64_t stride,
            std::uint64_t pad, bool bias) {
    Conv c;
    c.name = std::move(name);
    c.c_in = in.c;
    c.c_out = c_out;
    c.k = k;
    c.stride = stride;
    c.pad = pad;
    c.in = in;
    c.out = {c_out, conv_side(in.h, k, stride, pad), conv_side(in.w, k, stride, pad)};
    c.weight = tensor(c.name + ".weight", c_out * in.c * k * k, true);
    if (bias) c.bias = tensor(c.name + ".bias", c_out, true);
    ++arch_.convolutions;
    arch_.conv_output_elements += c.out.elements();
    return c;
  }

  BatchNorm batch_norm(std::string name, std::uint64_t channels) {
    BatchNorm bn;
    bn.name = std::move(name);
    bn.channels = channels;
    bn.weight = tensor(bn.name + ".weight", channels, true);
    bn.bias = tensor(bn.name + ".bias", channels, true);
    tensor(bn.name + ".running_mean", channels, false);
    tensor(bn.name + ".running_var", channels, false);
    tensor(bn.name + ".num_batches_tracked", 1, false, true);
    return bn;
  }

  Linear linear(std::string name, std::uint64_t in, std::uint64_t out) {
    Linear l;
    l.name = std::move(name);
    l.in = in;
    l.out = out;
    l.weight = tensor(l.name + ".weight", out * in, true);
    l.bias = tensor(l.name + ".bias", out, true);
    return l;
  }

  Architecture& arch() { return arch_; }
  Architecture take() { return std::move(arch_); }

 private:
  Architecture arch_;
};

// torchvision.models.resnet50: conv1 7x7/2, bn1, relu, maxpool 3x3/2, layer1..4 of 3/4/6/3
// Bottlenecks (width 64<<i, expansion 4, stride 1/2/2/2 on the first block's conv2, downsample on
// each stage's first block), avgpool to 1x1, fc.
Architecture build_resnet50(std::uint64_t image, std::uint64_t classes) {
  ArchitectureBuilder b(Model::kResNet50);
  Architecture& a = b.arch();
  a.stem = b.conv("conv1", {3, image, image}, 64, 7, 2, 3, false);
  a.stem_bn = b.batch_norm("bn1", 64);
  a.pooled = {64, conv_side(a.stem.out.h, 3, 2, 1), conv_side(a.stem.out.w, 3, 2, 1)};
  constexpr std::array<std::uint64_t, 4> kBlocks = {3, 4, 6, 3};
  Shape x = a.pooled;
  for (std::size_t stage = 0; stage < kBlocks.size(); ++stage) {
    const std::uint64_t width = std::uint64_t{64} << stage;
    const std::uint64_t out = width * 4;
    std::vector<Bottleneck>& blocks = a.stages.emplace_back();
    for (std::uint64_t i = 0; i < kBlocks[stage]; ++i) {
      const std::uint64_t stride = (i == 0 && stage > 0) ? 2 : 1;
      Bottleneck k;
      k.name = "layer" + std::to_string(stage + 1) + "." + std::to_string(i);
      k.conv1 = b.conv(k.name + ".conv1", x, width, 1, 1, 0, false);
      k.bn1 = b.batch_norm(k.name + ".bn1", width);
      k.conv2 = b.conv(k.name + ".conv2", k.conv1.out, width, 3, stride, 1, false);
      k.bn2 = b.batch_norm(k.name + ".bn2", width);
      k.conv3 = b.conv(k.name + ".conv3", k.conv2.out, out, 1, 1, 0, false);
      k.bn3 = b.batch_norm(k.name + ".bn3", out);
      if (stride != 1 || x.c != out) {
        k.has_downsample = true;
        k.down_conv = b.conv(k.name + ".downsample.0", x, out, 1, stride, 0, false);
        k.down_bn = b.batch_norm(k.name + ".downsample.1", out);
      }
      x = k.conv3.out;
      blocks.push_back(std::move(k));
    }
  }
  a.features_out = x;
  a.linears.push_back(b.linear("fc", x.c, classes));
  return b.take();
}

// torchvision.models.vgg16 (configuration "D", no batch norm): 13 3x3 convs with bias, each followed
// by an in-place ReLU, five 2x2/2 max pools, AdaptiveAvgPool2d((7, 7)), and the classifier
// Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, classes).
Architecture build_vgg16(std::uint64_t image, std::uint64_t classes) {
  ArchitectureBuilder b(Model::kVgg16);
  Architecture& a = b.arch();
  constexpr std::array<std::uint64_t, 18> kCfgD = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
  Shape x{3, image, image};
  std::uint64_t index = 0;  // position in the `features` Sequential
  for (std::uint64_t v : kCfgD) {
    VggFeature f;
    f.in = x;
    if (v == 0) {
      f.pool = true;
      f.pool_name = "features." + std::to_string(index++);
      f.out = {x.c, x.h / 2, x.w / 2};
    } else {
      f.conv = b.conv("features." + std::to_string(index++), x, v, 3, 1, 1, true);
      f.relu_name = "features." + std::to_string(index++);
      f.out = f.conv.out;
    }
    x = f.out;
    a.features.push_back(std::move(f));
  }
  a.features_out = x;
  a.avgpool_out = {x.c, 7, 7};
  a.linears.push_back(b.linear("classifier.0", a.avgpool_out.elements(), 4096));
  a.linears.push_back(b.linear("classifier.3", 4096, 4096));
  a.linears.push_back(b.linear("classifier.6", 4096, classes));
  a.dropout_names = {"classifier.2", "classifier.5"};
  return b.take();
}

// ---------------------------------------------------------------------------------------------
// Simulation: torchvision's forward() and the training loop, on the shared eager-framework core
// (eager_autograd.h: blocks, tensors, autograd nodes, the backward engine). Here live only the CNN
// operators (what each allocates and saves, what its backward allocates) and the optimizers.

class Simulation {
 public:
  Simulation(const Config& config, const Architecture& arch, TraceBuilder& builder)
      : config_(config),
        arch_(arch),
        builder_(builder),
        // The fresh weight gradient that is added into an existing .grad is tagged `.grad.new`.
        eager_(builder, config.workspace ? config.cublas_workspace : 0, EagerPolicy{".grad.new"}),
        resident_(arch.state.size()) {}

  void run() {
    builder_.phase("init");
    eager_.set_grad(config_.train);  // model.train() with grad mode, or model.eval() under no_grad
    for (std::size_t i = 0; i < arch_.state.size(); ++i) {
      const StateTensor& t = arch_.state[i];
      const auto element_bytes = static_cast<std::uint32_t>(t.int64 ? kIndexBytes : config_.element_bytes);
      state_.push_back(eager_.leaf(t.name, t.elements, element_bytes, t.parameter));
    }
    first_activation_ = eager_.tensor_count();
    for (std::uint64_t step = 0; step < config_.steps; ++step) {
      const std::string prefix = "step" + std::to_string(step);
      if (config_.train) {
        train_step(prefix);
      } else {
        inference_step(prefix);
      }
    }
    teardown();
  }

 private:
  using Tid = EagerAutograd::TensorId;
  using BlockId = EagerAutograd::BlockId;
  using Delivery = EagerAutograd::Delivery;
  static constexpr Tid kNoTensor = EagerAutograd::kNoTensor;
  static constexpr BlockId kNoBlock = EagerAutograd::kNoBlock;

  // Optimizer state of a parameter: blocks that live across steps.
  struct Resident {
    BlockId state1 = kNoBlock;  // SGD momentum_buffer, Adam exp_avg
    BlockId state2 = kNoBlock;  // Adam exp_avg_sq
  };
  // Tensors the training loop's own variables (`image`, `target`, `output`, `loss`) hold from one
  // iteration into the next: each is freed when its variable is rebound in the next iteration.
  struct LoopVariables {
    BlockId image = kNoBlock, target = kNoBlock, output = kNoBlock, loss = kNoBlock;
  };

  // ---- sizes

  std::uint32_t p() const { return static_cast<std::uint32_t>(config_.element_bytes); }
  std::uint64_t activation_elems(const Shape& s) const { return config_.batch * s.elements(); }
  std::uint64_t state_bytes(std::size_t i) const {
    const StateTensor& t = arch_.state[i];
    return t.int64 ? t.elements * kIndexBytes : t.elements * config_.element_bytes;
  }
  // The size model of docs/workload-cnn.md: the im2col buffer of an explicit-GEMM convolution,
  // b·C_in·k²·H_out·W_out·p, none for a 1x1 stride-1 conv (a plain GEMM on its input), capped at
  // workspace_limit. Used for the forward, data-gradient and weight-gradient workspaces alike.
  std::uint64_t conv_workspace(const Conv& c) const {
    if (!config_.workspace || (c.k == 1 && c.stride == 1 && c.pad == 0)) return 0;
    const std::uint64_t bytes = config_.batch * c.c_in * c.k * c.k * c.out.h * c.out.w * config_.element_bytes;
    return std::min(bytes, config_.workspace_limit);
  }
  Tid param(std::size_t state_index) const { return state_index == kNone ? kNoTensor : state_[state_index]; }

  // ---- references

  void release(BlockId& block) {
    if (block != kNoBlock) eager_.unref(block);
    block = kNoBlock;
  }
  // `x = f(x)`: the new tensor exists before the old reference goes.
  Tid replace(Tid old_value, Tid new_value) {
    eager_.drop(old_value);
    return new_value;
  }
  Tid activation(const std::string& tag, std::uint64_t elems, std::initializer_list<Tid> inputs) {
    return eager_.make(tag, elems, p(), eager_.needs_grad(inputs));
  }
  // The backward of most operators here: a fresh gradient for the input (when it needs one), then
  // one per parameter (derivatives.yaml; cuDNN batch norm and addmm return them in this order).
  EagerAutograd::Backward fresh_grads(Tid x, Tid weight = kNoTensor, Tid bias = kNoTensor) {
    return [this, x, weight, bias](std::vector<BlockId>&) {
      std::vector<Delivery> to;
      if (eager_.has_grad(x)) to.push_back(eager_.fresh_grad(x));
      if (weight != kNoTensor) to.push_back(eager_.fresh_grad(weight));
      if (bias != kNoTensor) to.push_back(eager_.fresh_grad(bias));
      return to;
    };
  }

  // ---- forward ops: each allocates what the PyTorch op allocates and saves what its autograd
  // node saves (derivatives.yaml).

  Tid conv(const Conv& c, Tid x) {
    const Tid w = param(c.weight), b = param(c.bias);
    const Tid y = activation(c.name + ".out", activation_elems(c.out), {x, w, b});
    eager_.scratch(conv_workspace(c), c.name + ".workspace");
    // Saves its input, for the weight gradient. Backward (cudnn_convolution_backward): data
    // gradient, then weight gradient, each with its workspace, then the bias gradient.
    eager_.record({x, w, b}, {y}, {x}, [this, &c, x, w, b](std::vector<BlockId>&) {
      std::vector<Delivery> to;
      if (eager_.has_grad(x)) {
        to.push_back(eager_.fresh_grad(x));
        eager_.scratch(conv_workspace(c), c.name + ".workspace.dgrad");
      }
      to.push_back(eager_.fresh_grad(w));
      eager_.scratch(conv_workspace(c), c.name + ".workspace.wgrad");
      if (b != kNoTensor) to.push_back(eager_.fresh_grad(b));
      return to;
    });
    return y;
  }

  // Saves its input and the fp32 batch statistics (save_mean, save_invstd) it computes in training.
  Tid batch_norm(const BatchNorm& bn, Tid x) {
    const Tid w = param(bn.weight), b = param(bn.bias);
    const Tid y = activation(bn.name + ".out", eager_.elems(x), {x, w, b});
    if (eager_.recording()) {
      const Tid mean = eager_.make(bn.name + ".save_mean", bn.channels, kStatBytes, false);
      const Tid invstd = eager_.make(bn.name + ".save_invstd", bn.channels, kStatBytes, false);
      eager_.record({x, w, b}, {y}, {x, mean, invstd}, fresh_grads(x, w, b));
      eager_.drop(mean);
      eager_.drop(invstd);
    }
    return y;
  }

  // In place (torchvision builds every ReLU with inplace=True): no memory; saves its result.
  Tid relu(Tid x, const std::string& tag) {
    const Tid y = eager_.rebind(x, tag, eager_.needs_grad({x}));
    eager_.record({x}, {y}, {y}, fresh_grads(x));
    return y;
  }

  // max_pool2d_with_indices, which CUDA uses even without autograd (the indices are then dropped).
  Tid max_pool(const std::string& name, Tid x, const Shape& out) {
    const Tid y = activation(name + ".out", activation_elems(out), {x});
    const Tid indices = eager_.make(name + ".indices", activation_elems(out), kIndexBytes, false);
    eager_.record({x}, {y}, {x, indices}, fresh_grads(x));
    eager_.drop(indices);
    return y;
  }

  // `out += identity`: in place, saves nothing; AddBackward hands the same gradient to both.
  Tid add(Tid x, Tid other, const std::string& tag) {
    const Tid y = eager_.rebind(x, tag, eager_.needs_grad({x, other}));
    eager_.record({x, other}, {y}, {}, [this, x, other](std::vector<BlockId>& g) {
      std::vector<Delivery> to;
      for (Tid input : {x, other}) {
        if (eager_.has_grad(input)) to.push_back(eager_.alias(input, g[0], eager_.elems(input), eager_.eb(input)));
      }
      return to;
    });
    return y;
  }

  // AdaptiveAvgPool2d((1, 1)) runs as mean over H and W, whose backward needs only the shape.
  Tid mean(Tid x, const std::string& name, std::uint64_t channels) {
    const Tid y = activation(name + ".out", activation_elems({channels, 1, 1}), {x});
    eager_.record({x}, {y}, {}, fresh_grads(x));
    return y;
  }

  Tid adaptive_avg_pool(Tid x, const std::string& name, const Shape& out) {
    const Tid y = activation(name + ".out", activation_elems(out), {x});
    eager_.record({x}, {y}, {x}, fresh_grads(x));
    return y;
  }

  // addmm(bias, x, weight.t()), the first cuBLAS call; saves its input.
  Tid linear(const Linear& l, Tid x) {
    const Tid w = param(l.weight), b = param(l.bias);
    const Tid y = activation(l.name + ".out", activation_elems({l.out, 1, 1}), {x, w, b});
    eager_.ensure_cublas_workspace();
    eager_.record({x, w, b}, {y}, {x}, fresh_grads(x, w, b));
    return y;
  }

  // nn.Dropout: identity in eval mode or at p = 0; else native_dropout's output and bool mask.
  Tid dropout(Tid x, const std::string& name) {
    if (!config_.train || config_.dropout == 0) return x;
    const Tid y = activation(name + ".out", eager_.elems(x), {x});
    const Tid mask = eager_.make(name + ".mask", eager_.elems(x), kMaskBytes, false);
    eager_.record({x}, {y}, {mask}, fresh_grads(x));
    eager_.drop(mask);
    return y;
  }

  // nn.CrossEntropyLoss = nll_loss(log_softmax(x)); nll_loss returns the loss and total_weight.
  Tid cross_entropy(Tid logits, Tid target) {
    const Tid ls = activation("loss.log_softmax.out", eager_.elems(logits), {logits});
    eager_.record({logits}, {ls}, {ls}, fresh_grads(logits));
    const Tid loss = activation("loss.out", 1, {ls});
    const Tid total_weight = eager_.make("loss.total_weight", 1, p(), false);
    eager_.record({ls}, {loss}, {ls, target, total_weight}, fresh_grads(ls));
    eager_.drop(total_weight);
    eager_.drop(ls);  // a C++ temporary inside cross_entropy_loss
    return loss;
  }

  // ---- models: torchvision's forward(), with Python's reference lifetimes

  Tid bottleneck(const Bottleneck& k, Tid x) {
    Tid out = conv(k.conv1, x);
    out = replace(out, batch_norm(k.bn1, out));
    out = relu(out, k.name + ".relu1.out");
    out = replace(out, conv(k.conv2, out));
    out = replace(out, batch_norm(k.bn2, out));
    out = relu(out, k.name + ".relu2.out");
    out = replace(out, conv(k.conv3, out));
    out = replace(out, batch_norm(k.bn3, out));
    Tid identity = kNoTensor;
    if (k.has_downsample) {
      identity = conv(k.down_conv, x);
      identity = replace(identity, batch_norm(k.down_bn, identity));
    }
    out = add(out, identity != kNoTensor ? identity : x, k.name + ".add.out");
    out = relu(out, k.name + ".relu3.out");
    eager_.drop(identity);  // the local `identity` dies on return; add saved nothing
    return out;
  }

  // Runs the model on `images` (which the caller keeps) and returns the logits.
  Tid resnet50_forward(Tid images) {
    Tid x = conv(arch_.stem, images);
    x = replace(x, batch_norm(arch_.stem_bn, x));
    x = relu(x, "relu.out");
    x = replace(x, max_pool("maxpool", x, arch_.pooled));
    for (const std::vector<Bottleneck>& stage : arch_.stages) {
      // `x = self.layerN(x)`: the caller's `x` holds the stage input while the Sequential runs.
      const Tid stage_input = x;
      eager_.hold(stage_input);
      for (const Bottleneck& k : stage) x = replace(x, bottleneck(k, x));
      eager_.drop(stage_input);
    }
    x = replace(x, mean(x, "avgpool", arch_.features_out.c));
    return replace(x, linear(arch_.linears[0], x));  // flatten is a view
  }

  Tid vgg16_forward(Tid images) {
    Tid x = images;
    eager_.hold(x);  // the Sequential's `input` parameter, a second reference to the images
    for (const VggFeature& f : arch_.features) {
      if (f.pool) {
        x = replace(x, max_pool(f.pool_name, x, f.out));
      } else {
        x = replace(x, conv(f.conv, x));
        x = relu(x, f.relu_name + ".out");
      }
    }
    x = replace(x, adaptive_avg_pool(x, "avgpool", arch_.avgpool_out));
    // `x = self.classifier(x)`: VGG.forward's `x` holds the flattened features while it runs.
    const Tid classifier_input = x;
    eager_.hold(classifier_input);
    for (std::size_t i = 0; i < arch_.linears.size(); ++i) {
      x = replace(x, linear(arch_.linears[i], x));
      if (i + 1 < arch_.linears.size()) {
        x = relu(x, "classifier." + std::to_string(3 * i + 1) + ".out");
        const Tid y = dropout(x, arch_.dropout_names[i]);
        if (y != x) x = replace(x, y);
      }
    }
    eager_.drop(classifier_input);
    return x;
  }

  Tid model_forward(Tid images) {
    return arch_.model == Model::kResNet50 ? resnet50_forward(images) : vgg16_forward(images);
  }

  // ---- steps

  // Everything allocated since `mark` must be dead except what `keep` names (and the .grad and
  // cuBLAS workspace the step may have created); the kept tensors' holders move to the loop
  // variables and the step's tensors are forgotten.
  void end_step(std::uint64_t mark, std::initializer_list<std::pair<Tid, BlockId*>> keep) {
    if (eager_.node_count() != 0) throw std::logic_error("cnn generator: an autograd node did not run");
    std::vector<BlockId> allowed{eager_.cublas_workspace()};
    for (std::size_t p = 0; p < eager_.param_count(); ++p) allowed.push_back(eager_.param_grad(p));
    for (const auto& k : keep) allowed.push_back(eager_.block(k.first));
    const std::vector<BlockId> live = eager_.live_blocks_since(mark);
    for (BlockId b : live) {
      if (std::find(allowed.begin(), allowed.end(), b) == allowed.end()) {
        throw std::logic_error("cnn generator: a block of the step is still live at its end");
      }
    }
    for (const auto& [t, variable] : keep) {
      if (std::find(live.begin(), live.end(), eager_.block(t)) == live.end()) {
        throw std::logic_error("cnn generator: " + eager_.tag(t) + " died at the end of a step");
      }
      *variable = eager_.block(t);
    }
    eager_.truncate_tensors(first_activation_);
  }

  Tid input_images() {
    return eager_.make("input.images", activation_elems({3, config_.image, config_.image}), p(), false);
  }

  void inference_step(const std::string& prefix) {
    builder_.phase(prefix + ".forward");
    const std::uint64_t mark = eager_.allocations();
    release(loop_.image);  // `for image in loader`: the old batch goes at rebinding
    const Tid images = input_images();
    const Tid logits = model_forward(images);
    release(loop_.output);  // `output = model(image)`
    end_step(mark, {{images, &loop_.image}, {logits, &loop_.output}});
  }

  void train_step(const std::string& prefix) {
    builder_.phase(prefix + ".forward");
    const std::uint64_t mark = eager_.allocations();
    // torchvision references/classification/train.py: `for image, target in loader`, then
    // `image, target = image.to(device), target.to(device)`, `output = model(image)`,
    // `loss = criterion(output, target)`, `optimizer.zero_grad()`, `loss.backward()`,
    // `optimizer.step()`.
    release(loop_.image);
    release(loop_.target);
    const Tid images = input_images();
    const Tid target = eager_.make("input.labels", config_.batch, kIndexBytes, false);
    const Tid logits = model_forward(images);
    release(loop_.output);
    const Tid loss = cross_entropy(logits, target);
    release(loop_.loss);

    builder_.phase(prefix + ".backward");
    if (config_.set_to_none) {
      for (std::size_t p = 0; p < eager_.param_count(); ++p) eager_.free_param_grad(p);
    }
    // loss.backward(): torch.autograd.backward makes ones_like(loss) and holds it until it returns.
    const BlockId seed = eager_.alloc(config_.element_bytes, "loss.out.grad");
    eager_.ref(seed);
    eager_.seed(loss, seed);
    eager_.run_backward(0);
    if (!eager_.all_gradients_delivered()) throw std::logic_error("cnn generator: a parameter missed its gradient");
    eager_.unref(seed);
    end_step(mark, {{images, &loop_.image}, {target, &loop_.target}, {logits, &loop_.output}, {loss, &loop_.loss}});

    if (config_.optimizer != Optimizer::kNone) {
      builder_.phase(prefix + ".optimizer");
      optimizer_step();
    }
  }

  // ---- optimizers (torch.optim, PyTorch 2.x): foreach on CUDA by default, else a Python loop

  BlockId allocate(const std::string& tag, std::uint64_t bytes) { return eager_.alloc(bytes, tag); }
  void free_reverse(std::vector<BlockId>& blocks) {  // CPython frees a list's items last to first
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) eager_.unref(*it);
    blocks.clear();
  }

  void optimizer_step() {
    std::vector<std::size_t> params;
    for (std::size_t i = 0; i < arch_.state.size(); ++i) {
      if (arch_.state[i].parameter) params.push_back(i);
    }
    const auto name = [this](std::size_t p) -> const std::string& { return arch_.state[p].name; };
    const bool decay = config_.weight_decay != 0;
    if (config_.optimizer == Optimizer::kSgd) {
      const bool momentum = config_.momentum != 0;
      if (config_.foreach) {
        // _multi_tensor_sgd: grads = _foreach_add(grads, params, alpha=wd); at the first step
        // buf = clone(grad) per parameter; `device_grads = bufs` then drops the decayed list.
        std::vector<BlockId> decayed;
        if (decay) {
          for (std::size_t p : params) decayed.push_back(allocate(name(p) + ".grad.decayed", state_bytes(p)));
        }
        if (momentum) {
          for (std::size_t p : params) {
            if (resident_[p].state1 == kNoBlock) resident_[p].state1 = allocate(name(p) + ".momentum_buffer", state_bytes(p));
          }
        }
        free_reverse(decayed);
      } else {
        // _single_tensor_sgd: d_p = grad.add(param, alpha=wd); buf = clone(d_p) at the first step;
        // d_p = buf. Without momentum the decayed d_p lives until the next iteration rebinds it.
        BlockId d_p = kNoBlock;
        for (std::size_t p : params) {
          release(d_p);
          if (decay) d_p = allocate(name(p) + ".grad.decayed", state_bytes(p));
          if (momentum) {
            if (resident_[p].state1 == kNoBlock) resident_[p].state1 = allocate(name(p) + ".momentum_buffer", state_bytes(p));
            release(d_p);
          }
        }
        release(d_p);
      }
      return;
    }
    // Adam: _init_group creates exp_avg and exp_avg_sq (zeros_like) at the first step; the step
    // counter is a CPU tensor unless capturable or fused.
    for (std::size_t p : params) {
      if (resident_[p].state1 == kNoBlock) {
        resident_[p].state1 = allocate(name(p) + ".exp_avg", state_bytes(p));
        resident_[p].state2 = allocate(name(p) + ".exp_avg_sq", state_bytes(p));
      }
    }
    if (config_.foreach) {
      // _multi_tensor_adam: decayed grads, deleted after the moment updates; then
      // exp_avg_sq_sqrt = _foreach_sqrt(exp_avg_sqs), updated in place, freed on return.
      std::vector<BlockId> temp;
      if (decay) {
        for (std::size_t p : params) temp.push_back(allocate(name(p) + ".grad.decayed", state_bytes(p)));
      }
      free_reverse(temp);
      for (std::size_t p : params) temp.push_back(allocate(name(p) + ".exp_avg_sq.sqrt", state_bytes(p)));
      free_reverse(temp);
    } else {
      // _single_tensor_adam: grad = grad.add(param, alpha=wd);
      // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps). `grad` and `denom` are
      // rebound (and their old tensors freed) in the next iteration; the sqrt temporary dies at once.
      BlockId grad = kNoBlock, denom = kNoBlock;
      for (std::size_t p : params) {
        release(grad);
        if (decay) grad = allocate(name(p) + ".grad.decayed", state_bytes(p));
        const BlockId root = allocate(name(p) + ".exp_avg_sq.sqrt", state_bytes(p));
        const BlockId next_denom = allocate(name(p) + ".denom", state_bytes(p));
        eager_.unref(root);
        release(denom);
        denom = next_denom;
      }
      release(grad);
      release(denom);
    }
  }

  void teardown() {
    builder_.phase("teardown");
    release(loop_.image);
    release(loop_.target);
    release(loop_.output);
    release(loop_.loss);
    for (Resident& r : resident_) {
      release(r.state1);
      release(r.state2);
    }
    for (std::size_t p = 0; p < eager_.param_count(); ++p) eager_.free_param_grad(p);
    for (Tid t : state_) eager_.drop(t);
    eager_.free_cublas_workspace();
  }

  const Config& config_;
  const Architecture& arch_;
  TraceBuilder& builder_;
  EagerAutograd eager_;
  std::vector<Tid> state_;  // the parameters and buffers, in Architecture::state order
  std::vector<Resident> resident_;
  LoopVariables loop_;
  std::size_t first_activation_ = 0;  // tensors below this index live across steps
};

// ---------------------------------------------------------------------------------------------
// Options and presets

const std::vector<OptionSpec>& cnn_options() {
  static const std::vector<OptionSpec> kOptions = {
      {"model", OptionType::kChoice, "resnet50", "network, in torchvision's layout: resnet50 (Bottleneck 3/4/6/3, v1.5) or vgg16 (configuration D, no batch norm)", {"resnet50", "vgg16"}},
      {"batch", OptionType::kCount, "32", "images per step (b), 1 to 65536"},
      {"dtype", OptionType::kChoice, "fp32", "element type of weights, activations, gradients and optimizer state (model.to(dtype)); batch-norm statistics stay fp32", {"fp32", "fp16", "bf16"}},
      {"mode", OptionType::kChoice, "train", "train: forward, backward and optimizer step per batch; inference: model.eval() forward under no_grad", {"train", "inference"}},
      {"steps", OptionType::kCount, "3", "batches to run (training steps or inference batches), 1 to 100000; step 0 differs (lazy optimizer state, first .grad)"},
      {"image", OptionType::kCount, "224", "input side in pixels (square images, 3 channels), 32 to 4096"},
      {"classes", OptionType::kCount, "1000", "output classes of the last linear layer (ImageNet: 1000)"},
      {"optimizer", OptionType::kChoice, "sgd", "torch.optim.SGD, torch.optim.Adam, or none (no optimizer phase)", {"sgd", "adam", "none"}},
      {"momentum", OptionType::kNumber, "0.9", "SGD momentum; 0 creates no momentum buffers (torchvision classification recipe: 0.9)"},
      {"weight_decay", OptionType::kNumber, "0.0001", "weight decay; non-zero makes the optimizer copy every gradient each step (torchvision classification recipe: 1e-4)"},
      {"foreach", OptionType::kBool, "true", "multi-tensor (_foreach) optimizer, PyTorch 2.x's default on CUDA; false: the per-parameter Python loop"},
      {"set_to_none", OptionType::kBool, "false", "optimizer.zero_grad(set_to_none): true frees every .grad before backward (PyTorch 2.x default); false keeps and zeroes them"},
      {"dropout", OptionType::kNumber, "0.5", "VGG classifier dropout probability, below 1; 0 allocates no dropout output or mask (torchvision default 0.5)"},
      {"workspace", OptionType::kChoice, "model", "cuDNN convolution workspaces (im2col size model, docs/workload-cnn.md) and the cuBLAS workspace: model, or none", {"model", "none"}},
      {"workspace_limit", OptionType::kSize, "4GiB", "cap on one convolution workspace (TensorFlow's default cap: 4 GiB)"},
      {"cublas_workspace", OptionType::kSize, "8519680", "cuBLAS workspace taken at the first linear layer and kept (8,519,680 B before Hopper, 32MiB on Hopper); 0: none"},
  };
  return kOptions;
}

constexpr std::array<WorkloadPreset, 2> kPresets = {{
    {"resnet50", "torchvision ResNet-50 on 224x224 ImageNet, SGD with momentum (25,557,032 parameters)", "model=resnet50"},
    {"vgg16", "torchvision VGG-16 on 224x224 ImageNet, SGD with momentum (138,357,544 parameters)", "model=vgg16"},
}};

Config read_config(const Options& options) {
  Config c;
  c.model = options.choice("model") == "vgg16" ? Model::kVgg16 : Model::kResNet50;
  c.batch = options.count("batch");
  if (c.batch < 1 || c.batch > 65536) options.reject("batch", "must be 1 to 65536");
  const std::string& dtype = options.choice("dtype");
  c.element_bytes = dtype == "fp32" ? 4 : 2;
  c.train = options.choice("mode") == "train";
  c.steps = options.count("steps");
  if (c.steps < 1 || c.steps > 100000) options.reject("steps", "must be 1 to 100000");
  c.image = options.count("image");
  // VGG's five 2x2 poolings leave nothing of a smaller image; the upper bound keeps every size and
  // the live total far inside 64 bits.
  if (c.image < 32 || c.image > 4096) options.reject("image", "must be 32 to 4096 pixels");
  c.classes = options.count("classes");
  if (c.classes < 1 || c.classes > 1000000) options.reject("classes", "must be 1 to 1000000");
  const std::string& optimizer = options.choice("optimizer");
  c.optimizer = optimizer == "sgd" ? Optimizer::kSgd : optimizer == "adam" ? Optimizer::kAdam : Optimizer::kNone;
  c.momentum = options.number("momentum");
  c.weight_decay = options.number("weight_decay");
  c.foreach = options.flag("foreach");
  c.set_to_none = options.flag("set_to_none");
  c.dropout = options.number("dropout");
  if (c.dropout >= 1) options.reject("dropout", "must be below 1");
  c.workspace = options.choice("workspace") == "model";
  c.workspace_limit = options.size("workspace_limit");
  c.cublas_workspace = options.size("cublas_workspace");
  return c;
}

void generate_cnn(const Options& options, TraceBuilder& builder) {
  const Config config = read_config(options);
  const Architecture arch = config.model == Model::kResNet50 ? build_resnet50(config.image, config.classes)
                                                              : build_vgg16(config.image, config.classes);
  std::uint64_t parameter_bytes = 0, buffer_bytes = 0;
  for (std::size_t i = 0; i < arch.state.size(); ++i) {
    const StateTensor& t = arch.state[i];
    (t.parameter ? parameter_bytes : buffer_bytes) += t.int64 ? t.elements * kIndexBytes : t.elements * config.element_bytes;
  }
  builder.set_metadata("model.name", options.choice("model"));
  builder.set_metadata("model.parameters", std::to_string(arch.parameters));
  builder.set_metadata("model.parameter_bytes", std::to_string(parameter_bytes));
  builder.set_metadata("model.buffer_bytes", std::to_string(buffer_bytes));
  builder.set_metadata("model.convolutions", std::to_string(arch.convolutions));
  builder.set_metadata("model.conv_output_bytes_per_sample", std::to_string(arch.conv_output_elements * config.element_bytes));
  Simulation(config, arch, builder).run();
}

}  // namespace

const GeneratorInfo& cnn_generator() {
  static const GeneratorInfo kInfo = {
      "cnn",
      "device allocations of PyTorch + cuDNN training or serving a torchvision CNN (ResNet-50, VGG-16)",
      cnn_options(),
      kPresets,
      generate_cnn,
  };
  return kInfo;
}

}  // namespace tiermark
