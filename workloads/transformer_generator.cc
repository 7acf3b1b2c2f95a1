// transformer: the device allocations and frees an eager framework (PyTorch 2.x on one CUDA device)
// makes for transformer training steps and inference forwards, with sizes from shared/REFERENCE.md
// section 5 and the operator sequence of the model code the presets name (the CS336 model,
// Hugging Face GPT-2, BERT and Llama). docs/workload-transformer.md lists every tensor.
//
// How: a small model of eager PyTorch rather than a typed-in list. Every operator allocates its
// outputs. In grad mode, autograd records one node per operator that holds the tensors its backward
// needs (saved tensors); backward runs the nodes in reverse creation order (what the autograd engine
// does on one device: the ready node with the highest sequence number first), each node allocating
// its input gradients, then releasing the gradient it received and its saved tensors, then handing
// its gradients to the nodes before it (summed in place into an existing one when possible, as
// torch/csrc/autograd/input_buffer.cpp does). A block is freed when its last holder lets go: a
// Python variable, a saved tensor, a view, a gradient buffer, the autocast weight cache, a
// parameter's .grad or optimizer state. So lifetimes follow from the model instead of being listed.
// Those rules live in workloads/eager_autograd.h, shared with the cnn generator; this file holds the
// transformer's operators, the autocast cache, activation checkpointing, the model and the loop.
//
// Invariants:
// - Deterministic: no randomness; the same options give the same trace.
// - Every event is valid and the trace ends with nothing live (teardown frees weights, .grad,
//   optimizer state, the RoPE table and the cuBLAS workspace).
// - Every size is a product of the model dimensions and an element size (4 fp32, 2 bf16/fp16,
//   8 int64 indices, 1 bool masks); flash-attention's backward scratch rounds s and d as
//   flash_api.cpp does. No other rounding: the allocator under test does its own.
// - A block's holder count never goes below zero and reaches zero exactly once (at its free).
#include "workloads/transformer_generator.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "workloads/eager_autograd.h"
#include "workloads/trace_event.h"

