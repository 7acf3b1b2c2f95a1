// The transformer generator: a whole training step of a two-layer model checked event by event
// against a list written from the formulas of docs/workload-transformer.md; the distinct sizes of
// the CS336 2.7B runs (shared/REFERENCE.md sections 1 and 5); the training-loop behaviours (lazy
// Adam state, set_to_none, recompute, flash, autocast); determinism, presets and bad options.
#include "workloads/transformer_generator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/input_error.h"
#include "workloads/trace_recorder.h"

namespace tiermark {
namespace {

TraceRecorder record(const std::string& spec) {
  TraceRecorder recorder;
  generate_workload(spec, recorder);
  return recorder;
}

// One line per event: "= phase", "+ size tag" or "- tag" (the tag of the block freed).
std::vector<std::string> render(const TraceRecorder& trace) {
  std::vector<std::string> lines;
  std::map<SlotId, std::string> tags;
  for (const TraceEvent& e : trace.events()) {
    switch (e.kind) {
      case EventKind::kPhase:
        lines.push_back("= " + std::string(trace.tag(e)));
        break;
      case EventKind::kAlloc:
        tags[e.id] = std::string(trace.tag(e));
        lines.push_back("+ " + std::to_string(e.size) + " " + tags[e.id]);
        break;
      case EventKind::kFree:
        lines.push_back("- " + tags.at(e.id));
        break;
      case EventKind::kCounter:
        lines.push_back("# " + std::string(trace.tag(e)));
        break;
    }
  }
  return lines;
}

// Per block: size, tag, phase and event index of its allocation and of its free.
struct Block {
  std::uint64_t size = 0;
  std::string tag, alloc_phase, free_phase;
  std::uint64_t alloc_at = 0, free_at = 0;
};

std::vector<Block> blocks(const TraceRecorder& trace) {
  std::vector<Block> out;
  std::map<SlotId, std::size_t> index;
  std::string phase;
  std::uint64_t at = 0;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == EventKind::kPhase) {
      phase = std::string(trace.tag(e));
      continue;
    }
    if (e.kind == EventKind::kAlloc) {
      index[e.id] = out.size();
      out.push_back({e.size, std::string(trace.tag(e)), phase, "", at, 0});
    } else if (e.kind == EventKind::kFree) {
      Block& b = out[index.at(e.id)];
      b.free_phase = phase;
      b.free_at = at;
    }
    ++at;
  }
  return out;
}

std::set<std::uint64_t> distinct_sizes(const TraceRecorder& trace) {
  std::set<std::uint64_t> sizes;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == EventKind::kAlloc) sizes.insert(e.size);
  }
  return sizes;
}

std::uint64_t peak_live_bytes(const TraceRecorder& trace) {
  std::map<SlotId, std::uint64_t> live;
  std::uint64_t now = 0, peak = 0;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == EventKind::kAlloc) {
      live[e.id] = e.size;
      now += e.size;
      peak = std::max(peak, now);
    } else if (e.kind == EventKind::kFree) {
      now -= live.at(e.id);
    }
  }
  return peak;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---------------------------------------------------------------------------------------------
// (1) A whole training step of a two-layer model, event by event.

// b=2, s=3, h=8, a=2 (d=4), f=32, L=2, V=16, fp32, LayerNorm without bias, GELU, learned positions
// (positions = s), unfused causal attention, AdamW, set_to_none.
namespace tiny {
constexpr std::uint64_t b = 2, s = 3, h = 8, a = 2, f = 32, V = 16;
}  // namespace tiny
const std::map<std::string, std::uint64_t> kSizes = {
    {"BSH", tiny::b * tiny::s * tiny::h * 4},  // residual stream, norm outputs, projections, merged heads
    {"BS4", tiny::b * tiny::s * 4},      // LayerNorm mean and rstd (fp32)
    {"BS8", tiny::b * tiny::s * 8},      // token ids and targets (int64)
    {"S8", tiny::s * 8},           // position ids, the mask's arange (int64)
    {"SH4", tiny::s * tiny::h * 4},      // looked-up positions; the position table (positions = s)
    {"S2", tiny::s * tiny::s},           // causal mask (bool)
    {"BAS2", tiny::b * tiny::a * tiny::s * tiny::s * 4},  // scores, scaled, masked, probabilities
    {"BSF", tiny::b * tiny::s * tiny::f * 4},  // FFN up and GELU
    {"BSV", tiny::b * tiny::s * tiny::V * 4},  // logits and log-probabilities
    {"VH", tiny::V * tiny::h * 4},       // token embedding, LM head
    {"HH", tiny::h * tiny::h * 4},       // attention projections
    {"HF", tiny::h * tiny::f * 4},       // FFN matrices
    {"H4", tiny::h * 4},           // LayerNorm weights
    {"LOSS", 4},             // fp32 scalars: loss, total_weight, the seed gradient
    {"WS", 8519680},         // cuBLAS workspace
};

