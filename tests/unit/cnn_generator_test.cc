// Tests of the `cnn` generator: hand-computed event lists for one ResNet bottleneck (forward,
// backward, inference), the published model figures (ResNet-50's 53 convolutions, 25,557,032
// parameters and 42.4 MiB of conv outputs per sample; VGG-16's 138,357,544 parameters), lazy
// optimizer state, gradient lifetimes, workspaces, determinism and option checking.
#include "workloads/cnn_generator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/input_error.h"
#include "workloads/trace_recorder.h"

namespace tiermark {
namespace {

// An event as the tests read it: a free carries the size and tag of the block it frees.
struct Op {
  Op(std::string kind_, std::uint64_t size_, std::string tag_, std::string phase_ = "")
      : kind(std::move(kind_)), size(size_), tag(std::move(tag_)), phase(std::move(phase_)) {}
  std::string kind;  // alloc, free, phase, counter
  std::uint64_t size = 0;
  std::string tag;
  std::string phase;  // the phase it happened in (not compared)
  bool operator==(const Op& o) const { return kind == o.kind && size == o.size && tag == o.tag; }
};

[[maybe_unused]] void PrintTo(const Op& op, std::ostream* os) { *os << op.kind << " " << op.size << " " << op.tag; }

struct Trace {
  TraceRecorder recorder;
  std::vector<Op> ops;
};

Trace generate(const std::string& spec) {
  Trace t;
  generate_workload(spec, t.recorder);
  std::map<SlotId, std::pair<std::uint64_t, std::string>> live;
  std::string phase;
  for (const TraceEvent& e : t.recorder.events()) {
    const std::string tag(t.recorder.tag(e));
    switch (e.kind) {
      case EventKind::kAlloc:
        live[e.id] = {e.size, tag};
        t.ops.push_back({"alloc", e.size, tag, phase});
        break;
      case EventKind::kFree: {
        const auto it = live.find(e.id);
        t.ops.push_back({"free", it->second.first, it->second.second, phase});
        live.erase(it);
        break;
      }
      case EventKind::kPhase:
        phase = tag;
        t.ops.push_back({"phase", 0, tag, phase});
        break;
      case EventKind::kCounter:
        t.ops.push_back({"counter", e.size, tag, phase});
        break;
    }
  }
  return t;
}

std::size_t find_alloc(const std::vector<Op>& ops, const std::string& tag, const std::string& phase, std::size_t from = 0) {
  for (std::size_t i = from; i < ops.size(); ++i) {
    if (ops[i].kind == "alloc" && ops[i].tag == tag && ops[i].phase == phase) return i;
  }
  ADD_FAILURE() << "no alloc of " << tag << " in " << phase;
  return ops.size();
}

std::vector<Op> window(const std::vector<Op>& ops, std::size_t begin, std::size_t end) {
  return {ops.begin() + static_cast<std::ptrdiff_t>(begin), ops.begin() + static_cast<std::ptrdiff_t>(end)};
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string metadata(const Trace& t, const std::string& key) { return t.recorder.metadata().get(key).value_or("(unset)"); }

// The bottleneck layer2.0 of ResNet-50 at 224x224: input 256x56x56, width 128, output 512x28x28,
// stride 2 on conv2 and on the downsample 1x1 conv. Batch 2, fp32.
constexpr std::uint64_t kB = 2, kP = 4;
constexpr std::uint64_t act(std::uint64_t c, std::uint64_t side) { return kB * c * side * side * kP; }
constexpr std::uint64_t stat(std::uint64_t c) { return c * 4; }  // fp32 save_mean / save_invstd
// im2col workspace b·C_in·k²·H_out·W_out·p.
constexpr std::uint64_t ws(std::uint64_t c_in, std::uint64_t k, std::uint64_t side_out) { return kB * c_in * k * k * side_out * side_out * kP; }

TEST(CnnGenerator, BottleneckForwardMatchesHandComputedList) {
  const Trace t = generate("cnn/resnet50:batch=2,steps=1");
  const std::size_t begin = find_alloc(t.ops, "layer2.0.conv1.out", "step0.forward");
  const std::size_t end = find_alloc(t.ops, "layer2.1.conv1.out", "step0.forward");
  const std::string n = "layer2.0.";
  const std::vector<Op> expected = {
      {"alloc", act(128, 56), n + "conv1.out"},  // 1x1 stride 1: no workspace
      {"alloc", act(128, 56), n + "bn1.out"},
      {"alloc", stat(128), n + "bn1.save_mean"},
      {"alloc", stat(128), n + "bn1.save_invstd"},
      // relu in place; conv1.out stays (bn1 saved it)
      {"alloc", act(128, 28), n + "conv2.out"},
      {"alloc", ws(128, 3, 28), n + "conv2.workspace"},
      {"free", ws(128, 3, 28), n + "conv2.workspace"},
      {"alloc", act(128, 28), n + "bn2.out"},
      {"alloc", stat(128), n + "bn2.save_mean"},
      {"alloc", stat(128), n + "bn2.save_invstd"},
      {"alloc", act(512, 28), n + "conv3.out"},
      {"alloc", act(512, 28), n + "bn3.out"},
      {"alloc", stat(512), n + "bn3.save_mean"},
      {"alloc", stat(512), n + "bn3.save_invstd"},
      {"alloc", act(512, 28), n + "downsample.0.out"},
      {"alloc", ws(256, 1, 28), n + "downsample.0.workspace"},  // strided 1x1: gathers its input
      {"free", ws(256, 1, 28), n + "downsample.0.workspace"},
      {"alloc", act(512, 28), n + "downsample.1.out"},
      {"alloc", stat(512), n + "downsample.1.save_mean"},
      {"alloc", stat(512), n + "downsample.1.save_invstd"},
      // out += identity saves nothing: the identity dies when the block returns
      {"free", act(512, 28), n + "downsample.1.out"},
  };
  EXPECT_EQ(window(t.ops, begin, end), expected);
}

TEST(CnnGenerator, BottleneckBackwardMatchesHandComputedList) {
  const Trace t = generate("cnn/resnet50:batch=2,steps=1");
  // From the ReLU after the residual add down to the same point of the block before.
  const std::size_t begin = find_alloc(t.ops, "layer2.0.add.out.grad", "step0.backward");
  const std::size_t end = find_alloc(t.ops, "layer1.2.add.out.grad", "step0.backward");
  const std::string n = "layer2.0.";
  const std::string x = "layer1.2.relu3.out.grad";  // gradient of the block input
  const std::vector<Op> expected = {
      // relu (after add): new gradient; the incoming one (layer2.1's) and the saved result go
      {"alloc", act(512, 28), n + "add.out.grad"},
      {"free", act(512, 28), "layer2.1.add.out.grad"},
      {"free", act(512, 28), n + "bn3.out"},
      // add passes the same gradient to downsample.1 and bn3; downsample runs first (created later)
      {"alloc", act(512, 28), n + "downsample.0.out.grad"},
      {"alloc", stat(512), n + "downsample.1.weight.grad"},
      {"alloc", stat(512), n + "downsample.1.bias.grad"},
      {"free", act(512, 28), n + "downsample.0.out"},
      {"free", stat(512), n + "downsample.1.save_mean"},
      {"free", stat(512), n + "downsample.1.save_invstd"},
      {"alloc", act(256, 56), x},
      {"alloc", ws(256, 1, 28), n + "downsample.0.workspace.dgrad"},
      {"free", ws(256, 1, 28), n + "downsample.0.workspace.dgrad"},
      {"alloc", 512 * 256 * kP, n + "downsample.0.weight.grad"},
      {"alloc", ws(256, 1, 28), n + "downsample.0.workspace.wgrad"},
      {"free", ws(256, 1, 28), n + "downsample.0.workspace.wgrad"},
      {"free", act(512, 28), n + "downsample.0.out.grad"},
      // bn3: now the last holder of add.out.grad
      {"alloc", act(512, 28), n + "conv3.out.grad"},
      {"alloc", stat(512), n + "bn3.weight.grad"},
      {"alloc", stat(512), n + "bn3.bias.grad"},
      {"free", act(512, 28), n + "add.out.grad"},
      {"free", act(512, 28), n + "conv3.out"},
      {"free", stat(512), n + "bn3.save_mean"},
      {"free", stat(512), n + "bn3.save_invstd"},
      // conv3 1x1: no workspaces; its saved input (bn2.out) is still held by relu2
      {"alloc", act(128, 28), n + "relu2.out.grad"},
      {"alloc", 512 * 128 * kP, n + "conv3.weight.grad"},
      {"free", act(512, 28), n + "conv3.out.grad"},
      {"alloc", act(128, 28), n + "bn2.out.grad"},
      {"free", act(128, 28), n + "relu2.out.grad"},
      {"free", act(128, 28), n + "bn2.out"},
      {"alloc", act(128, 28), n + "conv2.out.grad"},
      {"alloc", stat(128), n + "bn2.weight.grad"},
      {"alloc", stat(128), n + "bn2.bias.grad"},
      {"free", act(128, 28), n + "bn2.out.grad"},
      {"free", act(128, 28), n + "conv2.out"},
      {"free", stat(128), n + "bn2.save_mean"},
      {"free", stat(128), n + "bn2.save_invstd"},
      {"alloc", act(128, 56), n + "relu1.out.grad"},
      {"alloc", ws(128, 3, 28), n + "conv2.workspace.dgrad"},
      {"free", ws(128, 3, 28), n + "conv2.workspace.dgrad"},
      {"alloc", 128 * 128 * 9 * kP, n + "conv2.weight.grad"},
      {"alloc", ws(128, 3, 28), n + "conv2.workspace.wgrad"},
      {"free", ws(128, 3, 28), n + "conv2.workspace.wgrad"},
      {"free", act(128, 28), n + "conv2.out.grad"},
      {"alloc", act(128, 56), n + "bn1.out.grad"},
      {"free", act(128, 56), n + "relu1.out.grad"},
      {"free", act(128, 56), n + "bn1.out"},
      {"alloc", act(128, 56), n + "conv1.out.grad"},
      {"alloc", stat(128), n + "bn1.weight.grad"},
      {"alloc", stat(128), n + "bn1.bias.grad"},
      {"free", act(128, 56), n + "bn1.out.grad"},
      {"free", act(128, 56), n + "conv1.out"},
      {"free", stat(128), n + "bn1.save_mean"},
      {"free", stat(128), n + "bn1.save_invstd"},
      {"alloc", act(256, 56), x},
      {"alloc", 128 * 256 * kP, n + "conv1.weight.grad"},
      {"free", act(128, 56), n + "conv1.out.grad"},
      // the two gradients of the block input meet: summed into the first, the second dies
      {"free", act(256, 56), x},
  };
  EXPECT_EQ(window(t.ops, begin, end), expected);
}

TEST(CnnGenerator, BottleneckInferenceFreesEachOutputWhenItsVariableIsRebound) {
  const Trace t = generate("cnn/resnet50:batch=2,steps=1,mode=inference");
  const std::size_t begin = find_alloc(t.ops, "layer2.0.conv1.out", "step0.forward");
  const std::size_t end = find_alloc(t.ops, "layer2.1.conv1.out", "step0.forward");
  const std::string n = "layer2.0.";
  const std::vector<Op> expected = {
      {"alloc", act(128, 56), n + "conv1.out"},
      {"alloc", act(128, 56), n + "bn1.out"},
      {"free", act(128, 56), n + "conv1.out"},
      {"alloc", act(128, 28), n + "conv2.out"},
      {"alloc", ws(128, 3, 28), n + "conv2.workspace"},
      {"free", ws(128, 3, 28), n + "conv2.workspace"},
      {"free", act(128, 56), n + "bn1.out"},
      {"alloc", act(128, 28), n + "bn2.out"},
      {"free", act(128, 28), n + "conv2.out"},
      {"alloc", act(512, 28), n + "conv3.out"},
      {"free", act(128, 28), n + "bn2.out"},
      {"alloc", act(512, 28), n + "bn3.out"},
      {"free", act(512, 28), n + "conv3.out"},
      {"alloc", act(512, 28), n + "downsample.0.out"},
      {"alloc", ws(256, 1, 28), n + "downsample.0.workspace"},
      {"free", ws(256, 1, 28), n + "downsample.0.workspace"},
      {"alloc", act(512, 28), n + "downsample.1.out"},
      {"free", act(512, 28), n + "downsample.0.out"},
      {"free", act(512, 28), n + "downsample.1.out"},
      // the block input (layer1.2's output) is layer2's stage input: ResNet.forward's `x` keeps
      // it until the whole stage has run
  };
  EXPECT_EQ(window(t.ops, begin, end), expected);
  const std::size_t stage_end = find_alloc(t.ops, "layer3.0.conv1.out", "step0.forward");
  EXPECT_EQ(t.ops[stage_end - 1], (Op{"free", act(256, 56), "layer1.2.bn3.out"}));
}

TEST(CnnGenerator, ResNet50Figures) {
  const Trace t = generate("cnn/resnet50:batch=2,steps=1");
  EXPECT_EQ(metadata(t, "model.name"), "resnet50");
  EXPECT_EQ(metadata(t, "model.parameters"), "25557032");  // torchvision resnet50
  EXPECT_EQ(metadata(t, "model.parameter_bytes"), std::to_string(25557032ull * 4));
  EXPECT_EQ(metadata(t, "model.convolutions"), "53");
  // 11,113,984 conv output elements per sample, 42.4 MiB in fp32.
  EXPECT_EQ(metadata(t, "model.conv_output_bytes_per_sample"), "44455936");
  EXPECT_NEAR(44455936.0 / (1 << 20), 42.4, 0.05);

  // The same figures from the trace itself.
  std::uint64_t params = 0, init_blocks = 0, conv_weights = 0, conv_out = 0, convs = 0;
  for (const Op& op : t.ops) {
    if (op.kind != "alloc") continue;
    if (op.phase == "init") {
      ++init_blocks;
      if (ends_with(op.tag, ".weight") || ends_with(op.tag, ".bias")) params += op.size / 4;
      if (ends_with(op.tag, ".weight") && (op.tag.find("conv") != std::string::npos || ends_with(op.tag, "downsample.0.weight"))) ++conv_weights;
    }
    if (op.phase == "step0.forward" && (op.tag.find(".conv") != std::string::npos || op.tag.rfind("conv1.", 0) == 0 ||
                                        ends_with(op.tag, "downsample.0.out")) && ends_with(op.tag, ".out")) {
      conv_out += op.size;
      ++convs;
    }
  }
  EXPECT_EQ(params, 25557032u);
  EXPECT_EQ(conv_weights, 53u);
  EXPECT_EQ(init_blocks, 161u + 3u * 53u);  // parameters, then running_mean/var and num_batches_tracked per BN
  EXPECT_EQ(convs, 53u);
  EXPECT_EQ(conv_out, kB * 44455936u);

  // conv1 64x112x112; stages at 56, 28, 14, 7 pixels, widths 64..512 and outputs 256..2048.
  const auto size_of = [&](const std::string& tag) { return t.ops[find_alloc(t.ops, tag, "step0.forward")].size; };
  EXPECT_EQ(size_of("conv1.out"), act(64, 112));
  EXPECT_EQ(size_of("maxpool.out"), act(64, 56));
  const std::uint64_t side[] = {56, 28, 14, 7};
  for (std::uint64_t s = 0; s < 4; ++s) {
    const std::string layer = "layer" + std::to_string(s + 1);
    EXPECT_EQ(size_of(layer + ".1.conv2.out"), act(64u << s, side[s])) << layer;
    EXPECT_EQ(size_of(layer + ".1.conv3.out"), act(256u << s, side[s])) << layer;
  }
  EXPECT_EQ(size_of("layer4.2.conv3.out"), act(2048, 7));
  EXPECT_EQ(size_of("avgpool.out"), kB * 2048 * kP);
  EXPECT_EQ(size_of("fc.out"), kB * 1000 * kP);
}

TEST(CnnGenerator, TrainingKeepsConvAndBatchNormOutputs) {
  // What is live when forward ends, per docs/workload-cnn.md: every conv output and every batch-norm
  // output except the downsample branch's (out += identity saves nothing), the max pool's output and
  // int64 indices, the batch, and the small tensors of the head and the loss. ReLU is in place.
  const std::uint64_t b = 4, p = 4;
  const Trace t = generate("cnn/resnet50:batch=4,steps=1,workspace=none");
  std::uint64_t live = 0;
  for (const Op& op : t.ops) {
    if (op.phase != "step0.forward") continue;
    live += op.kind == "alloc" ? op.size : 0;
    live -= op.kind == "free" ? op.size : 0;
  }
  const std::uint64_t conv_elements = 11113984;  // per sample, the 53 convs (42.4 MiB in fp32)
  const std::uint64_t downsample_bn = 256 * 56 * 56 + 512 * 28 * 28 + 1024 * 14 * 14 + 2048 * 7 * 7;
  const std::uint64_t bn_channels = 26560;  // the 53 batch norms' channels: save_mean + save_invstd, fp32
  const std::uint64_t expected = b * p * (2 * conv_elements - downsample_bn)  // conv and BN outputs
                                 + b * 64 * 56 * 56 * (p + 8)                 // maxpool out, indices
                                 + b * 3 * 224 * 224 * p + b * 8               // images, labels
                                 + bn_channels * 2 * 4                         // BN statistics
                                 + b * 2048 * p + 2 * b * 1000 * p + 2 * p;    // avgpool, fc, log_softmax, loss
  EXPECT_EQ(live, expected);
  // About twice the conv outputs, a little under REFERENCE's "2 to 3x": in-place ReLU and the
  // unsaved downsample BN output keep it below 2.
  const double ratio = static_cast<double>(live) / static_cast<double>(b * p * conv_elements);
  EXPECT_GT(ratio, 1.9);
  EXPECT_LT(ratio, 2.0);
}

TEST(CnnGenerator, Vgg16Figures) {
  const Trace t = generate("cnn/vgg16:batch=2,steps=1");
  EXPECT_EQ(metadata(t, "model.parameters"), "138357544");  // torchvision vgg16
  EXPECT_EQ(metadata(t, "model.convolutions"), "13");
  std::uint64_t params = 0;
  for (const Op& op : t.ops) {
    if (op.kind == "alloc" && op.phase == "init") params += op.size / 4;  // VGG-16 has no buffers
  }
  EXPECT_EQ(params, 138357544u);
  const auto size_of = [&](const std::string& tag) { return t.ops[find_alloc(t.ops, tag, "step0.forward")].size; };
  EXPECT_EQ(size_of("features.0.out"), act(64, 224));
  EXPECT_EQ(size_of("features.4.indices"), kB * 64 * 112 * 112 * 8);
  EXPECT_EQ(size_of("features.28.out"), act(512, 14));
  EXPECT_EQ(size_of("avgpool.out"), act(512, 7));
  EXPECT_EQ(size_of("classifier.0.out"), kB * 4096 * kP);
  EXPECT_EQ(size_of("classifier.2.mask"), kB * 4096);
  EXPECT_EQ(size_of("cublas.workspace"), 8519680u);
}

TEST(CnnGenerator, IsDeterministic) {
  for (const char* spec : {"cnn/resnet50:batch=3,steps=2", "cnn/vgg16:batch=2,steps=2,optimizer=adam"}) {
    const Trace a = generate(spec), b = generate(spec);
    EXPECT_EQ(a.recorder.events(), b.recorder.events()) << spec;
    EXPECT_EQ(a.recorder.tag_names(), b.recorder.tag_names()) << spec;
    EXPECT_EQ(a.recorder.metadata().items(), b.recorder.metadata().items()) << spec;
  }
}

TEST(CnnGenerator, PhasesInOrder) {
  const Trace t = generate("cnn/resnet50:batch=1,steps=2");
  std::vector<std::string> phases;
  for (const Op& op : t.ops) {
    if (op.kind == "phase") phases.push_back(op.tag);
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"init", "step0.forward", "step0.backward", "step0.optimizer", "step1.forward",
                                              "step1.backward", "step1.optimizer", "teardown"}));
  EXPECT_EQ(t.recorder.events().front().kind, EventKind::kPhase);
}

// Optimizer state is created at the first step and lives to the end.
void expect_lazy_state(const std::string& spec, const std::vector<std::string>& suffixes, std::uint64_t parameters) {
  const Trace t = generate(spec);
  for (const std::string& suffix : suffixes) {
    std::map<std::string, std::uint64_t> allocs, frees;
    for (const Op& op : t.ops) {
      if (!ends_with(op.tag, suffix)) continue;
      (op.kind == "alloc" ? allocs : frees)[op.phase] += 1;
    }
    EXPECT_EQ(allocs, (std::map<std::string, std::uint64_t>{{"step0.optimizer", parameters}})) << spec << " " << suffix;
    EXPECT_EQ(frees, (std::map<std::string, std::uint64_t>{{"teardown", parameters}})) << spec << " " << suffix;
  }
}

TEST(CnnGenerator, OptimizerStateOnlyAtTheFirstStep) {
  expect_lazy_state("cnn/resnet50:batch=1,steps=3", {".momentum_buffer"}, 161);
  expect_lazy_state("cnn/resnet50:batch=1,steps=3,foreach=false", {".momentum_buffer"}, 161);
  expect_lazy_state("cnn/resnet50:batch=1,steps=3,optimizer=adam", {".exp_avg", ".exp_avg_sq"}, 161);
  expect_lazy_state("cnn/vgg16:batch=1,steps=2,optimizer=adam,foreach=false", {".exp_avg", ".exp_avg_sq"}, 32);
  const Trace none = generate("cnn/resnet50:batch=1,steps=2,momentum=0");
  for (const Op& op : none.ops) EXPECT_FALSE(ends_with(op.tag, ".momentum_buffer"));
}

TEST(CnnGenerator, WeightGradientsPersistAcrossSteps) {
  const Trace t = generate("cnn/resnet50:batch=1,steps=2");
  std::map<std::string, std::uint64_t> persistent, transient;
  for (const Op& op : t.ops) {
    if (op.kind != "alloc") continue;
    if (ends_with(op.tag, "weight.grad") || ends_with(op.tag, "bias.grad")) ++persistent[op.phase];
    if (ends_with(op.tag, ".grad.new")) ++transient[op.phase];
  }
  // Step 0: each backward kernel's weight gradient becomes .grad; later steps add a new one into it.
  EXPECT_EQ(persistent, (std::map<std::string, std::uint64_t>{{"step0.backward", 161}}));
  EXPECT_EQ(transient, (std::map<std::string, std::uint64_t>{{"step1.backward", 161}}));
  for (const Op& op : t.ops) {
    if (op.kind == "free" && ends_with(op.tag, ".grad.new")) {
      EXPECT_EQ(op.phase, "step1.backward");
    }
  }

  // zero_grad(set_to_none=True): every .grad goes before backward and is made anew.
  const Trace fresh = generate("cnn/resnet50:batch=1,steps=2,set_to_none=true");
  std::uint64_t remade = 0, freed = 0;
  for (const Op& op : fresh.ops) {
    EXPECT_FALSE(ends_with(op.tag, ".grad.new"));
    if (op.phase != "step1.backward" || !(ends_with(op.tag, "weight.grad") || ends_with(op.tag, "bias.grad"))) continue;
    (op.kind == "alloc" ? remade : freed) += 1;
  }
  EXPECT_EQ(remade, 161u);
  EXPECT_EQ(freed, 161u);
}

TEST(CnnGenerator, InferenceAllocatesNoGradients) {
  for (const char* spec : {"cnn/resnet50:mode=inference,batch=4,steps=2", "cnn/vgg16:mode=inference,batch=4,steps=2"}) {
    const Trace t = generate(spec);
    std::vector<std::string> phases;
    for (const Op& op : t.ops) {
      EXPECT_EQ(op.tag.find(".grad"), std::string::npos) << spec << ": " << op.tag;
      EXPECT_EQ(op.tag.find("save_"), std::string::npos) << spec << ": " << op.tag;
      EXPECT_EQ(op.tag.find(".mask"), std::string::npos) << spec << ": " << op.tag;
      EXPECT_EQ(op.tag.find("momentum"), std::string::npos) << spec << ": " << op.tag;
      if (op.kind == "phase") phases.push_back(op.tag);
    }
    EXPECT_EQ(phases, (std::vector<std::string>{"init", "step0.forward", "step1.forward", "teardown"})) << spec;
  }
}

TEST(CnnGenerator, WorkspaceNoneEmitsNoWorkspaces) {
  for (const char* spec : {"cnn/resnet50:workspace=none,batch=2,steps=1", "cnn/vgg16:workspace=none,batch=2,steps=1",
                           "cnn/vgg16:workspace=none,mode=inference,batch=2,steps=1"}) {
    const Trace t = generate(spec);
    for (const Op& op : t.ops) EXPECT_EQ(op.tag.find("workspace"), std::string::npos) << spec << ": " << op.tag;
  }
}

TEST(CnnGenerator, WorkspacesAreCappedAtTheLimit) {
  const Trace t = generate("cnn/resnet50:batch=2,steps=1,workspace_limit=1MiB");
  std::uint64_t largest = 0;
  for (const Op& op : t.ops) {
    if (op.kind == "alloc" && op.tag.find("conv") != std::string::npos && op.tag.find(".workspace") != std::string::npos) {
      largest = std::max(largest, op.size);
    }
  }
  EXPECT_EQ(largest, 1u << 20);
}

TEST(CnnGenerator, PresetsGenerateValidTracesForSeveralBatchSizes) {
  // generate_workload validates every event and that the trace ends with no live block.
  for (const char* preset : {"resnet50", "vgg16"}) {
    for (const char* batch : {"1", "8", "32"}) {
      for (const char* mode : {"train", "inference"}) {
        const std::string spec = std::string("cnn/") + preset + ":steps=2,batch=" + batch + ",mode=" + mode;
        TraceRecorder r;
        EXPECT_NO_THROW(generate_workload(spec, r)) << spec;
        EXPECT_EQ(r.metadata().get("ends_empty"), "true");
      }
    }
  }
  for (const char* extra : {"dtype=fp16", "dtype=bf16", "optimizer=adam", "optimizer=adam,foreach=false", "foreach=false",
                            "foreach=false,momentum=0", "optimizer=none", "set_to_none=true", "weight_decay=0", "dropout=0",
                            "image=32", "image=300,classes=10"}) {
    for (const char* preset : {"resnet50", "vgg16"}) {
      const std::string spec = std::string("cnn/") + preset + ":batch=2,steps=2," + extra;
      TraceRecorder r;
      EXPECT_NO_THROW(generate_workload(spec, r)) << spec;
    }
  }
}

TEST(CnnGenerator, HalfPrecisionHalvesActivationsButNotStatistics) {
  const Trace t = generate("cnn/resnet50:batch=2,steps=1,dtype=bf16");
  const auto size_of = [&](const std::string& tag) { return t.ops[find_alloc(t.ops, tag, "step0.forward")].size; };
  EXPECT_EQ(size_of("conv1.out"), act(64, 112) / 2);
  EXPECT_EQ(size_of("bn1.save_mean"), 64u * 4);
  EXPECT_EQ(size_of("maxpool.indices"), kB * 64 * 56 * 56 * 8);
  EXPECT_EQ(metadata(t, "model.conv_output_bytes_per_sample"), "22227968");
}

TEST(CnnGenerator, BadOptionsGiveOneLineInputErrors) {
  for (const char* spec : {"cnn/resnet50:batch=0", "cnn/resnet50:batch=100000", "cnn:steps=0", "cnn:image=16", "cnn:classes=0",
                           "cnn:dropout=1", "cnn:model=alexnet", "cnn:dtype=fp8", "cnn:optimizer=lion", "cnn:mode=eval",
                           "cnn:workspace=huge", "cnn:workspace_limit=lots", "cnn:batchsize=2", "cnn/resnet18"}) {
    try {
      TraceRecorder r;
      generate_workload(spec, r);
      ADD_FAILURE() << "accepted " << spec;
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      EXPECT_EQ(what.rfind("cnn", 0), 0u) << what;
    }
  }
}

}  // namespace
}  // namespace tiermark