namespace tiermark {
namespace {

// ---------------------------------------------------------------------------------------------
// Options and presets

// The defaults are the cs336-2.7b model (the preset below), so `transformer` alone is the workload
// whose real PyTorch snapshots shared/REFERENCE.md section 1 describes.
const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> kSpecs = {
      {"mode", OptionType::kChoice, "train",
       "train: forward, backward and optimizer per step; inference: forward passes under torch.no_grad",
       {"train", "inference"}},
      {"steps", OptionType::kCount, "2", "training steps (mode=train) or forward passes (mode=inference)"},
      // The batch.
      {"b", OptionType::kCount, "4", "batch: sequences per step"},
      {"s", OptionType::kCount, "128", "sequence length in tokens"},
      // The model.
      {"h", OptionType::kCount, "2560", "hidden size d_model (a multiple of a)"},
      {"a", OptionType::kCount, "32", "attention heads; head size d = h/a"},
      {"a_kv", OptionType::kCount, "0", "key/value heads (grouped-query attention; divides a); 0 means a"},
      {"f", OptionType::kCount, "10240",
       "FFN width; 0 means 4h for mlp=gelu, and for mlp=swiglu 8h/3 rounded down then up to a multiple of 256 "
       "(Meta's Llama model.py, multiple_of=256: 11008 for h=4096)"},
      {"L", OptionType::kCount, "32", "transformer layers"},
      {"V", OptionType::kCount, "10000", "vocabulary size"},
      {"positions", OptionType::kCount, "0",
       "rows of the learned position table (rope=false) or the RoPE cos/sin table (rope=true); 0 means s"},
      {"dtype", OptionType::kChoice, "fp32", "element type of weights, gradients, optimizer state and activations",
       {"fp32", "bf16", "fp16"}},
      {"autocast", OptionType::kBool, "false",
       "bf16 autocast over fp32 weights (needs dtype=fp32): a bf16 copy of every weight is cached during forward; "
       "matmul inputs are cast to bf16 and their outputs are bf16; norms, softmax and the loss run in fp32"},
      {"norm", OptionType::kChoice, "rmsnorm",
       "rmsnorm (the CS336/Llama eager RMSNorm: fp32 square, mean, rsqrt, two multiplies) or layernorm "
       "(the fused native_layer_norm kernel with fp32 mean and rstd)",
       {"rmsnorm", "layernorm"}},
      {"mlp", OptionType::kChoice, "swiglu",
       "swiglu (w_down(silu(w_up x) * w_gate x), silu as x*sigmoid(x)) or gelu (w_down(gelu(w_up x)))",
       {"swiglu", "gelu"}},
      {"attention", OptionType::kChoice, "unfused",
       "unfused (scores, scaled, masked and softmax tensors of b*a*s*s elements) or flash (one fused kernel "
       "keeping b*a*s fp32 log-sum-exp values)",
       {"unfused", "flash"}},
      {"rope", OptionType::kBool, "true",
       "rotary position embedding on queries and keys (CS336 RotaryEmbedding); false: a learned position table"},
      {"causal", OptionType::kBool, "true", "causal mask (decoders); false for bidirectional encoders such as BERT"},
      {"bias", OptionType::kBool, "false", "biases in every linear layer and LayerNorm (GPT-2, BERT)"},
      {"tie_embeddings", OptionType::kBool, "false", "the LM head reuses the token embedding matrix (GPT-2, BERT)"},
      {"dropout", OptionType::kBool, "false",
       "dropout on embeddings, attention probabilities and both residual branches in training (a bool mask each)"},
      // The training loop.
      {"recompute", OptionType::kChoice, "none",
       "none, or full: activation checkpointing of every layer (torch.utils.checkpoint, use_reentrant=False): "
       "forward keeps only layer inputs, backward recomputes the layer then runs its backward",
       {"none", "full"}},
      {"optimizer", OptionType::kChoice, "adamw",
       "adamw (torch.optim.AdamW, foreach: exp_avg and exp_avg_sq created at the first step, one sqrt temporary "
       "per parameter each step), sgd (momentum buffer cloned from the first gradient) or none",
       {"adamw", "sgd", "none"}},
      {"foreach", OptionType::kBool, "true",
       "the optimizer's multi-tensor (foreach) implementation, PyTorch's default for CUDA tensors: AdamW's sqrt "
       "temporaries exist for every parameter at once; false: the per-parameter loop (_single_tensor_adam), whose "
       "sqrt and denominator temporaries live one parameter at a time"},
      {"zero_grad", OptionType::kChoice, "none",
       "after each optimizer step: none (set_to_none, the PyTorch 2 default: gradients are freed and recreated "
       "by the next backward) or keep (zeroed in place: gradients persist across steps)",
       {"none", "keep"}},
      {"cublas_workspace", OptionType::kSize, "8519680",
       "cuBLAS workspace allocated at the first matmul: 8519680 B before Hopper, 32MiB on Hopper "
       "(shared/REFERENCE.md 5); 0 for none"},
  };
  return kSpecs;
}

// Every number names its source. GPT-2 small: Radford et al. 2019, Table 2 (12 layers, d_model 768)
// and the Hugging Face `gpt2` config.json (n_head 12, n_positions 1024, vocab_size 50257, GELU,
// dropout 0.1, LM head tied to wte); batch 12 is nanoGPT's train.py default for GPT-2 124M.
// BERT-base: Devlin et al. 2019, section 3 and appendix A.2 (L=12, H=768, A=12, FFN 4H, GELU,
// dropout 0.1, sequence length 128 for 90% of pre-training, 256 sequences per batch: 32 per device on
// 8 devices) and the `bert-base-uncased` config.json (vocab_size 30522, 512 positions); the MLM
// decoder shares the word embeddings. Llama 2 7B: Touvron et al. 2023, Table 1 (context 4096) and
// meta-llama/Llama-2-7b-hf config.json (hidden 4096, intermediate 11008, 32 layers, 32 heads,
// vocab 32000, untied). Llama 3 8B: the Meta Llama 3 model card (8B, GQA, 8K context, 128K vocabulary)
// and meta-llama/Meta-Llama-3-8B config.json (hidden 4096, intermediate 14336, 32 layers, 32 heads,
// 8 key/value heads, vocab 128256, 8192 positions). Both Llamas train in bf16 with SDPA's flash kernel
// (transformers' default attn_implementation=sdpa). cs336-2.7b: the Stanford CS336 assignment 2
// model-size table (2.7B: d_model 2560, d_ff 10240, 32 layers, 32 heads), vocabulary 10000, batch 4,
// context 128, fp32 and unfused attention: the measured runs of shared/REFERENCE.md section 1.
constexpr std::array<WorkloadPreset, 5> kPresets = {{
    {"gpt2-small", "GPT-2 small (124M): LayerNorm, GELU, learned positions, biases, tied head, dropout; fp32",
     "b=12,s=1024,h=768,a=12,a_kv=0,f=3072,L=12,V=50257,positions=1024,dtype=fp32,norm=layernorm,mlp=gelu,"
     "attention=unfused,rope=false,causal=true,bias=true,tie_embeddings=true,dropout=true"},
    {"bert-base", "BERT-base (110M) encoder: bidirectional, LayerNorm, GELU, learned positions, biases, dropout; fp32",
     "b=32,s=128,h=768,a=12,a_kv=0,f=3072,L=12,V=30522,positions=512,dtype=fp32,norm=layernorm,mlp=gelu,"
     "attention=unfused,rope=false,causal=false,bias=true,tie_embeddings=true,dropout=true"},
    {"llama2-7b", "Llama 2 7B: RMSNorm, RoPE, SwiGLU, 4096 context; bf16 with flash attention",
     "b=1,s=4096,h=4096,a=32,a_kv=0,f=11008,L=32,V=32000,positions=4096,dtype=bf16,norm=rmsnorm,mlp=swiglu,"
     "attention=flash,rope=true,causal=true,bias=false,tie_embeddings=false,dropout=false"},
    {"llama3-8b", "Llama 3 8B: grouped-query attention (8 KV heads), 128K vocabulary, 8192 context; bf16 with flash",
     "b=1,s=8192,h=4096,a=32,a_kv=8,f=14336,L=32,V=128256,positions=8192,dtype=bf16,norm=rmsnorm,mlp=swiglu,"
     "attention=flash,rope=true,causal=true,bias=false,tie_embeddings=false,dropout=false"},
    {"cs336-2.7b", "The CS336 2.7B model of the measured PyTorch snapshots: fp32, unfused attention, batch 4, "
     "context 128",
     "b=4,s=128,h=2560,a=32,a_kv=0,f=10240,L=32,V=10000,positions=0,dtype=fp32,norm=rmsnorm,mlp=swiglu,"
     "attention=unfused,rope=true,causal=true,bias=false,tie_embeddings=false,dropout=false"},
}};

// ---------------------------------------------------------------------------------------------
// Configuration

enum class Optimizer { kAdamW, kSgd, kNone };

struct Config {
  bool train = true;
  std::uint64_t steps = 0, b = 0, s = 0, h = 0, a = 0, kv = 0, d = 0, f = 0, L = 0, V = 0, positions = 0;
  std::uint32_t p = 4;  // bytes per element of dtype
  std::string dtype;
  bool autocast = false, layernorm = false, swiglu = true, flash = false, rope = true, causal = true;
  bool bias = false, tie = false, dropout = false, recompute = false, keep_grads = false, foreach = true;
  Optimizer optimizer = Optimizer::kAdamW;
  std::uint64_t workspace = 0;
};

std::uint64_t swiglu_width(std::uint64_t h) {
  // llama/model.py FeedForward: hidden = int(2 * (4h) / 3), then multiple_of * ceil(hidden / multiple_of)
  // with multiple_of = 256.
  const std::uint64_t hidden = 8 * h / 3;
  return (hidden + 255) / 256 * 256;
}

std::uint64_t round_up(std::uint64_t x, std::uint64_t m) { return (x + m - 1) / m * m; }

// The product, or nullopt when it overflows 64 bits.
std::optional<std::uint64_t> product(std::initializer_list<std::uint64_t> factors) {
  std::uint64_t result = 1;
  for (std::uint64_t factor : factors) {
    if (__builtin_mul_overflow(result, factor, &result)) return std::nullopt;
  }
  return result;
}

Config read_config(const Options& options) {
  Config c;
  c.train = options.choice("mode") == "train";
  auto positive = [&](const char* key) {
    const std::uint64_t value = options.count(key);
    if (value == 0) options.reject(key, "must be at least 1");
    // 2^32 bounds every dimension far above any real model, so the products below stay meaningful.
    if (value > (std::uint64_t{1} << 32)) options.reject(key, "must be at most 2^32");
    return value;
  };
  c.steps = positive("steps");
  c.b = positive("b");
  c.s = positive("s");
  c.h = positive("h");
  c.a = positive("a");
  c.L = positive("L");
  c.V = positive("V");
  if (c.h % c.a != 0) options.reject("a", "must divide h=" + std::to_string(c.h));
  c.d = c.h / c.a;
  c.kv = options.count("a_kv") == 0 ? c.a : options.count("a_kv");
  if (c.kv > c.a || c.a % c.kv != 0) options.reject("a_kv", "must divide a=" + std::to_string(c.a));
  c.dtype = options.choice("dtype");
  c.p = c.dtype == "fp32" ? 4 : 2;
  c.autocast = options.flag("autocast");
  if (c.autocast && c.dtype != "fp32") options.reject("autocast", "needs dtype=fp32 (autocast keeps fp32 weights)");
  c.layernorm = options.choice("norm") == "layernorm";
  c.swiglu = options.choice("mlp") == "swiglu";
  c.flash = options.choice("attention") == "flash";
  c.rope = options.flag("rope");
  c.causal = options.flag("causal");
  c.bias = options.flag("bias");
  c.tie = options.flag("tie_embeddings");
  c.dropout = options.flag("dropout");
  c.recompute = options.choice("recompute") == "full";
  if (c.recompute && !c.train) options.reject("recompute", "only applies to mode=train");
  const std::string& optimizer = options.choice("optimizer");
  c.optimizer = optimizer == "adamw" ? Optimizer::kAdamW : optimizer == "sgd" ? Optimizer::kSgd : Optimizer::kNone;
  c.keep_grads = options.choice("zero_grad") == "keep";
  c.foreach = options.flag("foreach");
  c.workspace = options.size("cublas_workspace");
  if (c.workspace > kMaxTraceSize) options.reject("cublas_workspace", "is above the largest trace block (2^56 B)");
  c.f = options.count("f");
  if (c.f == 0) c.f = c.swiglu ? swiglu_width(c.h) : 4 * c.h;
  if (c.f > (std::uint64_t{1} << 34)) options.reject("f", "must be at most 2^34");
  c.positions = options.count("positions") == 0 ? c.s : options.count("positions");
  if (c.positions < c.s) options.reject("positions", "must be at least s=" + std::to_string(c.s));
  if (c.rope && c.d % 2 != 0) options.reject("a", "rope needs an even head size h/a, got " + std::to_string(c.d));
  if (c.flash && c.d > 256) {
    options.reject("attention", "flash supports head sizes up to 256, got " + std::to_string(c.d));
  }

  // Every block must fit a trace block (2^56 B), checked exactly on the largest of each kind; the
  // live total must fit 64 bits, checked on a generous bound (weights, gradients, two optimizer
  // states and the Adam temporaries, plus 64 of the largest activations per layer).
  struct Check {
    const char* key;
    std::optional<std::uint64_t> bytes;
    const char* what;
  };
  const Check checks[] = {
      {"s", c.flash ? product({c.b, c.a, c.s, 4}) : product({c.b, c.a, c.s, c.s, 4}), "attention tensors"},
      {"s", product({c.b, round_up(c.s, 128), c.a, round_up(c.d, 64), 4}), "flash scratch"},
      {"V", product({c.b, c.s, c.V, 4}), "fp32 logits b*s*V*4"},
      {"f", product({c.b, c.s, c.f, 4}), "FFN activations b*s*f*4"},
      {"V", product({c.V, c.h, 4}), "embedding V*h*4"},
      {"f", product({c.h, c.f, 4}), "FFN weights h*f*4"},
      {"h", product({c.h, c.h, 4}), "attention weights h*h*4"},
      {"positions", product({c.positions, c.h, 4}), "position table"},
  };
  long double largest = 0;
  for (const Check& check : checks) {
    if (!check.bytes || *check.bytes > kMaxTraceSize) {
      options.reject(check.key, std::string("makes the ") + check.what + " larger than a trace block (2^56 B)");
    }
    largest = std::max(largest, static_cast<long double>(*check.bytes));
  }
  const long double h = static_cast<long double>(c.h), layers = static_cast<long double>(c.L);
  const long double parameters = 2.0L * static_cast<long double>(c.V) * h + static_cast<long double>(c.positions) * h +
                                 layers * (4 * h * h + 3 * h * static_cast<long double>(c.f) + 8 * h);
  if (5 * 4 * parameters + (layers + 2) * 64 * largest > 0x1p62L) {
    options.reject("L", "makes the live bytes of the trace overflow 64 bits");
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Eager: the transformer's operators over the shared eager-framework core (eager_autograd.h owns
// blocks, tensors, views, nodes and the backward engine); here live the operators, the autocast
// weight cache and the bookkeeping of activation checkpointing.

using Tid = EagerAutograd::TensorId;
constexpr Tid kNoTensor = EagerAutograd::kNoTensor;
constexpr int kNone = EagerAutograd::kNoBlock;  // no block; also no parameter
using Delivery = EagerAutograd::Delivery;
// The layout mark of a (b, s, heads, d) storage viewed as (b, heads, s, d).
constexpr int kHeadsLayout = 1;

class Eager : public EagerAutograd {
 public:
  Eager(TraceBuilder& builder, bool autocast, std::uint64_t workspace_bytes)
      : EagerAutograd(builder, workspace_bytes), autocast_(autocast) {}

  // --- Modes. Grad mode records nodes and saves tensors; a checkpointed forward tracks which tensors
  // would need gradients and which operator saves last, without saving; a recompute replays it and
  // stops materialising after that operator (non-reentrant checkpoint's early stop).
  void begin_checkpointed_forward() {
    set_recording(false);
    set_tracking(true);
    counting_ = true;
    op_index_ = last_saving_op_ = 0;
    last_saves_output_ = false;
  }
  std::pair<std::uint64_t, bool> end_checkpointed_forward() {
    counting_ = false;
    set_recording(true);
    return {last_saving_op_, last_saves_output_};
  }
  void begin_recompute(std::pair<std::uint64_t, bool> stop) {
    set_grad(true);
    replaying_ = true;
    op_index_ = 0;
    last_saving_op_ = stop.first;
    last_saves_output_ = stop.second;
  }
  void end_recompute() { replaying_ = false; }

  // --- Tensors. A tensor returned by an operator carries one holder for the caller's Python
  // variable; drop() is that variable going away.
  Tid input(const std::string& tag, std::uint64_t elems, std::uint32_t eb) {
    return make(tag, elems, eb, false, begin_op(false, false));
  }

  // --- The autocast weight cache
  // The weight a matmul uses: the parameter, or under autocast its bf16 copy, cast once per forward
  // and cached until the autocast region ends (autocast_mode.cpp caches casts of leaf tensors that
  // require grad).
  Tid weight(int p) {
    if (!autocast_) return param_tensor(p);
    if (casts_.size() < param_count()) casts_.resize(param_count(), kNoTensor);
    Tid& cached = casts_[static_cast<std::size_t>(p)];
    if (cached == kNoTensor) cached = cast(param_tensor(p), 2, tag(param_tensor(p)) + ".bf16");
    return cached;
  }
  void clear_autocast_cache() {
    for (Tid& cached : casts_) {
      drop(cached);
      cached = kNoTensor;
    }
  }

  // --- Operators. Each allocates its outputs in the order the ATen kernel does and, in grad mode,
  // records a node whose backward follows the derivative formula in PyTorch's derivatives.yaml.

  // x.to(dtype) and autocast casts. Backward: the gradient cast back (_to_copy_backward).
  Tid cast(Tid x, std::uint32_t to_eb, const std::string& out_tag) {
    const bool rg = needs_grad({x});
    const Tid out = make(out_tag, elems(x), to_eb, rg, begin_op(false, false));
    set_layout(out, layout(x));  // preserve_format keeps a permuted layout
    record({x}, {out}, {}, [this, x](std::vector<int>&) {
      return std::vector<Delivery>{give(x, grad_alloc(x, elems(x), eb(x)))};
    });
    return out;
  }
  // .contiguous() / the copy reshape makes of a non-viewable tensor. Backward: a view of the
  // gradient, except for the merge of heads (transpose(1, 2).contiguous() of a bmm output): there
  // the gradient comes back transposed and bmm's reshape of it is a copy.
  Tid copy(Tid x, const std::string& out_tag, bool backward_copies = false) {
    const bool rg = needs_grad({x});
    const Tid out = make(out_tag, elems(x), eb(x), rg, begin_op(false, false));
    record({x}, {out}, {}, [this, x, backward_copies](std::vector<int>& g) {
      if (backward_copies) return std::vector<Delivery>{give(x, grad_alloc(x, elems(x), eb(x)))};
      return std::vector<Delivery>{alias(x, g[0], elems(x), eb(x))};
    });
    return out;
  }
  // view(b, s, heads, d).transpose(1, 2): no memory. Backward: the gradient arrives laid out as
  // (b, heads, s, d) and viewing it back as (b, s, h) needs a copy.
  Tid heads_view(Tid x) {
    const Tid out = view(x, tag(x), elems(x), needs_grad({x}));
    set_layout(out, kHeadsLayout);
    begin_op(false, false);
    record({x}, {out}, {}, [this, x](std::vector<int>&) {
      return std::vector<Delivery>{give(x, grad_alloc(x, elems(x), eb(x)))};
    });
    return out;
  }
  // F.linear: y = x W^T (+ bias) through mm/addmm. Saves its input and weight (after any autocast
  // cast). Backward: grad input, grad weight, then grad bias (the sum over rows).
  Tid linear(Tid x, int w, int bias, std::uint64_t out_features, const std::string& out_tag) {
    Tid xin = x;
    if (autocast_ && eb(x) == 4) xin = cast(x, 2, tag(x) + ".bf16");
    const Tid win = weight(w);
    const Tid bin = bias == kNone ? kNoTensor : weight(bias);
    const bool rg = needs_grad({xin, win, bin});
    const bool materialise = begin_op(rg, false);
    const std::uint64_t rows = elems(xin) / (elems(win) / out_features);
    const Tid out = make(out_tag, rows * out_features, eb(win), rg, materialise);
    if (materialise) ensure_cublas_workspace();
    record({bin, xin, win}, {out}, {xin, win}, [this, xin, win, bin, rows, out_features](std::vector<int>& g) {
      std::vector<Delivery> to;
      const int gx = has_grad(xin) ? grad_alloc(xin, elems(xin), eb(xin)) : kNone;
      const int gw = grad_alloc(win, elems(win), eb(win));
      if (bin != kNoTensor) to.push_back(alias(bin, g[0], rows * out_features, eb(win)));
      if (gx != kNone) to.push_back(give(xin, gx));
      to.push_back(give(win, gw));
      return to;
    });
    if (xin != x) drop(xin);
    return out;
  }
  // torch.matmul of two activations (q k^T, probabilities v) through bmm. Under autocast fp32
  // operands are cast to bf16; an operand in heads layout is copied by matmul's reshape. The copies
  // live until the matmul returns. Saves both bmm operands; backward: one gradient each.
  Tid matmul(Tid a, Tid b, std::uint64_t out_elems, const std::string& out_tag) {
    std::vector<Tid> temps;
    const Tid a2 = operand(a, temps), b2 = operand(b, temps);
    const bool rg = needs_grad({a2, b2});
    const bool materialise = begin_op(rg, false);
    const Tid out = make(out_tag, out_elems, eb(a2), rg, materialise);
    if (materialise) ensure_cublas_workspace();
    record({a2, b2}, {out}, {a2, b2}, [this, a2, b2](std::vector<int>&) {
      std::vector<Delivery> to;
      const int ga = has_grad(a2) ? grad_alloc(a2, elems(a2), eb(a2)) : kNone;
      const int gb = has_grad(b2) ? grad_alloc(b2, elems(b2), eb(b2)) : kNone;
      if (ga != kNone) to.push_back(give(a2, ga));
      if (gb != kNone) to.push_back(give(b2, gb));
      return to;
    });
    for (Tid t : temps) drop(t);
    return out;
  }
  // a * b with broadcasting and type promotion. Saves b when a needs a gradient and a when b does;
  // backward: grad*b and grad*a at the output's size, reduced and cast by the engine.
  Tid mul(Tid a, Tid b, const std::string& out_tag) {
    const bool ra = tracked_grad(a), rb = tracked_grad(b);
    const bool rg = tracking() && (ra || rb);
    const std::uint64_t n = std::max(elems(a), elems(b));
    const std::uint32_t e = std::max(eb(a), eb(b));
    const Tid out = make(out_tag, n, e, rg, begin_op(rg, false));
    std::vector<Tid> saved;
    if (ra) saved.push_back(b);
    if (rb) saved.push_back(a);
    record({a, b}, {out}, saved, [this, a, b, ra, rb, n, e](std::vector<int>&) {
      std::vector<Delivery> to;
      const int ga = ra ? grad_alloc(a, n, e) : kNone;
      const int gb = rb ? grad_alloc(b, n, e) : kNone;
      if (ra) to.push_back({a, ga, n, e});
      if (rb) to.push_back({b, gb, n, e});
      return to;
    });
    return out;
  }
  // a + b (same shape or b broadcast). Saves nothing; backward hands the gradient to both.
  Tid add(Tid a, Tid b, const std::string& out_tag) {
    const bool rg = needs_grad({a, b});
    const std::uint64_t n = std::max(elems(a), elems(b));
    const std::uint32_t e = std::max(eb(a), eb(b));
    const Tid out = make(out_tag, n, e, rg, begin_op(false, false));
    record({a, b}, {out}, {}, [this, a, b, n, e](std::vector<int>& g) {
      std::vector<Delivery> to;
      if (has_grad(a)) to.push_back(alias(a, g[0], n, e));
      if (has_grad(b)) to.push_back(alias(b, g[0], n, e));
      return to;
    });
    return out;
  }
  // a - b. Backward: the gradient to a, its negation (a new tensor) to b.
  Tid sub(Tid a, Tid b, const std::string& out_tag) {
    const bool rg = needs_grad({a, b});
    const Tid out = make(out_tag, elems(a), eb(a), rg, begin_op(false, false));
    record({a, b}, {out}, {}, [this, a, b](std::vector<int>& g) {
      std::vector<Delivery> to;
      if (has_grad(a)) to.push_back(alias(a, g[0], elems(a), eb(a)));
      if (has_grad(b)) to.push_back(give(b, grad_alloc(b, elems(b), eb(b))));
      return to;
    });
    return out;
  }
  // x / scalar. Backward: grad / scalar.
  Tid scale(Tid x, const std::string& out_tag) { return unary(x, out_tag, elems(x), false, false, 1); }
  // x + scalar. Backward: the gradient itself.
  Tid add_scalar(Tid x, const std::string& out_tag) {
    const bool rg = needs_grad({x});
    const Tid out = make(out_tag, elems(x), eb(x), rg, begin_op(false, false));
    record({x}, {out}, {}, [this, x](std::vector<int>& g) {
      return std::vector<Delivery>{alias(x, g[0], elems(x), eb(x))};
    });
    return out;
  }
  // x.pow(2). Saves x; backward pow_backward: grad * (2 * x.pow(1)), two temporaries.
  Tid square(Tid x, const std::string& out_tag) { return unary(x, out_tag, elems(x), true, false, 3); }
  // x.mean(-1, keepdim=True) over rows of `width`. Backward: grad.expand(...) / width.
  Tid mean_rows(Tid x, std::uint64_t width, const std::string& out_tag) {
    return unary(x, out_tag, elems(x) / width, false, false, 1);
  }
  // torch.rsqrt. Saves its result; backward -0.5 * grad * result.pow(3), two temporaries.
  Tid rsqrt(Tid x, const std::string& out_tag) { return unary(x, out_tag, elems(x), false, true, 3); }
  // torch.sigmoid. Saves its result; backward sigmoid_backward.
  Tid sigmoid(Tid x, const std::string& out_tag) { return unary(x, out_tag, elems(x), false, true, 1); }
  // F.gelu. Saves its input; backward gelu_backward.
  Tid gelu(Tid x, const std::string& out_tag) { return unary(x, out_tag, elems(x), true, false, 1); }
  // torch.softmax / log_softmax over the last dimension, in fp32 under autocast (the cast is an
  // operator of its own). Saves its result; backward _softmax_backward_data.
  Tid softmax(Tid x, const std::string& out_tag) {
    const Tid in = autocast_ && eb(x) != 4 ? cast(x, 4, tag(x) + ".fp32") : x;
    const Tid out = unary(in, out_tag, elems(in), false, true, 1);
    if (in != x) drop(in);
    return out;
  }
  // torch.where(mask, x, -inf). Saves the mask; backward where(mask, grad, 0).
  Tid where(Tid mask, Tid x, const std::string& out_tag) {
    const bool rg = needs_grad({x});
    const Tid out = make(out_tag, elems(x), eb(x), rg, begin_op(rg, false));
    record({x}, {out}, {mask}, [this, x](std::vector<int>&) {
      return std::vector<Delivery>{give(x, grad_alloc(x, elems(x), eb(x)))};
    });
    return out;
  }
  // native_dropout: the output, then a bool mask (an output that is saved). Backward: grad * mask * scale.
  Tid dropout(Tid x, const std::string& out_tag) {
    const bool rg = needs_grad({x});
    const bool materialise = begin_op(false, rg);
    const Tid out = make(out_tag, elems(x), eb(x), rg, materialise);
    const Tid mask = make(out_tag + ".mask", elems(x), 1, false, materialise);
    record({x}, {out, mask}, {mask}, [this, x](std::vector<int>&) {
      return std::vector<Delivery>{give(x, grad_alloc(x, elems(x), eb(x)))};
    });
    drop(mask);
    return out;
  }
  // native_layer_norm: output, then fp32 mean and rstd per row. Saves input, weight, bias, mean and
  // rstd; backward native_layer_norm_backward: grad input, grad weight, grad bias.
  Tid layer_norm(Tid x, int w, int bias, std::uint64_t width, const std::string& prefix) {
    const Tid wt = param_tensor(w);
    const Tid bt = bias == kNone ? kNoTensor : param_tensor(bias);
    const bool rg = needs_grad({x, wt, bt});
    const bool materialise = begin_op(rg, rg);
    const Tid out = make(prefix + ".out", elems(x), eb(x), rg, materialise);
    const Tid mean = make(prefix + ".mean", elems(x) / width, 4, false, materialise);
    const Tid rstd = make(prefix + ".rstd", elems(x) / width, 4, false, materialise);
    record({x, wt, bt}, {out}, {x, wt, bt, mean, rstd}, [this, x, wt, bt](std::vector<int>&) {
      std::vector<Delivery> to;
      const int gx = has_grad(x) ? grad_alloc(x, elems(x), eb(x)) : kNone;
      const int gw = grad_alloc(wt, elems(wt), eb(wt));
      const int gb = bt == kNoTensor ? kNone : grad_alloc(bt, elems(bt), eb(bt));
      if (gx != kNone) to.push_back(give(x, gx));
      to.push_back(give(wt, gw));
      if (gb != kNone) to.push_back(give(bt, gb));
      return to;
    });
    drop(mean);
    drop(rstd);
    return out;
  }
  // weight[ids] (embedding lookup). Saves the indices; backward: a zeroed weight-sized gradient with
  // the rows accumulated into it (index_put_ / embedding_dense_backward).
  Tid embedding(int w, Tid ids, std::uint64_t width, const std::string& out_tag) {
    const Tid wt = param_tensor(w);
    const bool rg = needs_grad({wt});
    const Tid out = make(out_tag, elems(ids) * width, eb(wt), rg, begin_op(rg, false));
    record({wt}, {out}, {ids}, [this, wt](std::vector<int>&) {
      return std::vector<Delivery>{give(wt, grad_alloc(wt, elems(wt), eb(wt)))};
    });
    return out;
  }
  // nll_loss(log_probs, targets), mean reduction: the loss and total_weight (fp32 scalars). Saves
  // log_probs, targets and total_weight; backward: a zeroed log_probs-sized gradient.
  Tid nll_loss(Tid log_probs, Tid targets) {
    const bool rg = needs_grad({log_probs});
    const bool materialise = begin_op(rg, rg);
    const Tid loss = make("loss", 1, 4, rg, materialise);
    const Tid total_weight = make("loss.total_weight", 1, 4, false, materialise);
    record({log_probs}, {loss}, {log_probs, targets, total_weight}, [this, log_probs](std::vector<int>&) {
      return std::vector<Delivery>{give(log_probs, grad_alloc(log_probs, elems(log_probs), eb(log_probs)))};
    });
    drop(total_weight);
    return loss;
  }
  // The two interleaved halves of a head vector as views (CS336 RoPE: rearrange '... (half xy) ->
  // xy ... half' and unpack). Backward: unbind_backward stacks the two gradients (a new tensor) and
  // viewing the stack back as (..., d) is a copy, since the pair axis is outermost in the stack.
  std::pair<Tid, Tid> halves(Tid x) {
    const bool rg = needs_grad({x});
    begin_op(false, false);
    const Tid x1 = view(x, tag(x), elems(x) / 2, rg), x2 = view(x, tag(x), elems(x) / 2, rg);
    record({x}, {x1, x2}, {}, [this, x](std::vector<int>& g) {
      const int stacked = temp_alloc(x, elems(x), eb(x));
      if (g[0] == kNone || g[1] == kNone) throw std::logic_error("transformer: a RoPE half got no gradient");
      const int grad = grad_alloc(x, elems(x), eb(x));
      unref(stacked);
      return std::vector<Delivery>{give(x, grad)};
    });
    return {x1, x2};
  }
  // Stacks two halves back into one head vector (einx.rearrange of the two rotated halves).
  // Backward: views of the gradient.
  Tid stack(Tid a, Tid b, const std::string& out_tag) {
    const bool rg = needs_grad({a, b});
    const Tid out = make(out_tag, elems(a) + elems(b), std::max(eb(a), eb(b)), rg, begin_op(false, false));
    record({a, b}, {out}, {}, [this, a, b, out](std::vector<int>& g) {
      return std::vector<Delivery>{alias(a, g[0], elems(a), eb(out)), alias(b, g[0], elems(b), eb(out))};
    });
    return out;
  }
  // repeat_kv (Hugging Face Llama): expand the KV heads to all heads and reshape, which copies.
  // Backward: expand's backward sums the groups into a KV-sized gradient.
  Tid repeat_heads(Tid x, std::uint64_t out_elems, const std::string& out_tag) {
    const bool rg = needs_grad({x});
    const Tid out = make(out_tag, out_elems, eb(x), rg, begin_op(false, false));
    record({x}, {out}, {}, [this, x, out_elems](std::vector<int>& g) {
      return std::vector<Delivery>{alias(x, g[0], out_elems, eb(x))};
    });
    return out;
  }
  // _scaled_dot_product_flash_attention: output (laid out (b, s, heads, d), so the model's merge of
  // heads is a view) and fp32 log-sum-exp b*a*s. Saves q, k, v, output and log-sum-exp. Backward
  // (flash_api.cpp mha_bwd): dq, dk, dv, fp32 softmax_d [b, a, s rounded to 128] and dq_accum
  // [b, s rounded to 128, a, d rounded to 32 (64 above 128)], for grouped-query attention dk and dv
  // expanded to all heads; the scratch is freed as mha_bwd returns.
  struct FlashDims {
    std::uint64_t b, s, a, d;
  };
  Tid flash(Tid q, Tid k, Tid v, FlashDims dims, const std::string& prefix) {
    std::vector<Tid> temps;
    auto low = [&](Tid t) {
      if (!autocast_ || eb(t) != 4) return t;
      temps.push_back(cast(t, 2, tag(t) + ".bf16"));
      return temps.back();
    };
    const Tid q2 = low(q), k2 = low(k), v2 = low(v);
    const bool rg = needs_grad({q2, k2, v2});
    const bool materialise = begin_op(rg, rg);
    const Tid out = make(prefix, elems(q2), eb(q2), rg, materialise);
    const Tid lse = make(prefix + ".lse", dims.b * dims.a * dims.s, 4, false, materialise);
    record({q2, k2, v2}, {out}, {q2, k2, v2, out, lse}, [this, q2, k2, v2, dims, prefix](std::vector<int>&) {
      const int dq = grad_alloc(q2, elems(q2), eb(q2));
      const int dk = grad_alloc(k2, elems(k2), eb(k2));
      const int dv = grad_alloc(v2, elems(v2), eb(v2));
      const std::uint64_t s_rounded = round_up(dims.s, 128);
      const std::uint64_t d_rounded = round_up(round_up(dims.d, 8), round_up(dims.d, 8) <= 128 ? 32 : 64);
      const int softmax_d = alloc(dims.b * dims.a * s_rounded * 4, prefix + ".softmax_d");
      const int dq_accum = alloc(dims.b * s_rounded * dims.a * d_rounded * 4, prefix + ".dq_accum");
      if (elems(k2) != elems(q2)) {
        const int dk_expanded = alloc(elems(q2) * eb(k2), prefix + ".dk_expanded");
        const int dv_expanded = alloc(elems(q2) * eb(v2), prefix + ".dv_expanded");
        unref(dv_expanded);
        unref(dk_expanded);
      }
      unref(dq_accum);
      unref(softmax_d);
      return std::vector<Delivery>{give(q2, dq), give(k2, dk), give(v2, dv)};
    });
    drop(lse);
    for (Tid t : temps) drop(t);
    return out;
  }
  // A node of its own whose backward is `backward` (activation checkpointing); saves `saved`.
  void record_custom(std::vector<Tid> outputs, std::vector<Tid> saved, Backward backward) {
    record({}, std::move(outputs), std::move(saved), std::move(backward));
  }
  // A view of x (same block, one more holder) that requires grad: the detached input a recompute
  // starts from.
  Tid detached(Tid x) { return view(x, tag(x), elems(x), true); }

 private:
  // An operator with one input and one output of `out_elems` elements, saving its input or its
  // result, whose backward allocates `backward_allocs` tensors of the input's size and frees all
  // but the last (the gradient), latest first (C++ temporaries die in reverse order).
  Tid unary(Tid x, const std::string& out_tag, std::uint64_t out_elems, bool saves_input, bool saves_result,
            int backward_allocs) {
    const bool rg = needs_grad({x});
    const Tid out = make(out_tag, out_elems, eb(x), rg, begin_op(rg && saves_input, rg && saves_result));
    std::vector<Tid> saved;
    if (saves_input) saved.push_back(x);
    if (saves_result) saved.push_back(out);
    record({x}, {out}, saved, [this, x, backward_allocs](std::vector<int>&) {
      std::vector<int> temps;
      for (int i = 1; i < backward_allocs; ++i) temps.push_back(temp_alloc(x, elems(x), eb(x)));
      const int grad = grad_alloc(x, elems(x), eb(x));
      for (auto it = temps.rbegin(); it != temps.rend(); ++it) unref(*it);
      return std::vector<Delivery>{give(x, grad)};
    });
    return out;
  }
  Tid operand(Tid x, std::vector<Tid>& temps) {
    Tid current = x;
    if (autocast_ && eb(current) == 4) {
      current = cast(current, 2, tag(x) + ".bf16");
      temps.push_back(current);
    }
    if (layout(current) == kHeadsLayout) {
      current = copy(current, tag(x) + ".heads");
      temps.push_back(current);
    }
    return current;
  }

  // Counts operators for the early stop of a recompute; false when the outputs of this operator are
  // past it and must not be materialised.
  bool begin_op(bool saves_inputs, bool saves_outputs) {
    ++op_index_;
    if (counting_ && (saves_inputs || saves_outputs)) {
      last_saving_op_ = op_index_;
      last_saves_output_ = saves_outputs;
    }
    if (!replaying_ || op_index_ < last_saving_op_) return true;
    return op_index_ == last_saving_op_ && last_saves_output_;
  }

  bool autocast_;
  bool counting_ = false, replaying_ = false;
  std::uint64_t op_index_ = 0, last_saving_op_ = 0;
  bool last_saves_output_ = false;
  std::vector<Tid> casts_;  // per parameter: autocast's cached bf16 copy
};

// ---------------------------------------------------------------------------------------------
// The model and the training loop

struct ParamSpec {
  std::string tag;
  std::uint64_t elems;
};

struct LayerParams {
  int attn_norm_w = kNone, attn_norm_b = kNone, wq = kNone, bq = kNone, wk = kNone, bk = kNone, wv = kNone,
      bv = kNone, wo = kNone, bo = kNone;
  int mlp_norm_w = kNone, mlp_norm_b = kNone, w_up = kNone, b_up = kNone, w_gate = kNone, b_gate = kNone,
      w_down = kNone, b_down = kNone;
};

class Transformer {
 public:
  Transformer(const Config& config, TraceBuilder& builder)
      : c_(config),
        builder_(builder),
        eager_(builder, config.autocast, config.workspace) {
    declare_params();
  }

  void generate() {
    set_metadata();
    builder_.phase("init");
    init();
    for (std::uint64_t step = 0; step < c_.steps; ++step) {
      if (c_.train) {
        train_step(step);
      } else {
        builder_.phase("forward");
        inference_pass();
      }
      eager_.truncate_tensors(first_activation_);
    }
    builder_.phase("teardown");
    teardown();
  }

 private:
  // model.parameters() order: embeddings, then per layer the attention norm and projections and the
  // MLP norm and projections (the GPT-2 module order), the final norm, the LM head.
  void declare_params() {
    auto add = [&](const std::string& tag, std::uint64_t elems) {
      specs_.push_back({tag, elems});
      return static_cast<int>(specs_.size() - 1);
    };
    const std::uint64_t h = c_.h, f = c_.f, kv = c_.kv * c_.d;
    wte_ = add("embed.wte", c_.V * h);
    if (!c_.rope) wpe_ = add("embed.wpe", c_.positions * h);
    for (std::uint64_t i = 0; i < c_.L; ++i) {
      const std::string prefix = "layer" + std::to_string(i) + ".";
      LayerParams lp;
      lp.attn_norm_w = add(prefix + "attn.norm.weight", h);
      if (c_.layernorm && c_.bias) lp.attn_norm_b = add(prefix + "attn.norm.bias", h);
      lp.wq = add(prefix + "attn.wq", h * h);
      if (c_.bias) lp.bq = add(prefix + "attn.bq", h);
      lp.wk = add(prefix + "attn.wk", kv * h);
      if (c_.bias) lp.bk = add(prefix + "attn.bk", kv);
      lp.wv = add(prefix + "attn.wv", kv * h);
      if (c_.bias) lp.bv = add(prefix + "attn.bv", kv);
      lp.wo = add(prefix + "attn.wo", h * h);
      if (c_.bias) lp.bo = add(prefix + "attn.bo", h);
      lp.mlp_norm_w = add(prefix + "mlp.norm.weight", h);
      if (c_.layernorm && c_.bias) lp.mlp_norm_b = add(prefix + "mlp.norm.bias", h);
      lp.w_up = add(prefix + "mlp.w_up", f * h);
      if (c_.bias) lp.b_up = add(prefix + "mlp.b_up", f);
      if (c_.swiglu) {
        lp.w_gate = add(prefix + "mlp.w_gate", f * h);
        if (c_.bias) lp.b_gate = add(prefix + "mlp.b_gate", f);
      }
      lp.w_down = add(prefix + "mlp.w_down", h * f);
      if (c_.bias) lp.b_down = add(prefix + "mlp.b_down", h);
      layers_.push_back(lp);
    }
    final_norm_w_ = add("final_norm.weight", h);
    if (c_.layernorm && c_.bias) final_norm_b_ = add("final_norm.bias", h);
    lm_head_ = c_.tie ? wte_ : add("lm_head", c_.V * h);
  }

  void set_metadata() {
    std::uint64_t count = 0;
    for (const ParamSpec& spec : specs_) count += spec.elems;
    const std::uint64_t bytes = count * c_.p;
    const std::uint64_t states = c_.optimizer == Optimizer::kAdamW ? 2 : c_.optimizer == Optimizer::kSgd ? 1 : 0;
    builder_.set_metadata("model.parameters", std::to_string(count));
    builder_.set_metadata("model.parameter_bytes", std::to_string(bytes));
    builder_.set_metadata("model.dtype", c_.dtype);
    builder_.set_metadata("model.layers", std::to_string(c_.L));
    builder_.set_metadata("model.hidden", std::to_string(c_.h));
    builder_.set_metadata("model.heads", std::to_string(c_.a));
    builder_.set_metadata("model.kv_heads", std::to_string(c_.kv));
    builder_.set_metadata("model.ffn", std::to_string(c_.f));
    builder_.set_metadata("model.vocab", std::to_string(c_.V));
    builder_.set_metadata("workload.mode", c_.train ? "train" : "inference");
    builder_.set_metadata("workload.steps", std::to_string(c_.steps));
    builder_.set_metadata("workload.batch", std::to_string(c_.b));
    builder_.set_metadata("workload.sequence", std::to_string(c_.s));
    builder_.set_metadata("workload.autocast", c_.autocast ? "bf16" : "none");
    builder_.set_metadata("optimizer.state_bytes", std::to_string(c_.train ? states * bytes : 0));
    builder_.set_metadata("device.cublas_workspace", std::to_string(c_.workspace));
  }

  void init() {
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      eager_.leaf(specs_[i].tag, specs_[i].elems, c_.p, true);
      // Module.to() moves children first: the RoPE cos/sin buffer follows the token embedding.
      if (i == 0 && c_.rope) rope_table_ = eager_.leaf("rope.cache", c_.positions * c_.d, c_.p, false);
    }
    first_activation_ = eager_.tensor_count();
  }

  void train_step(std::uint64_t step) {
    const std::string name = "step" + std::to_string(step);
    builder_.phase(name + ".forward");
    eager_.set_grad(true);
    const Tid inputs = eager_.input("batch.inputs", c_.b * c_.s, 8);
    const Tid targets = eager_.input("batch.targets", c_.b * c_.s, 8);
    const Tid logits = forward(inputs);
    // F.cross_entropy = log_softmax + nll_loss, on an fp32 copy of low-precision logits.
    const Tid logits32 = eager_.eb(logits) == 4 ? logits : eager_.cast(logits, 4, "logits.fp32");
    const Tid log_probs = eager_.softmax(logits32, "loss.log_probs");
    if (logits32 != logits) eager_.drop(logits32);
    const Tid loss = eager_.nll_loss(log_probs, targets);
    eager_.drop(log_probs);
    eager_.clear_autocast_cache();  // the autocast region ends after the loss

    builder_.phase(name + ".backward");
    eager_.seed(loss, eager_.alloc(4, "loss.grad"));
    eager_.run_backward(0);
    if (!eager_.all_gradients_delivered()) throw std::logic_error("transformer: a parameter missed its gradient");
    eager_.set_grad(false);
    // The loop's locals (`logits = model(x)`, `loss`) and the batch go when the step function returns.
    eager_.drop(logits);
    eager_.drop(loss);
    eager_.drop(inputs);
    eager_.drop(targets);

    builder_.phase(name + ".optimizer");
    optimizer_step();
    if (!c_.keep_grads) {
      for (std::size_t p = 0; p < eager_.param_count(); ++p) eager_.free_param_grad(static_cast<int>(p));
    }
  }

  void inference_pass() {
    eager_.set_grad(false);
    const Tid inputs = eager_.input("batch.inputs", c_.b * c_.s, 8);
    const Tid logits = forward(inputs);
    eager_.clear_autocast_cache();
    eager_.drop(logits);
    eager_.drop(inputs);
  }

  // torch.optim.AdamW (foreach, the default for CUDA tensors; torch/optim/adam.py _multi_tensor_adam):
  // _init_group creates exp_avg then exp_avg_sq per parameter at the first step (zeros_like); every
  // step _foreach_sqrt(exp_avg_sqs) allocates one temporary per parameter, all updated in place and
  // freed together when the list dies (CPython frees a list's items last to first). torch.optim.SGD
  // with momentum clones each gradient into a momentum buffer at the first step, in place after.
  void optimizer_step() {
    const std::size_t n = eager_.param_count();
    if (c_.optimizer == Optimizer::kNone) return;
    if (c_.optimizer == Optimizer::kSgd) {
      if (state_.empty()) {
        for (std::size_t p = 0; p < n; ++p) {
          const Tid t = eager_.param_tensor(static_cast<int>(p));
          state_.push_back(eager_.alloc(eager_.elems(t) * eager_.eb(t), "sgd.momentum." + eager_.tag(t)));
        }
      }
      return;
    }
    if (state_.empty()) {
      for (std::size_t p = 0; p < n; ++p) {
        const Tid t = eager_.param_tensor(static_cast<int>(p));
        const std::uint64_t bytes = eager_.elems(t) * eager_.eb(t);
        state_.push_back(eager_.alloc(bytes, "adam.exp_avg." + eager_.tag(t)));
        state_.push_back(eager_.alloc(bytes, "adam.exp_avg_sq." + eager_.tag(t)));
      }
    }
    if (!c_.foreach) {
      // torch/optim/adam.py _single_tensor_adam: `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt)
      // .add_(eps)` makes the sqrt, then the quotient, then drops the sqrt; the previous parameter's
      // denom dies only when the name is rebound, after the new one exists; the last at return.
      int previous = -1;
      for (std::size_t p = 0; p < n; ++p) {
        const Tid t = eager_.param_tensor(static_cast<int>(p));
        const std::uint64_t bytes = eager_.elems(t) * eager_.eb(t);
        const int sqrt_block = eager_.alloc(bytes, "adam.sqrt." + eager_.tag(t));
        const int denom = eager_.alloc(bytes, "adam.denom." + eager_.tag(t));
        eager_.unref(sqrt_block);
        if (previous >= 0) eager_.unref(previous);
        previous = denom;
      }
      if (previous >= 0) eager_.unref(previous);
      return;
    }
    std::vector<int> denominators;
    for (std::size_t p = 0; p < n; ++p) {
      const Tid t = eager_.param_tensor(static_cast<int>(p));
      denominators.push_back(eager_.alloc(eager_.elems(t) * eager_.eb(t), "adam.denom." + eager_.tag(t)));
    }
    for (auto it = denominators.rbegin(); it != denominators.rend(); ++it) eager_.unref(*it);
  }

  void teardown() {
    for (std::size_t p = 0; p < eager_.param_count(); ++p) eager_.free_param_grad(static_cast<int>(p));
    for (int block : state_) eager_.unref(block);
    state_.clear();
    for (std::size_t p = 0; p < eager_.param_count(); ++p) eager_.drop(eager_.param_tensor(static_cast<int>(p)));
    if (rope_table_ != kNoTensor) eager_.drop(rope_table_);
    eager_.free_cublas_workspace();
  }

  // --- Forward

  Tid forward(Tid inputs) {
    Tid x = embed(inputs);
    for (std::uint64_t i = 0; i < c_.L; ++i) {
      const Tid next = c_.recompute ? checkpointed_layer(i, x) : layer(i, x);
      eager_.drop(x);
      x = next;
    }
    const Tid n = norm("final_norm", x, final_norm_w_, final_norm_b_);
    eager_.drop(x);
    const Tid logits = eager_.linear(n, lm_head_, kNone, c_.V, "logits");
    eager_.drop(n);
    return logits;
  }

  bool dropout_active() const { return c_.dropout && c_.train; }

  Tid embed(Tid inputs) {
    Tid position_ids = kNoTensor;
    if (!c_.rope) position_ids = eager_.input("embed.position_ids", c_.s, 8);  // torch.arange(s)
    Tid x = eager_.embedding(wte_, inputs, c_.h, "embed.tokens");
    if (!c_.rope) {
      const Tid positions = eager_.embedding(wpe_, position_ids, c_.h, "embed.positions");
      eager_.drop(position_ids);
      const Tid sum = eager_.add(x, positions, "embed.sum");
      eager_.drop(x);
      eager_.drop(positions);
      x = sum;
    }
    if (dropout_active()) {
      const Tid dropped = eager_.dropout(x, "embed.dropout");
      eager_.drop(x);
      x = dropped;
    }
    return x;
  }

  // torch.utils.checkpoint(layer, x, use_reentrant=False): the forward keeps no activations; one
  // node holds the layer input. Its backward recomputes the layer up to the last saved tensor (early
  // stop), runs the layer's backward and hands the input gradient on.
  Tid checkpointed_layer(std::uint64_t i, Tid x) {
    eager_.begin_checkpointed_forward();
    const Tid out = layer(i, x);
    const std::pair<std::uint64_t, bool> stop = eager_.end_checkpointed_forward();
    eager_.require_grad(out);
    eager_.record_custom({out}, {x}, [this, i, x, stop](std::vector<int>& grads) {
      const std::size_t base = eager_.node_count();
      eager_.begin_recompute(stop);
      const Tid input = eager_.detached(x);
      const Tid recomputed = layer(i, input);
      eager_.end_recompute();
      eager_.clear_autocast_cache();
      eager_.drop(input);
      eager_.seed(recomputed, grads[0]);
      grads[0] = kNone;
      eager_.drop(recomputed);
      eager_.run_backward(base);
      return eager_.take_grad(input, x);
    });
    return out;
  }

  // One pre-norm block. The locals of the block (the attention output, the residual) live until it
  // returns, as in the CS336 TransformerBlock and GPT2Block.
  Tid layer(std::uint64_t i, Tid x) {
    const std::string prefix = "layer" + std::to_string(i) + ".";
    const LayerParams& lp = layers_[i];
    const Tid n1 = norm(prefix + "attn.norm", x, lp.attn_norm_w, lp.attn_norm_b);
    Tid attn = attention(i, n1);
    eager_.drop(n1);
    if (dropout_active()) {
      const Tid dropped = eager_.dropout(attn, prefix + "attn.out.dropout");
      eager_.drop(attn);
      attn = dropped;
    }
    const Tid residual = eager_.add(x, attn, prefix + "attn.residual");
    const Tid n2 = norm(prefix + "mlp.norm", residual, lp.mlp_norm_w, lp.mlp_norm_b);
    Tid mlp_out = mlp(i, n2);
    eager_.drop(n2);
    if (dropout_active()) {
      const Tid dropped = eager_.dropout(mlp_out, prefix + "mlp.down.dropout");
      eager_.drop(mlp_out);
      mlp_out = dropped;
    }
    const Tid out = eager_.add(residual, mlp_out, prefix + "mlp.residual");
    eager_.drop(attn);
    eager_.drop(residual);
    eager_.drop(mlp_out);
    return out;
  }

  // RMSNorm as CS336 and Hugging Face Llama write it (upcast to fp32, x * rsqrt(mean(x^2) + eps),
  // times the weight, back to the input dtype), or the fused LayerNorm kernel.
  Tid norm(const std::string& prefix, Tid x, int w, int bias) {
    if (c_.layernorm) return eager_.layer_norm(x, w, bias, c_.h, prefix);
    const bool upcast = eager_.eb(x) != 4;
    const Tid x32 = upcast ? eager_.cast(x, 4, prefix + ".fp32") : x;
    const Tid squared = eager_.square(x32, prefix + ".sq");
    const Tid mean = eager_.mean_rows(squared, c_.h, prefix + ".mean");
    eager_.drop(squared);
    const Tid shifted = eager_.add_scalar(mean, prefix + ".mean_eps");
    eager_.drop(mean);
    const Tid rstd = eager_.rsqrt(shifted, prefix + ".rstd");
    eager_.drop(shifted);
    const Tid normalized = eager_.mul(x32, rstd, prefix + ".normalized");
    if (upcast) eager_.drop(x32);
    const Tid scaled = eager_.mul(eager_.param_tensor(w), normalized, prefix + (upcast ? ".scaled" : ".out"));
    Tid out = scaled;
    if (eager_.eb(scaled) != eager_.eb(x)) {
      out = eager_.cast(scaled, eager_.eb(x), prefix + ".out");
      eager_.drop(scaled);
    }
    eager_.drop(normalized);
    eager_.drop(rstd);
    return out;
  }

  // CS336 RotaryEmbedding.forward on one head-split tensor: the cos and sin rows of the positions
  // gathered from the table (einx.get_at: one [2, s, d/2] tensor, saved by the multiplies), then
  // x1*cos - x2*sin and x1*sin + x2*cos on the interleaved halves, stacked back.
  Tid rope(Tid x, const std::string& prefix) {
    const auto [x1, x2] = eager_.halves(x);
    const Tid table = eager_.input(prefix + ".rope.cos_sin", c_.s * c_.d, eager_.eb(rope_table_));
    const Tid cos = table, sin = table;
    const Tid x1cos = eager_.mul(x1, cos, prefix + ".rope.x1cos");
    const Tid x2sin = eager_.mul(x2, sin, prefix + ".rope.x2sin");
    const Tid r1 = eager_.sub(x1cos, x2sin, prefix + ".rope.x1");
    eager_.drop(x1cos);
    eager_.drop(x2sin);
    const Tid x1sin = eager_.mul(x1, sin, prefix + ".rope.x1sin");
    const Tid x2cos = eager_.mul(x2, cos, prefix + ".rope.x2cos");
    const Tid r2 = eager_.add(x1sin, x2cos, prefix + ".rope.x2");
    eager_.drop(x1sin);
    eager_.drop(x2cos);
    eager_.drop(x1);
    eager_.drop(x2);
    eager_.drop(table);
    const Tid out = eager_.stack(r1, r2, prefix + ".rotated");
    eager_.drop(r1);
    eager_.drop(r2);
    return out;
  }

  // Causal multi-head self-attention as the CS336 model writes it: three projections, heads split
  // as views, RoPE on queries and keys, the causal mask, then either the unfused path (q k^T,
  // / sqrt(d), where(mask), softmax, probabilities v, merge heads) or one flash kernel; the output
  // projection. Q, K, V and the mask are locals until the function returns.
  Tid attention(std::uint64_t i, Tid n) {
    const std::string prefix = "layer" + std::to_string(i) + ".attn.";
    const LayerParams& lp = layers_[i];
    const std::uint64_t b = c_.b, s = c_.s, a = c_.a, d = c_.d, kv_width = c_.kv * c_.d;
    const Tid q = eager_.linear(n, lp.wq, lp.bq, c_.h, prefix + "q");
    const Tid k = eager_.linear(n, lp.wk, lp.bk, kv_width, prefix + "k");
    const Tid v = eager_.linear(n, lp.wv, lp.bv, kv_width, prefix + "v");
    // Flash reads (b, s, heads, d) directly; everything else works on (b, heads, s, d) views.
    const bool split_qk = !c_.flash || c_.rope;
    Tid qa = q, ka = k, va = v;
    if (split_qk) {
      qa = eager_.heads_view(q);
      eager_.drop(q);
      ka = eager_.heads_view(k);
      eager_.drop(k);
    }
    if (!c_.flash) {
      va = eager_.heads_view(v);
      eager_.drop(v);
    }
    Tid positions = kNoTensor;
    if (c_.rope) {
      positions = eager_.input(prefix + "positions", s, 8);  // torch.arange(s): the token positions
      const Tid qr = rope(qa, prefix + "q");
      eager_.drop(qa);
      qa = qr;
      const Tid kr = rope(ka, prefix + "k");
      eager_.drop(ka);
      ka = kr;
    }
    Tid merged = kNoTensor, arange = kNoTensor, mask = kNoTensor;
    if (c_.flash) {
      merged = eager_.flash(qa, ka, va, {b, s, a, d}, prefix + "flash");
    } else {
      if (c_.causal) {  // seq = torch.arange(s); mask = seq[:, None] >= seq[None, :]
        arange = eager_.input(prefix + "mask.arange", s, 8);
        mask = eager_.input(prefix + "mask", s * s, 1);
      }
      if (c_.kv != c_.a) {
        const Tid kr = eager_.repeat_heads(ka, b * s * c_.h, prefix + "k.repeat");
        eager_.drop(ka);
        ka = kr;
        const Tid vr = eager_.repeat_heads(va, b * s * c_.h, prefix + "v.repeat");
        eager_.drop(va);
        va = vr;
      }
      const Tid scores = eager_.matmul(qa, ka, b * a * s * s, prefix + "scores");
      Tid current = eager_.scale(scores, prefix + "scaled");
      eager_.drop(scores);
      if (c_.causal) {
        const Tid masked = eager_.where(mask, current, prefix + "masked");
        eager_.drop(current);
        current = masked;
      }
      Tid probs = eager_.softmax(current, prefix + "probs");
      eager_.drop(current);
      if (dropout_active()) {
        const Tid dropped = eager_.dropout(probs, prefix + "probs.dropout");
        eager_.drop(probs);
        probs = dropped;
      }
      const Tid context = eager_.matmul(probs, va, b * a * s * d, prefix + "context");
      eager_.drop(probs);
      merged = eager_.copy(context, prefix + "merged", true);  // transpose(1, 2).contiguous()
      eager_.drop(context);
    }
    const Tid out = eager_.linear(merged, lp.wo, lp.bo, c_.h, prefix + "out");
    eager_.drop(merged);
    eager_.drop(qa);
    eager_.drop(ka);
    eager_.drop(va);
    eager_.drop(positions);
    eager_.drop(arange);
    eager_.drop(mask);
    return out;
  }

  // w_down(gelu(w_up x)), or the CS336 SwiGLU w_down(silu(w_up x) * w_gate x) with silu = x*sigmoid(x).
  Tid mlp(std::uint64_t i, Tid n) {
    const std::string prefix = "layer" + std::to_string(i) + ".mlp.";
    const LayerParams& lp = layers_[i];
    const Tid up = eager_.linear(n, lp.w_up, lp.b_up, c_.f, prefix + "up");
    Tid hidden = kNoTensor;
    if (c_.swiglu) {
      const Tid sig = eager_.sigmoid(up, prefix + "sigmoid");
      const Tid act = eager_.mul(up, sig, prefix + "act");
      eager_.drop(sig);
      eager_.drop(up);
      const Tid gate = eager_.linear(n, lp.w_gate, lp.b_gate, c_.f, prefix + "gate");
      hidden = eager_.mul(act, gate, prefix + "gated");
      eager_.drop(act);
      eager_.drop(gate);
    } else {
      hidden = eager_.gelu(up, prefix + "act");
      eager_.drop(up);
    }
    const Tid down = eager_.linear(hidden, lp.w_down, lp.b_down, c_.h, prefix + "down");
    eager_.drop(hidden);
    return down;
  }

  const Config& c_;
  TraceBuilder& builder_;
  Eager eager_;
  std::vector<ParamSpec> specs_;
  std::vector<LayerParams> layers_;
  int wte_ = kNone, wpe_ = kNone, final_norm_w_ = kNone, final_norm_b_ = kNone, lm_head_ = kNone;
  Tid rope_table_ = kNoTensor;
  std::size_t first_activation_ = 0;
  std::vector<int> state_;  // optimizer state blocks, in creation order
};

void generate(const Options& options, TraceBuilder& builder) {
  const Config config = read_config(options);
  Transformer model(config, builder);
  model.generate();
}

}  // namespace

const GeneratorInfo& transformer_generator() {
  static const GeneratorInfo kInfo = {
      "transformer",
      "transformer training steps (forward, backward, optimizer) or inference forwards as an eager framework "
      "allocates them: activations, gradients, weights, optimizer state",
      option_specs(), kPresets, generate};
  return kInfo;
}

}  // namespace tiermark