// Expands "+ SYMBOL tag" lines into sizes; `{i}` becomes the layer and `{x}` the layer's input.
void add(std::vector<std::string>& out, const std::string& text, int layer = 0, const std::string& input = "") {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    line.erase(0, line.find_first_not_of(' '));
    if (line.empty()) continue;
    for (std::size_t at; (at = line.find("{i}")) != std::string::npos;) line.replace(at, 3, std::to_string(layer));
    for (std::size_t at; (at = line.find("{x}")) != std::string::npos;) line.replace(at, 3, input);
    if (line[0] == '+') {
      const std::size_t space = line.find(' ', 2);
      line = "+ " + std::to_string(kSizes.at(line.substr(2, space - 2))) + line.substr(space);
    }
    out.push_back(line);
  }
}

std::vector<std::string> expected_two_layer_step() {
  // model.parameters() order with each tensor's size symbol.
  std::vector<std::pair<std::string, std::string>> params = {{"embed.wte", "VH"}, {"embed.wpe", "SH4"}};
  for (int i = 0; i < 2; ++i) {
    const std::string l = "layer" + std::to_string(i) + ".";
    for (auto [name, size] : std::vector<std::pair<std::string, std::string>>{
             {"attn.norm.weight", "H4"}, {"attn.wq", "HH"}, {"attn.wk", "HH"}, {"attn.wv", "HH"}, {"attn.wo", "HH"},
             {"mlp.norm.weight", "H4"}, {"mlp.w_up", "HF"}, {"mlp.w_down", "HF"}}) {
      params.push_back({l + name, size});
    }
  }
  params.push_back({"final_norm.weight", "H4"});
  params.push_back({"lm_head", "VH"});

  std::vector<std::string> out;
  add(out, "= init");
  for (const auto& [name, size] : params) add(out, "+ " + size + " " + name);

  add(out, R"(
    = step0.forward
    + BS8 batch.inputs
    + BS8 batch.targets
    + S8 embed.position_ids
    + BSH embed.tokens
    + SH4 embed.positions
    + BSH embed.sum
    - embed.tokens
    - embed.positions)");
  for (int i = 0; i < 2; ++i) {
    // Norm, Q K V projections (the first matmul of the trace takes the cuBLAS workspace after its
    // output), the mask, q and k^T copied out of the heads view by matmul, scores / sqrt(d),
    // where(mask), softmax, v copied, context, heads merged, output projection. Q, K, V are
    // locals until attention returns; the attention output until the block returns.
    add(out, "+ BSH layer{i}.attn.norm.out\n+ BS4 layer{i}.attn.norm.mean\n+ BS4 layer{i}.attn.norm.rstd\n"
             "+ BSH layer{i}.attn.q", i);
    if (i == 0) add(out, "+ WS cublas.workspace");
    add(out, R"(
      + BSH layer{i}.attn.k
      + BSH layer{i}.attn.v
      + S8 layer{i}.attn.mask.arange
      + S2 layer{i}.attn.mask
      + BSH layer{i}.attn.q.heads
      + BSH layer{i}.attn.k.heads
      + BAS2 layer{i}.attn.scores
      + BAS2 layer{i}.attn.scaled
      - layer{i}.attn.scores
      + BAS2 layer{i}.attn.masked
      - layer{i}.attn.scaled
      + BAS2 layer{i}.attn.probs
      - layer{i}.attn.masked
      + BSH layer{i}.attn.v.heads
      + BSH layer{i}.attn.context
      + BSH layer{i}.attn.merged
      - layer{i}.attn.context
      + BSH layer{i}.attn.out
      - layer{i}.attn.q
      - layer{i}.attn.k
      - layer{i}.attn.v
      - layer{i}.attn.mask.arange
      + BSH layer{i}.attn.residual
      + BSH layer{i}.mlp.norm.out
      + BS4 layer{i}.mlp.norm.mean
      + BS4 layer{i}.mlp.norm.rstd
      + BSF layer{i}.mlp.up
      + BSF layer{i}.mlp.act
      + BSH layer{i}.mlp.down
      + BSH layer{i}.mlp.residual
      - layer{i}.attn.out
      - layer{i}.mlp.down)", i);
  }
  add(out, R"(
    + BSH final_norm.out
    + BS4 final_norm.mean
    + BS4 final_norm.rstd
    + BSV logits
    + BSV loss.log_probs
    + LOSS loss
    + LOSS loss.total_weight

    = step0.backward
    + LOSS loss.grad
    + BSV loss.log_probs.grad
    - loss.grad
    - loss.total_weight
    + BSV logits.grad
    - loss.log_probs.grad
    - loss.log_probs
    + BSH final_norm.out.grad
    + VH lm_head.grad
    - logits.grad
    - final_norm.out
    + BSH layer1.mlp.residual.grad
    + H4 final_norm.weight.grad
    - final_norm.out.grad
    - layer1.mlp.residual
    - final_norm.mean
    - final_norm.rstd)");
  // Each layer in reverse: every node allocates its input gradients, frees the gradient it got,
  // then the saved tensors nothing else holds. The residual-stream gradient (layer1.mlp.residual.grad)
  // flows through both layers; later contributions are summed into it in place and freed.
  for (int i = 1; i >= 0; --i) {
    add(out, R"(
      + BSF layer{i}.mlp.act.grad
      + HF layer{i}.mlp.w_down.grad
      - layer{i}.mlp.act
      + BSF layer{i}.mlp.up.grad
      - layer{i}.mlp.act.grad
      - layer{i}.mlp.up
      + BSH layer{i}.mlp.norm.out.grad
      + HF layer{i}.mlp.w_up.grad
      - layer{i}.mlp.up.grad
      - layer{i}.mlp.norm.out
      + BSH layer{i}.attn.residual.grad
      + H4 layer{i}.mlp.norm.weight.grad
      - layer{i}.mlp.norm.out.grad
      - layer{i}.attn.residual
      - layer{i}.mlp.norm.mean
      - layer{i}.mlp.norm.rstd
      - layer{i}.attn.residual.grad
      + BSH layer{i}.attn.merged.grad
      + HH layer{i}.attn.wo.grad
      - layer{i}.attn.merged
      + BSH layer{i}.attn.context.grad
      - layer{i}.attn.merged.grad
      + BAS2 layer{i}.attn.probs.grad
      + BSH layer{i}.attn.v.heads.grad
      - layer{i}.attn.context.grad
      - layer{i}.attn.v.heads
      + BAS2 layer{i}.attn.masked.grad
      - layer{i}.attn.probs.grad
      - layer{i}.attn.probs
      + BAS2 layer{i}.attn.scaled.grad
      - layer{i}.attn.masked.grad
      - layer{i}.attn.mask
      + BAS2 layer{i}.attn.scores.grad
      - layer{i}.attn.scaled.grad
      + BSH layer{i}.attn.q.heads.grad
      + BSH layer{i}.attn.k.heads.grad
      - layer{i}.attn.scores.grad
      - layer{i}.attn.q.heads
      - layer{i}.attn.k.heads
      + BSH layer{i}.attn.v.grad
      - layer{i}.attn.v.heads.grad
      + BSH layer{i}.attn.k.grad
      - layer{i}.attn.k.heads.grad
      + BSH layer{i}.attn.q.grad
      - layer{i}.attn.q.heads.grad
      + BSH layer{i}.attn.norm.out.grad
      + HH layer{i}.attn.wv.grad
      - layer{i}.attn.v.grad
      + BSH layer{i}.attn.norm.out.grad
      + HH layer{i}.attn.wk.grad
      - layer{i}.attn.k.grad
      - layer{i}.attn.norm.out.grad
      + BSH layer{i}.attn.norm.out.grad
      + HH layer{i}.attn.wq.grad
      - layer{i}.attn.q.grad
      - layer{i}.attn.norm.out
      - layer{i}.attn.norm.out.grad
      + BSH {x}.grad
      + H4 layer{i}.attn.norm.weight.grad
      - layer{i}.attn.norm.out.grad
      - {x}
      - layer{i}.attn.norm.mean
      - layer{i}.attn.norm.rstd
      - {x}.grad)", i, i == 1 ? "layer0.mlp.residual" : "embed.sum");
  }
  add(out, R"(
    + SH4 embed.positions.grad
    + SH4 embed.wpe.grad
    - embed.positions.grad
    - embed.position_ids
    + VH embed.wte.grad
    - layer1.mlp.residual.grad
    - logits
    - loss
    - batch.inputs
    - batch.targets
    = step0.optimizer)");
  // AdamW foreach: lazy state, one sqrt temporary per parameter (freed last to first), then
  // zero_grad(set_to_none=True).
  for (const auto& [name, size] : params) {
    add(out, "+ " + size + " adam.exp_avg." + name);
    add(out, "+ " + size + " adam.exp_avg_sq." + name);
  }
  for (const auto& [name, size] : params) add(out, "+ " + size + " adam.denom." + name);
  for (auto it = params.rbegin(); it != params.rend(); ++it) add(out, "- adam.denom." + it->first);
  for (const auto& [name, size] : params) add(out, "- " + name + ".grad");
  add(out, "= teardown");
  for (const auto& [name, size] : params) add(out, "- adam.exp_avg." + name + "\n- adam.exp_avg_sq." + name);
  for (const auto& [name, size] : params) add(out, "- " + name);
  add(out, "- cublas.workspace");
  return out;
}

TEST(TransformerGenerator, TwoLayerTrainingStepMatchesTheFormulasEventByEvent) {
  const TraceRecorder trace =
      record("transformer:b=2,s=3,h=8,a=2,f=32,L=2,V=16,steps=1,norm=layernorm,mlp=gelu,rope=false");
  const std::vector<std::string> got = render(trace), want = expected_two_layer_step();
  for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    ASSERT_EQ(got[i], want[i]) << "first difference at event " << i;
  }
  EXPECT_EQ(got.size(), want.size());
  // Parameters: 2*V*h + positions*h + L*(2h + 4h^2 + 2hf) + h.
  using tiny::h, tiny::s, tiny::f, tiny::V;
  EXPECT_EQ(trace.metadata().get("model.parameters"),
            std::to_string(2 * V * h + s * h + 2 * (2 * h + 4 * h * h + 2 * h * f) + h));
  EXPECT_EQ(trace.metadata().get("model.dtype"), "fp32");
}

// ---------------------------------------------------------------------------------------------
// (2) The CS336 2.7B runs: every size is one of the formula sizes.

TEST(TransformerGenerator, Cs336SizesAreExactlyTheFormulaSizes) {
  constexpr std::uint64_t B = 4, S = 128, H = 2560, A = 32, D = H / A, F = 10240, VOCAB = 10000;
  const std::set<std::uint64_t> forward = {
      B * S * H * 4,        // residual stream, norm outputs, Q K V, rotated Q K, context, projections
      B * S * (H / 2) * 4,  // RoPE halves
      B * S * 4,            // RMSNorm mean, mean + eps, rstd
      B * A * S * S * 4,    // scores, scaled, masked, probabilities
      B * S * F * 4,        // FFN up, sigmoid, silu, gate, gated
      H * H * 4,            // attention weights
      H * F * 4,            // FFN weights
      H * 4,                // RMSNorm weights
      VOCAB * H * 4,        // token embedding, LM head
      B * S * VOCAB * 4,    // logits
      B * S * 8,            // token ids (int64)
      S * 8,                // torch.arange(s) for the positions and the mask (int64)
      S * S,                // causal mask (bool)
      S * D * 4,            // RoPE cos/sin table and the rows gathered from it per call
      8519680,              // cuBLAS workspace
  };
  EXPECT_EQ(distinct_sizes(record("transformer/cs336-2.7b:mode=inference,steps=1")), forward);
  std::set<std::uint64_t> train = forward;
  train.insert(4);  // loss, total_weight and the seed gradient
  EXPECT_EQ(distinct_sizes(record("transformer/cs336-2.7b")), train);
  EXPECT_LE(train.size(), 25u) << "the real runs used 12 to 25 distinct sizes";
}

// Allocation counts per layer and lifetimes, for the report; loose bounds around shared/REFERENCE.md
// section 5 (about 64 allocations per layer per forward, about 210 per full step).
TEST(TransformerGenerator, Cs336AllocationsPerLayerAndLifetimes) {
  const TraceRecorder trace = record("transformer/cs336-2.7b:steps=3");
  const std::vector<Block> all = blocks(trace);
  std::map<std::string, std::uint64_t> per_phase;
  for (const Block& b : all) ++per_phase[b.alloc_phase];
  const double L = 32;
  const double forward = per_phase["step2.forward"] / L;
  const double step = (per_phase["step2.forward"] + per_phase["step2.backward"] + per_phase["step2.optimizer"]) / L;
  std::vector<std::uint64_t> life, step_life;
  for (const Block& b : all) {
    life.push_back(b.free_at - b.alloc_at);
    if (b.alloc_phase != "init" && b.free_phase != "teardown") step_life.push_back(b.free_at - b.alloc_at);
  }
  std::sort(life.begin(), life.end());
  std::sort(step_life.begin(), step_life.end());
  std::cout << "cs336-2.7b per layer: " << forward << " allocations per forward, " << step
            << " per full step (steady state); lifetime in events: median " << life[life.size() / 2] << ", p90 "
            << life[life.size() * 9 / 10] << " (step-internal blocks: median " << step_life[step_life.size() / 2]
            << ", p90 " << step_life[step_life.size() * 9 / 10] << ")\n";
  EXPECT_GT(forward, 40);
  EXPECT_LT(forward, 80);
  EXPECT_GT(step, 100);
  EXPECT_LT(step, 260);
  EXPECT_LE(life[life.size() / 2], 10u);
}

// ---------------------------------------------------------------------------------------------
// (3) The training loop and the attention variants.

TEST(TransformerGenerator, AdamStateIsCreatedAtTheFirstStepOnly) {
  const TraceRecorder trace = record("transformer/cs336-2.7b:L=2,steps=3");
  std::map<std::string, int> state_allocs, denominators;
  for (const Block& b : blocks(trace)) {
    if (starts_with(b.tag, "adam.exp_avg")) {
      ++state_allocs[b.alloc_phase];
      EXPECT_EQ(b.free_phase, "teardown") << b.tag;
    }
    if (starts_with(b.tag, "adam.denom.")) {
      ++denominators[b.alloc_phase];
      EXPECT_EQ(b.free_phase, b.alloc_phase) << b.tag;
    }
  }
  const int params = 2 + 2 * 9 + 1;  // embedding, 9 per layer, final norm, LM head
  EXPECT_EQ(state_allocs["step0.optimizer"], 2 * params);
  EXPECT_EQ(state_allocs["step1.optimizer"], 0);
  EXPECT_EQ(state_allocs["step2.optimizer"], 0);
  EXPECT_EQ(denominators["step1.optimizer"], params);
}

TEST(TransformerGenerator, ForLoopAdamHoldsOneParametersTemporariesAtATime) {
  const TraceRecorder loop = record("transformer/cs336-2.7b:L=2,steps=2,foreach=false");
  const TraceRecorder foreach = record("transformer/cs336-2.7b:L=2,steps=2");
  // Per parameter: sqrt, then denom, then the sqrt goes and the previous denom goes (rebinding).
  std::vector<std::string> ops;
  bool in_optimizer = false;
  for (const TraceEvent& e : loop.events()) {
    if (e.kind == EventKind::kPhase) in_optimizer = loop.tag(e) == "step1.optimizer";
    if (in_optimizer && e.kind == EventKind::kAlloc) ops.push_back("+" + std::string(loop.tag(e)));
    if (in_optimizer && e.kind == EventKind::kFree) ops.push_back("-");
  }
  ASSERT_GE(ops.size(), 7u);
  EXPECT_EQ(ops[0], "+adam.sqrt.embed.wte");
  EXPECT_EQ(ops[1], "+adam.denom.embed.wte");
  EXPECT_EQ(ops[2], "-");  // the sqrt
  EXPECT_EQ(ops[3].rfind("+adam.sqrt.", 0), 0u) << ops[3];
  EXPECT_EQ(ops[4].rfind("+adam.denom.", 0), 0u) << ops[4];
  EXPECT_EQ(ops[5], "-");  // the sqrt
  EXPECT_EQ(ops[6], "-");  // the first parameter's denom, at rebinding
  EXPECT_LT(peak_live_bytes(loop), peak_live_bytes(foreach));
}

TEST(TransformerGenerator, SetToNoneFreesGradientsAndTheNextBackwardRecreatesThem) {
  for (const std::string mode : {"none", "keep"}) {
    SCOPED_TRACE(mode);
    const TraceRecorder trace = record("transformer/cs336-2.7b:L=2,steps=2,zero_grad=" + mode);
    int freed_at_zero_grad = 0, kept_to_teardown = 0, wq_grads_in_step1 = 0;
    for (const Block& b : blocks(trace)) {
      if (b.tag != "layer1.attn.wq.grad") continue;
      if (b.alloc_phase == "step1.backward") ++wq_grads_in_step1;
      if (b.free_phase == "step0.optimizer" || b.free_phase == "step1.optimizer") ++freed_at_zero_grad;
      if (b.free_phase == "teardown") ++kept_to_teardown;
    }
    EXPECT_EQ(wq_grads_in_step1, 1) << "each backward computes the weight gradient";
    if (mode == "none") {
      EXPECT_EQ(freed_at_zero_grad, 2);  // .grad of steps 0 and 1
      EXPECT_EQ(kept_to_teardown, 0);
    } else {
      EXPECT_EQ(freed_at_zero_grad, 0);
      EXPECT_EQ(kept_to_teardown, 1);  // step 0's .grad; step 1's gradient was added into it and freed
    }
  }
}

TEST(TransformerGenerator, RecomputeLowersThePeakAndKeepsOnlyLayerInputs) {
  const std::string base = "transformer/cs336-2.7b:L=4,s=512,optimizer=none";
  const TraceRecorder plain = record(base), recomputed = record(base + ",recompute=full");
  EXPECT_LT(peak_live_bytes(recomputed), peak_live_bytes(plain));
  // In the forward of a checkpointed layer nothing of the layer outlives the layer but its output.
  for (const Block& b : blocks(recomputed)) {
    if (b.alloc_phase == "step0.forward" && starts_with(b.tag, "layer1.") && b.tag != "layer1.mlp.residual") {
      EXPECT_EQ(b.free_phase, "step0.forward") << b.tag;
    }
  }
  // The backward recomputes every layer once: as many forward activations as in the forward itself,
  // minus the two the early stop skips (the FFN down projection and the layer output).
  int forward = 0, recomputed_in_backward = 0;
  for (const Block& b : blocks(recomputed)) {
    if (!starts_with(b.tag, "layer2.") || ends_with(b.tag, ".grad") || ends_with(b.tag, ".grad.tmp")) continue;
    if (b.alloc_phase == "step0.forward") ++forward;
    if (b.alloc_phase == "step0.backward") ++recomputed_in_backward;
  }
  EXPECT_EQ(recomputed_in_backward, forward - 2);
}

TEST(TransformerGenerator, FlashRemovesTheSequenceSquaredTensors) {
  constexpr std::uint64_t B = 4, S = 128, A = 32;
  const TraceRecorder unfused = record("transformer/cs336-2.7b:L=2,steps=1");
  const TraceRecorder flash = record("transformer/cs336-2.7b:L=2,steps=1,attention=flash");
  EXPECT_TRUE(distinct_sizes(unfused).contains(B * A * S * S * 4));
  EXPECT_TRUE(distinct_sizes(unfused).contains(S * S));
  EXPECT_FALSE(distinct_sizes(flash).contains(B * A * S * S * 4));
  EXPECT_FALSE(distinct_sizes(flash).contains(S * S));
  EXPECT_TRUE(distinct_sizes(flash).contains(B * A * S * 4)) << "flash keeps b*a*s fp32 log-sum-exp values";
  for (const Block& b : blocks(flash)) {
    EXPECT_EQ(b.tag.find("attn.scores"), std::string::npos) << b.tag;
    EXPECT_EQ(b.tag.find("attn.probs"), std::string::npos) << b.tag;
  }
}

TEST(TransformerGenerator, AutocastKeepsABf16CopyOfEveryWeightDuringForward) {
  const TraceRecorder trace = record("transformer/cs336-2.7b:L=2,steps=1,autocast=true");
  std::set<std::string> copies;
  bool fp32_logits = false;
  for (const Block& b : blocks(trace)) {
    if (ends_with(b.tag, ".bf16") && (b.tag.find(".w") != std::string::npos || starts_with(b.tag, "lm_head"))) {
      EXPECT_EQ(b.alloc_phase, "step0.forward") << b.tag;
      EXPECT_EQ(b.free_phase, "step0.backward") << b.tag;
      copies.insert(b.tag);
    }
    if (b.tag == "logits") {
      EXPECT_EQ(b.size, 4u * 128 * 10000 * 2) << "bf16 logits";
    }
    if (b.tag == "logits.fp32") fp32_logits = b.size == 4u * 128 * 10000 * 4;
    if (b.tag == "layer0.attn.norm.mean") {
      EXPECT_EQ(b.size, 4u * 128 * 4) << "norm statistics stay fp32";
    }
  }
  EXPECT_EQ(copies.size(), 2u * 7 + 1) << "seven matrices per layer and the LM head";
  EXPECT_TRUE(fp32_logits);
}

TEST(TransformerGenerator, GroupedQueryAttentionShrinksKeysAndValues) {
  const TraceRecorder trace = record("transformer/llama3-8b:L=1,s=256,steps=1");
  for (const Block& b : blocks(trace)) {
    if (b.tag == "layer0.attn.k" || b.tag == "layer0.attn.v") {
      EXPECT_EQ(b.size, 1u * 256 * 8 * 128 * 2) << b.tag;
    }
    if (b.tag == "layer0.attn.wk") {
      EXPECT_EQ(b.size, 1024u * 4096 * 2);
    }
  }
  EXPECT_EQ(trace.metadata().get("model.kv_heads"), "8");
}

TEST(TransformerGenerator, InferenceAllocatesNoGradientsAndFreesActivationsInForward) {
  const TraceRecorder trace = record("transformer/cs336-2.7b:L=2,mode=inference,steps=2");
  for (const Block& b : blocks(trace)) {
    EXPECT_EQ(b.tag.find(".grad"), std::string::npos) << b.tag;
    if (b.alloc_phase == "forward") {
      EXPECT_EQ(b.free_phase, b.tag == "cublas.workspace" ? "teardown" : "forward") << b.tag;
    }
  }
  std::vector<std::string> phases;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == EventKind::kPhase) phases.emplace_back(trace.tag(e));
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"init", "forward", "forward", "teardown"}));
}

TEST(TransformerGenerator, IsDeterministic) {
  const std::string spec = "transformer/gpt2-small:L=2,s=128,b=2,recompute=full,autocast=true";
  const TraceRecorder first = record(spec), second = record(spec);
  EXPECT_EQ(first.events(), second.events());
  EXPECT_EQ(first.tag_names(), second.tag_names());
}

TEST(TransformerGenerator, EveryPresetGeneratesAValidTrace) {
  for (const WorkloadPreset& preset : transformer_generator().presets) {
    SCOPED_TRACE(std::string(preset.name));
    TraceRecorder trace;
    EXPECT_GT(generate_workload("transformer/" + std::string(preset.name), trace), 0u);
  }
  // A larger model is one override away (Llama 2 70B's attention shape on the 7B preset).
  TraceRecorder big;
  generate_workload("transformer/llama2-7b:L=80,h=8192,a=64,a_kv=8,f=28672,steps=1", big);
  EXPECT_EQ(big.metadata().get("model.layers"), "80");
  EXPECT_EQ(big.metadata().get("model.kv_heads"), "8");
}

TEST(TransformerGenerator, BadOptionsAreOneLineInputErrors) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"transformer:h=10,a=4", "option a='4': must divide h=10"},
      {"transformer:a=8,a_kv=3", "option a_kv='3': must divide a=8"},
      {"transformer:dtype=bf16,autocast=true", "option autocast='true'"},
      {"transformer:h=12,a=4", "rope needs an even head size"},
      {"transformer:b=0", "option b='0': must be at least 1"},
      {"transformer:rope=false,positions=16,s=32", "option positions='16'"},
      {"transformer:mode=inference,recompute=full", "option recompute='full'"},
      {"transformer:s=4294967296,V=4294967296", "larger than a trace block"},
      {"transformer:mlp=relu", "option mlp='relu'"},
  };
  for (const auto& [spec, message] : bad) {
    TraceRecorder trace;
    try {
      generate_workload(spec, trace);
      ADD_FAILURE() << "accepted " << spec;
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(message), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace tiermark
