// llm-serve: an LLM inference server under continuous batching, as a trace of device allocations.
//
// The generator runs a small discrete-event model of a vLLM-style server (vLLM v0 scheduler,
// vllm/core/scheduler.py, with the block manager of vllm/core/block_manager_v1.py) on a simulated
// clock and writes what such a server allocates on the device: the weights once, the KV cache as
// the chosen policy lays it out, and per scheduler step the transient activations of one forward
// pass plus the logits and sampler tensors. Requests are drawn up front (lengths and arrival times
// from two independent seeded streams), so every KV policy serves exactly the same requests.
//
// Invariants:
// - The KV accounting is in units: tokens for contiguous-max, pow2, exact and concat, pages of
//   page_tokens tokens for paged. free_units_ + the units held by running requests = capacity_units_
//   at every step boundary, and a running request holds units_for(its stored tokens).
// - A request's progress g (tokens generated) only grows; recompute preemption frees its KV and
//   requeues it at the front of the waiting queue with g kept, so its next prefill covers prompt+g
//   tokens (vLLM PreemptionMode.RECOMPUTE).
// - Every request fits the KV capacity alone (checked up front), so the oldest running request
//   always progresses and the loop ends with every request finished and every block freed.
// - kv.token_bytes <= kv.committed_bytes <= kv.capacity_bytes at every sim.step_ns counter (the
//   counters of one step are written one after another, so they agree only at step points).
#include "workloads/llm_serve_generator.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "workloads/deterministic_random.h"

namespace tiermark {
namespace {

// ---------------------------------------------------------------------------------------------
// Options and presets

const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> kSpecs = {
      // The model. Defaults are Llama-2-7B's (the llama2-7b preset).
      {"arch", OptionType::kChoice, "llama",
       "layer layout: llama (RMSNorm, SwiGLU FFN of three matrices, no biases, untied LM head) or opt "
       "(LayerNorm, ReLU FFN of two matrices, biases, learned positions, LM head tied to the embedding)",
       {"llama", "opt"}},
      {"L", OptionType::kCount, "32", "transformer layers"},
      {"h", OptionType::kCount, "4096", "hidden size (a multiple of a)"},
      {"a", OptionType::kCount, "32", "attention heads; head dimension d = h/a"},
      {"a_kv", OptionType::kCount, "32", "key/value heads: a for multi-head attention, fewer for grouped-query (divides a)"},
      {"f", OptionType::kCount, "11008", "FFN width"},
      {"V", OptionType::kCount, "32000", "vocabulary size"},
      {"max_seq_len", OptionType::kCount, "4096", "longest sequence (prompt + output) the server accepts (vLLM max_model_len)"},
      {"dtype", OptionType::kChoice, "fp16", "weight, activation and KV element type", {"fp16", "bf16", "fp32"}},
      // The requests.
      {"requests", OptionType::kCount, "1000", "requests served; the trace ends when all have finished"},
      {"dataset", OptionType::kChoice, "sharegpt",
       "length distribution: sharegpt (log-normal, means 161 prompt / 338 output tokens after vLLM's benchmark "
       "filter), alpaca (19 / 58), or fixed (prompt_len and output_len for every request)",
       {"sharegpt", "alpaca", "fixed"}},
      {"prompt_len", OptionType::kCount, "", "prompt tokens of every request; dataset=fixed only"},
      {"output_len", OptionType::kCount, "", "output tokens of every request; dataset=fixed only"},
      {"arrival", OptionType::kChoice, "poisson",
       "poisson (exponential gaps at `rate`) or burst (every request arrives at time 0)", {"poisson", "burst"}},
      {"rate", OptionType::kNumber, "10", "mean arrivals per simulated second (arrival=poisson)"},
      {"seed", OptionType::kCount, "1", "seed of the length and arrival streams"},
      // The scheduler (vLLM v0 defaults).
      {"max_num_seqs", OptionType::kCount, "256", "most requests running at once (vLLM default 256)"},
      {"max_num_batched_tokens", OptionType::kCount, "",
       "most tokens in one prefill step, at least max_seq_len; unset means max(max_seq_len, 2048) as in vLLM"},
      {"watermark", OptionType::kNumber, "0.01",
       "share of KV capacity an admission must leave free (vLLM block manager watermark 0.01)"},
      // The KV cache.
      {"kv", OptionType::kChoice, "paged",
       "KV policy: contiguous-max (reserve max_seq_len per request), pow2 (prompt + next power of two of the "
       "output), exact (prompt + output, the oracle), paged (one pool, pages of page_tokens), concat "
       "(per-layer K and V regrown by one token every step)",
       {"contiguous-max", "pow2", "exact", "paged", "concat"}},
      {"page_tokens", OptionType::kCount, "16", "tokens per KV page under kv=paged (vLLM block_size 16)"},
      {"gpu_memory", OptionType::kSize, "80GiB", "device memory (A100-80GB)"},
      {"gpu_memory_utilization", OptionType::kNumber, "0.9",
       "share of gpu_memory the server may use (vLLM default 0.9); KV capacity is the rest after weights and "
       "the activation peak"},
      {"kv_capacity", OptionType::kSize, "", "KV capacity in bytes; unset means derived from gpu_memory"},
      // The forward pass and the clock.
      {"attention", OptionType::kChoice, "unfused",
       "prefill attention: unfused (scores and probabilities of a*s*s elements per sequence) or flash "
       "(a*s fp32 statistics only)",
       {"unfused", "flash"}},
      {"activations", OptionType::kChoice, "layers",
       "per-step tensors: layers (per-layer transients, logits, sampler) or none (KV and weights only; the KV "
       "capacity still leaves room for them)",
       {"layers", "none"}},
      {"hbm_gbps", OptionType::kNumber, "2039", "device memory bandwidth in GB/s for the step time (A100-80GB SXM)"},
      {"tflops", OptionType::kNumber, "312", "dense fp16/bf16 tensor throughput in TFLOP/s for the step time (A100)"},
      {"phase_every", OptionType::kCount, "100", "write a phase marker serve.step<k> every this many steps; 0 for none"},
  };
  return kSpecs;
}

// Model shapes from each model's Hugging Face config.json: facebook/opt-13b (hidden_size 5120,
// num_attention_heads 40, num_hidden_layers 40, ffn_dim 20480, vocab_size 50272,
// max_position_embeddings 2048, float16); meta-llama/Llama-2-7b-hf (4096, 32 heads, 32 layers,
// intermediate_size 11008, vocab 32000, 4096 positions, float16); meta-llama/Meta-Llama-3-8B (4096,
// 32 heads, num_key_value_heads 8, 32 layers, intermediate_size 14336, vocab 128256, 8192 positions,
// bfloat16). KV bytes per token 2*L*a_kv*d*p: 800 KiB, 512 KiB and 128 KiB (shared/REFERENCE.md 5).
constexpr std::array<WorkloadPreset, 3> kPresets = {{
    {"opt-13b", "OPT-13B as in the vLLM paper (MHA, 2048 positions, fp16)",
     "arch=opt,L=40,h=5120,a=40,a_kv=40,f=20480,V=50272,max_seq_len=2048,dtype=fp16"},
    {"llama2-7b", "Llama-2-7B (MHA, 4096 positions, fp16)",
     "arch=llama,L=32,h=4096,a=32,a_kv=32,f=11008,V=32000,max_seq_len=4096,dtype=fp16"},
    {"llama3-8b", "Llama-3-8B (grouped-query attention with 8 KV heads, 8192 positions, bf16)",
     "arch=llama,L=32,h=4096,a=32,a_kv=8,f=14336,V=128256,max_seq_len=8192,dtype=bf16"},
}};

// ---------------------------------------------------------------------------------------------
// Configuration

enum class KvPolicy { kContiguousMax, kPow2, kExact, kPaged, kConcat };
enum class Dataset { kShareGpt, kAlpaca, kFixed };

struct Model {
  bool opt = false;  // arch=opt, else llama
  std::uint64_t layers = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, ffn = 0, vocab = 0;
  std::uint64_t max_seq_len = 0;
  std::uint64_t element = 0;  // bytes per element, p

  // K and V of one token in one layer: 2*a_kv*d*p.
  std::uint64_t kv_bytes_per_token_layer() const { return 2 * kv_heads * head_dim * element; }
  std::uint64_t kv_bytes_per_token() const { return layers * kv_bytes_per_token_layer(); }
  std::uint64_t qkv_width() const { return (heads + 2 * kv_heads) * head_dim; }
  std::uint64_t ffn_up_width() const { return opt ? ffn : 2 * ffn; }  // SwiGLU fuses gate and up
};

struct Config {
  Model model;
  KvPolicy policy = KvPolicy::kPaged;
  std::string policy_name;
  std::uint64_t page_tokens = 16;
  std::uint64_t requests = 0;
  Dataset dataset = Dataset::kShareGpt;
  std::uint64_t prompt_len = 0, output_len = 0;  // dataset=fixed
  bool burst = false;
  double rate = 0;
  std::uint64_t seed = 0;
  std::uint64_t max_num_seqs = 0, max_num_batched_tokens = 0;
  double watermark = 0;
  double gpu_memory_utilization = 0;
  bool unfused = true;
  bool activations = true;
  double hbm_gbps = 0, tflops = 0;
  std::uint64_t phase_every = 0;
};

// Limits that keep every size below kMaxTraceSize and every product inside 64 bits; far above any
// real model (the largest open models have L ~ 128, h ~ 16384, V ~ 256000).
constexpr std::uint64_t kMaxLayers = 1024;
constexpr std::uint64_t kMaxWidth = std::uint64_t{1} << 20;
constexpr std::uint64_t kMaxVocab = std::uint64_t{1} << 22;
constexpr std::uint64_t kMaxSeqLen = std::uint64_t{1} << 20;
constexpr std::uint64_t kMaxRequests = std::uint64_t{1} << 24;  // request indices are 32-bit

std::uint64_t bounded_count(const Options& options, std::string_view key, std::uint64_t lo, std::uint64_t hi) {
  const std::uint64_t value = options.count(key);
  if (value < lo || value > hi) {
    options.reject(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  return value;
}

Config read_config(const Options& options) {
  Config c;
  Model& m = c.model;
  m.opt = options.choice("arch") == "opt";
  m.layers = bounded_count(options, "L", 1, kMaxLayers);
  m.hidden = bounded_count(options, "h", 1, kMaxWidth);
  m.heads = bounded_count(options, "a", 1, m.hidden);
  if (m.hidden % m.heads != 0) options.reject("a", "must divide h=" + std::to_string(m.hidden));
  m.head_dim = m.hidden / m.heads;
  m.kv_heads = bounded_count(options, "a_kv", 1, m.heads);
  if (m.heads % m.kv_heads != 0) options.reject("a_kv", "must divide a=" + std::to_string(m.heads));
  m.ffn = bounded_count(options, "f", 1, kMaxWidth);
  m.vocab = bounded_count(options, "V", 1, kMaxVocab);
  m.max_seq_len = bounded_count(options, "max_seq_len", 2, kMaxSeqLen);
  const std::string& dtype = options.choice("dtype");
  m.element = dtype == "fp32" ? 4 : 2;
  // The largest transient is one sequence's attention scores, a*s*s*p; keep it a valid trace size.
  if (static_cast<double>(m.heads) * static_cast<double>(m.max_seq_len) * static_cast<double>(m.max_seq_len) *
          static_cast<double>(m.element) >
      static_cast<double>(kMaxTraceSize) / 4) {
    options.reject("max_seq_len", "attention scores of a*max_seq_len^2 elements exceed the trace size limit");
  }

  const std::string& kv = options.choice("kv");
  c.policy_name = kv;
  c.policy = kv == "contiguous-max" ? KvPolicy::kContiguousMax
             : kv == "pow2"         ? KvPolicy::kPow2
             : kv == "exact"        ? KvPolicy::kExact
             : kv == "concat"       ? KvPolicy::kConcat
                                    : KvPolicy::kPaged;
  c.page_tokens = bounded_count(options, "page_tokens", 1, m.max_seq_len);

  c.requests = bounded_count(options, "requests", 1, kMaxRequests);
  const std::string& dataset = options.choice("dataset");
  c.dataset = dataset == "alpaca" ? Dataset::kAlpaca : dataset == "fixed" ? Dataset::kFixed : Dataset::kShareGpt;
  for (std::string_view key : {"prompt_len", "output_len"}) {
    if (c.dataset == Dataset::kFixed && !options.has(key)) {
      options.reject("dataset", "dataset=fixed needs prompt_len and output_len");
    }
    if (c.dataset != Dataset::kFixed && options.has(key)) {
      options.reject(key, "applies to dataset=fixed only (dataset=" + dataset + " draws lengths)");
    }
  }
  if (c.dataset == Dataset::kFixed) {
    c.prompt_len = bounded_count(options, "prompt_len", 1, m.max_seq_len - 1);
    c.output_len = bounded_count(options, "output_len", 1, m.max_seq_len - c.prompt_len);
  }
  c.burst = options.choice("arrival") == "burst";
  c.rate = options.number("rate");
  if (!c.burst && !(c.rate > 0)) options.reject("rate", "must be above 0 for Poisson arrivals");
  c.seed = options.count("seed");

  c.max_num_seqs = bounded_count(options, "max_num_seqs", 1, std::uint64_t{1} << 20);
  if (options.has("max_num_batched_tokens")) {
    c.max_num_batched_tokens = options.count("max_num_batched_tokens");
    // vLLM SchedulerConfig._verify_args refuses the same: a longest prompt could never be scheduled.
    if (c.max_num_batched_tokens < m.max_seq_len || c.max_num_batched_tokens > kMaxSeqLen * 64) {
      options.reject("max_num_batched_tokens", "must be at least max_seq_len=" + std::to_string(m.max_seq_len) +
                                                   " (and at most " + std::to_string(kMaxSeqLen * 64) + ")");
    }
  } else {
    c.max_num_batched_tokens = std::max<std::uint64_t>(m.max_seq_len, 2048);
  }
  c.watermark = options.number("watermark");
  if (c.watermark >= 0.5) options.reject("watermark", "must be below 0.5");
  c.gpu_memory_utilization = options.number("gpu_memory_utilization");
  if (!(c.gpu_memory_utilization > 0) || c.gpu_memory_utilization > 1) {
    options.reject("gpu_memory_utilization", "must be above 0 and at most 1");
  }

  c.unfused = options.choice("attention") == "unfused";
  c.activations = options.choice("activations") == "layers";
  c.hbm_gbps = options.number("hbm_gbps");
  if (!(c.hbm_gbps > 0)) options.reject("hbm_gbps", "must be above 0");
  c.tflops = options.number("tflops");
  if (!(c.tflops > 0)) options.reject("tflops", "must be above 0");
  c.phase_every = options.count("phase_every");
  return c;
}

// ---------------------------------------------------------------------------------------------
// Requests

struct Request {
  std::uint64_t prompt = 0;
  std::uint64_t output = 0;
  std::uint64_t arrival_ns = 0;
  std::uint64_t generated = 0;  // g: output tokens produced so far (kept across preemption)
  std::uint64_t held = 0;       // KV units held; 0 when not running
  std::uint64_t stored = 0;     // tokens whose K and V are in the cache
  bool running = false;
  SlotId block = 0;                   // contiguous-max, pow2, exact: the reservation
  std::vector<SlotId> layer_blocks;   // concat: K and V of each layer, kNoBlock when none
  TagId tag = kNoTag;                 // kv.req<N>
  std::vector<TagId> layer_tags;      // concat: kv.req<N>.layer<l>.k / .v
};

constexpr SlotId kNoBlock = std::numeric_limits<SlotId>::max();

// Length distributions. The targets are the vLLM paper's means (Kwon et al., SOSP 2023, Sec. 6.1 and
// Fig. 11; shared/REFERENCE.md 5): ShareGPT 161 prompt / 338 output tokens, Alpaca 19 / 58. Those
// were measured on data filtered as vLLM's benchmarks/benchmark_serving.py filters it (pairs with a
// prompt or output under 4 tokens, a prompt over 1024 or a total over 2048 are dropped), so a data
// set here is a log-normal pair conditioned on that same filter, and the log-normal means below are
// fitted (by simulation, 2M pairs) so that the filtered means come out at the paper's. The paper
// gives histograms, not a law: the log-normal shape and the sigmas are this generator's choice.
// ShareGPT prompts are very skewed (short questions, some pasted documents: sigma 1.3, filtered
// median 91, p99 879), its answers less so (0.8, median 255, p99 1409); Alpaca instructions are
// short and even (0.6, median 16) with more spread answers (0.9, median 39, p99 315).
struct LengthLaw {
  LogNormal prompt;
  LogNormal output;
};
constexpr LengthLaw kShareGpt = {{222.0, 1.3}, {353.0, 0.8}};
constexpr LengthLaw kAlpaca = {{19.0, 0.6}, {58.0, 0.9}};
constexpr std::uint64_t kFilterMinTokens = 4, kFilterMaxPrompt = 1024, kFilterMaxTotal = 2048;

std::uint64_t draw_length(SplitMix64& rng, const LogNormal& law) {
  const double x = std::round(log_normal(rng, law));
  return x < 1 ? 1 : static_cast<std::uint64_t>(std::min(x, 1e15));
}

std::vector<Request> make_requests(const Config& c) {
  std::vector<Request> requests(c.requests);
  SplitMix64 lengths = random_stream(c.seed, 1);
  SplitMix64 arrivals = random_stream(c.seed, 2);
  const double mean_gap_ns = c.burst ? 0 : 1e9 / c.rate;
  double clock_ns = 0;
  for (Request& r : requests) {
    if (c.dataset == Dataset::kFixed) {
      r.prompt = c.prompt_len;
      r.output = c.output_len;
    } else {
      const LengthLaw& law = c.dataset == Dataset::kAlpaca ? kAlpaca : kShareGpt;
      // Redraw pairs the filter drops or the model cannot hold (redrawing, unlike clipping, piles no
      // mass at the limit). Only a max_seq_len below about 100 tokens makes 64 failures likely; the
      // pair is then clipped to fit.
      for (int attempt = 0;; ++attempt) {
        r.prompt = draw_length(lengths, law.prompt);
        r.output = draw_length(lengths, law.output);
        const std::uint64_t total = r.prompt + r.output;
        if (r.prompt >= kFilterMinTokens && r.output >= kFilterMinTokens && r.prompt <= kFilterMaxPrompt &&
            total <= kFilterMaxTotal && total <= c.model.max_seq_len) {
          break;
        }
        if (attempt == 63) {
          r.prompt = std::min(r.prompt, c.model.max_seq_len - 1);
          r.output = std::min(r.output, c.model.max_seq_len - r.prompt);
          break;
        }
      }
    }
    if (!c.burst) clock_ns += exponential(arrivals, mean_gap_ns);
    r.arrival_ns = static_cast<std::uint64_t>(std::llround(clock_ns));
  }
  return requests;
}

// ---------------------------------------------------------------------------------------------
// Weights

struct Tensor {
  std::string name;
  std::uint64_t bytes;
};

// One block per weight tensor as vLLM loads it (fused qkv_proj and gate_up_proj); an OPT tensor's
// bias rides in the same block as its matrix.
std::vector<Tensor> weight_tensors(const Model& m) {
  const std::uint64_t p = m.element, h = m.hidden;
  const std::uint64_t bias = m.opt ? 1 : 0;
  std::vector<Tensor> tensors;
  tensors.push_back({"weights.embed", m.vocab * h * p});
  // OPT's learned positions have 2 extra rows (OPTLearnedPositionalEmbedding's offset of 2).
  if (m.opt) tensors.push_back({"weights.pos_embed", (m.max_seq_len + 2) * h * p});
  for (std::uint64_t l = 0; l < m.layers; ++l) {
    const std::string prefix = "weights.layer" + std::to_string(l) + ".";
    tensors.push_back({prefix + "attn_norm", (1 + bias) * h * p});
    tensors.push_back({prefix + "qkv", (h + bias) * m.qkv_width() * p});
    tensors.push_back({prefix + "o_proj", (h + bias) * h * p});
    tensors.push_back({prefix + "ffn_norm", (1 + bias) * h * p});
    tensors.push_back({prefix + "ffn_up", (h + bias) * m.ffn_up_width() * p});
    tensors.push_back({prefix + "ffn_down", (m.ffn + bias) * h * p});
  }
  tensors.push_back({"weights.norm", (1 + bias) * h * p});
  if (!m.opt) tensors.push_back({"weights.lm_head", m.vocab * h * p});  // OPT ties it to the embedding
  return tensors;
}

// ---------------------------------------------------------------------------------------------
// One forward pass: the transient tensors of a scheduler step

struct SeqWork {
  std::uint64_t query;    // tokens computed in this step: the prompt (+g) in a prefill, 1 in a decode
  std::uint64_t context;  // tokens attended to: the KV stored after this step
};

struct StepTags {
  TagId hidden = kNoTag, attn_norm = kNoTag, qkv = kNoTag, attn_out = kNoTag, scores = kNoTag, probs = kNoTag,
        softmax_lse = kNoTag, o_proj = kNoTag, ffn_norm = kNoTag, ffn_up = kNoTag, ffn_act = kNoTag,
        ffn_down = kNoTag, last_hidden = kNoTag, logits = kNoTag, sampler = kNoTag;
};

StepTags intern_step_tags(TraceBuilder& builder, const std::string& kind) {
  const std::string p = "step." + kind + ".";
  StepTags t;
  t.hidden = builder.tag(p + "hidden");
  t.attn_norm = builder.tag(p + "attn_norm");
  t.qkv = builder.tag(p + "qkv");
  t.attn_out = builder.tag(p + "attn_out");
  t.scores = builder.tag(p + "scores");
  t.probs = builder.tag(p + "probs");
  t.softmax_lse = builder.tag(p + "softmax_lse");
  t.o_proj = builder.tag(p + "o_proj");
  t.ffn_norm = builder.tag(p + "ffn_norm");
  t.ffn_up = builder.tag(p + "ffn_up");
  t.ffn_act = builder.tag(p + "ffn_act");
  t.ffn_down = builder.tag(p + "ffn_down");
  t.last_hidden = builder.tag(p + "last_hidden");
  t.logits = builder.tag(p + "logits");
  t.sampler = builder.tag(p + "sampler");
  return t;
}

// The tensors of an eager, inference-mode forward pass (no autograd, so each tensor dies right after
// its last use), layer by layer, with the residual stream `hidden` alive for the whole step and
// updated in place (vLLM's fused residual add). Unfused prefill attention materialises scores and
// probabilities of a*s*s elements per sequence (shared/REFERENCE.md 5); decode attention runs as a
// PagedAttention-style kernel writing straight into attn_out, so decode steps hold only T-row
// tensors. The LM head sees one row per sequence (vLLM prunes hidden states to each sequence's last
// token), and logits and sampler probabilities are fp32 (vLLM's sampler upcasts). `hook(l)` runs
// inside layer l after Q, K and V exist: that is where a concat cache grows.
template <class Out, class Hook>
void write_forward(Out& out, const Model& m, const StepTags& t, bool prefill, bool unfused,
                   std::span<const SeqWork> seqs, Hook&& hook) {
  std::uint64_t tokens = 0;
  for (const SeqWork& s : seqs) tokens += s.query;
  const std::uint64_t n = seqs.size();
  const std::uint64_t p = m.element;
  const std::uint64_t rows = tokens * p;  // bytes per column of a [tokens, width] tensor
  const SlotId hidden = out.allocate(rows * m.hidden, t.hidden);
  for (std::uint64_t l = 0; l < m.layers; ++l) {
    const SlotId norm = out.allocate(rows * m.hidden, t.attn_norm);
    const SlotId qkv = out.allocate(rows * m.qkv_width(), t.qkv);
    out.deallocate(norm);
    hook(l);
    const SlotId attn = out.allocate(rows * m.hidden, t.attn_out);
    if (prefill && unfused) {
      for (const SeqWork& s : seqs) {
        const std::uint64_t bytes = m.heads * s.query * s.context * p;
        const SlotId scores = out.allocate(bytes, t.scores);
        const SlotId probs = out.allocate(bytes, t.probs);
        out.deallocate(scores);
        out.deallocate(probs);
      }
    } else if (prefill) {
      out.deallocate(out.allocate(m.heads * tokens * 4, t.softmax_lse));  // FlashAttention's fp32 logsumexp
    }
    out.deallocate(qkv);
    const SlotId proj = out.allocate(rows * m.hidden, t.o_proj);
    out.deallocate(attn);
    out.deallocate(proj);
    const SlotId ffn_norm = out.allocate(rows * m.hidden, t.ffn_norm);
    const SlotId up = out.allocate(rows * m.ffn_up_width(), t.ffn_up);
    out.deallocate(ffn_norm);
    const SlotId act = out.allocate(rows * m.ffn, t.ffn_act);
    out.deallocate(up);
    const SlotId down = out.allocate(rows * m.hidden, t.ffn_down);
    out.deallocate(act);
    out.deallocate(down);
  }
  const SlotId last = out.allocate(n * m.hidden * p, t.last_hidden);
  out.deallocate(hidden);
  const SlotId logits = out.allocate(n * m.vocab * 4, t.logits);
  out.deallocate(last);
  const SlotId sampler = out.allocate(n * m.vocab * 4, t.sampler);
  out.deallocate(logits);
  out.deallocate(sampler);
}

// Measures the live-byte peak of a forward pass instead of writing it.
class PeakMeter {
 public:
  SlotId allocate(std::uint64_t bytes, TagId) {
    sizes_.push_back(bytes);
    live_ += bytes;
    peak_ = std::max(peak_, live_);
    return sizes_.size() - 1;
  }
  void deallocate(SlotId id) { live_ -= sizes_[id]; }
  std::uint64_t peak() const { return peak_; }

 private:
  std::vector<std::uint64_t> sizes_;
  std::uint64_t live_ = 0;
  std::uint64_t peak_ = 0;
};

class BuilderOut {
 public:
  explicit BuilderOut(TraceBuilder& builder) : builder_(builder) {}
  SlotId allocate(std::uint64_t bytes, TagId tag) { return builder_.allocate(bytes, tag); }
  void deallocate(SlotId id) { builder_.deallocate(id); }

 private:
  TraceBuilder& builder_;
};

// The activation memory vLLM sets aside before sizing the KV cache (Worker.profile_num_available_blocks
// runs a dummy forward and subtracts its peak). Here: the worst step this generator can write, which
// is a prefill of max_num_batched_tokens in max_seq_len-long sequences (largest a*s*s and T-row
// tensors), or a step of max_num_seqs sequences (largest logits).
std::uint64_t activation_peak(const Config& c) {
  const Model& m = c.model;
  auto peak_of = [&](bool prefill, const std::vector<SeqWork>& seqs) {
    PeakMeter meter;
    write_forward(meter, m, StepTags{}, prefill, c.unfused, seqs, [](std::uint64_t) {});
    return meter.peak();
  };
  std::vector<SeqWork> longest;
  for (std::uint64_t left = c.max_num_batched_tokens; left > 0;) {
    const std::uint64_t s = std::min(left, m.max_seq_len);
    longest.push_back({s, s});
    left -= s;
  }
  const std::uint64_t many = std::min(c.max_num_seqs, c.max_num_batched_tokens);
  std::vector<SeqWork> widest(many, SeqWork{c.max_num_batched_tokens / many, c.max_num_batched_tokens / many});
  std::vector<SeqWork> decode(c.max_num_seqs, SeqWork{1, m.max_seq_len});
  return std::max({peak_of(true, longest), peak_of(true, widest), peak_of(false, decode)});
}

// ---------------------------------------------------------------------------------------------
// The step time model: a roofline. A step reads every weight once and moves the KV it touches
// (decode reads each sequence's whole context, prefill writes the new tokens); it does 2 flops per
// weight per token in the layers, 2*V*h per sequence in the LM head, and attention flops (4*h per
// query-key pair and layer; causal prefill attends to s/2 keys on average). Its time is the larger of
// bytes / bandwidth and flops / peak throughput (A100-80GB SXM datasheet: 2,039 GB/s, 312 TFLOP/s
// dense fp16). No launch or scheduling overhead; all of this only sets how fast requests leave
// compared with how fast they arrive.

struct TimeModel {
  double weight_bytes = 0;
  double layer_params = 0;
  double hbm_bytes_per_ns = 0;
  double flops_per_ns = 0;
};

std::uint64_t step_ns(const TimeModel& tm, const Model& m, bool prefill, std::span<const SeqWork> seqs) {
  double tokens = 0, attention = 0, kv_tokens = 0;
  for (const SeqWork& s : seqs) {
    tokens += static_cast<double>(s.query);
    const double keys = prefill ? static_cast<double>(s.context) / 2 : static_cast<double>(s.context);
    attention += static_cast<double>(s.query) * keys;
    kv_tokens += prefill ? static_cast<double>(s.query) : static_cast<double>(s.context);
  }
  const double h = static_cast<double>(m.hidden), layers = static_cast<double>(m.layers);
  const double flops = 2 * tm.layer_params * tokens + 2 * static_cast<double>(m.vocab) * h * static_cast<double>(seqs.size()) +
                       4 * h * layers * attention;
  const double bytes = tm.weight_bytes + kv_tokens * static_cast<double>(m.kv_bytes_per_token());
  const double ns = std::max(bytes / tm.hbm_bytes_per_ns, flops / tm.flops_per_ns);
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::llround(ns)));
}

// ---------------------------------------------------------------------------------------------
// The server

// "12.55GiB": rounded sizes for messages, where format_size's exact "13160968KiB" would not read.
std::string approx_gib(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2fGiB", static_cast<double>(bytes) / static_cast<double>(std::uint64_t{1} << 30));
  return text;
}

class Server {
 public:
  Server(const Config& config, const Options& options, std::vector<Request> requests, TraceBuilder& builder)
      : c_(config), m_(config.model), requests_(std::move(requests)), builder_(builder), out_(builder) {
    weights_ = weight_tensors(m_);
    double weight_bytes = 0, layer_params = 0;
    for (const Tensor& t : weights_) {
      weight_bytes_ += t.bytes;
      weight_bytes += static_cast<double>(t.bytes);
      if (t.name.starts_with("weights.layer")) layer_params += static_cast<double>(t.bytes / m_.element);
    }
    time_ = {weight_bytes, layer_params, c_.hbm_gbps, c_.tflops * 1e3};
    activation_peak_ = activation_peak(c_);
    size_kv(options);
  }

  void run() {
    write_metadata();
    load();
    builder_.phase("serve");
    while (finished_ < requests_.size()) {
      while (next_arrival_ < requests_.size() && requests_[next_arrival_].arrival_ns <= clock_ns_) {
        waiting_.push_back(next_arrival_++);
      }
      if (running_.empty() && waiting_.empty()) {
        clock_ns_ = requests_[next_arrival_].arrival_ns;  // idle until the next arrival
        continue;
      }
      batch_.clear();
      const bool prefill = admit();
      if (!prefill) append_slots();
      if (batch_.empty()) throw std::logic_error("llm-serve: a scheduler step with nothing to run");
      execute(prefill);
    }
    write_counters();
    builder_.phase("teardown");
    for (SlotId id : pool_) builder_.deallocate(id);
    for (SlotId id : weight_ids_) builder_.deallocate(id);
  }

 private:
  // --- KV sizing and accounting

  void size_kv(const Options& options) {
    const std::uint64_t bpt = m_.kv_bytes_per_token();
    unit_tokens_ = c_.policy == KvPolicy::kPaged ? c_.page_tokens : 1;
    unit_bytes_ = unit_tokens_ * bpt;
    std::uint64_t capacity = 0;
    const char* key = "kv_capacity";
    if (options.has("kv_capacity")) {
      capacity = options.size("kv_capacity");
    } else {
      key = "gpu_memory";
      const double usable = std::floor(static_cast<double>(options.size("gpu_memory")) * c_.gpu_memory_utilization);
      const double needed = static_cast<double>(weight_bytes_) + static_cast<double>(activation_peak_);
      if (usable <= needed) {
        options.reject("gpu_memory", "gpu_memory_utilization leaves " + approx_gib(static_cast<std::uint64_t>(usable)) +
                                         ", not above weights " + approx_gib(weight_bytes_) + " + activation peak " +
                                         approx_gib(activation_peak_) + ": no room for the KV cache");
      }
      capacity = static_cast<std::uint64_t>(usable - needed);
    }
    if (capacity > kMaxTraceSize) options.reject(key, "KV capacity above the trace size limit");
    capacity_units_ = capacity / unit_bytes_;
    // vLLM BlockSpaceManager: watermark_blocks = int(watermark * num_gpu_blocks).
    watermark_units_ = static_cast<std::uint64_t>(c_.watermark * static_cast<double>(capacity_units_));
    free_units_ = capacity_units_;
    // vLLM would ignore a request that can never fit (AllocStatus.NEVER); refusing the spec instead
    // keeps "every request finishes" true.
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      const Request& r = requests_[i];
      const std::uint64_t need = units_for(r, r.prompt + r.output - 1);
      if (need + watermark_units_ > capacity_units_) {
        options.reject(key, "KV capacity " + approx_gib(capacity_units_ * unit_bytes_) + " cannot hold request " +
                                std::to_string(i) + " (" + std::to_string(r.prompt) + "+" + std::to_string(r.output) +
                                " tokens, " + approx_gib(need * unit_bytes_) + " under kv=" + c_.policy_name +
                                ") above the watermark");
      }
    }
  }

  // KV units request r holds while `tokens` of its K and V are stored.
  std::uint64_t units_for(const Request& r, std::uint64_t tokens) const {
    switch (c_.policy) {
      case KvPolicy::kContiguousMax: return m_.max_seq_len;
      // The vLLM paper's Orca (Pow2): outputs over-reserved by at most 2x, "if the true output length
      // is 25, it reserves 32 positions for outputs".
      case KvPolicy::kPow2: return std::min(m_.max_seq_len, r.prompt + std::bit_ceil(r.output));
      case KvPolicy::kExact: return r.prompt + r.output;
      case KvPolicy::kPaged: return (tokens + unit_tokens_ - 1) / unit_tokens_;
      case KvPolicy::kConcat: return tokens;
    }
    return tokens;
  }

  bool reserves() const {
    return c_.policy == KvPolicy::kContiguousMax || c_.policy == KvPolicy::kPow2 || c_.policy == KvPolicy::kExact;
  }

  // Gives request i its first `units`, writing the reservation block of the reserving policies.
  void take(std::uint32_t i, std::uint64_t units) {
    Request& r = requests_[i];
    free_units_ -= units;
    r.held = units;
    r.running = true;
    if (r.tag == kNoTag) r.tag = builder_.tag("kv.req" + std::to_string(i));
    if (reserves()) r.block = builder_.allocate(units * unit_bytes_, r.tag);
  }

  // Frees everything request i holds (finish or preemption).
  void release(std::uint32_t i) {
    Request& r = requests_[i];
    if (reserves()) builder_.deallocate(r.block);
    if (c_.policy == KvPolicy::kConcat) {
      for (SlotId& id : r.layer_blocks) {
        if (id != kNoBlock) builder_.deallocate(id);
        id = kNoBlock;
      }
    }
    free_units_ += r.held;
    stored_tokens_ -= r.stored;
    r.held = 0;
    r.stored = 0;
    r.running = false;
  }

  // --- The scheduler (vLLM v0 Scheduler._schedule without swapping)

  // Prefill first: admits waiting requests in arrival order while the step's tokens, the running
  // count and the KV watermark allow, stopping at the first that does not fit (FCFS, no skipping).
  // Returns whether anything was admitted; if so this step is a prefill step.
  bool admit() {
    std::uint64_t batched = 0;
    while (!waiting_.empty()) {
      const std::uint32_t i = waiting_.front();
      const Request& r = requests_[i];
      const std::uint64_t tokens = r.prompt + r.generated;  // recompute covers the generated tokens too
      if (batched + tokens > c_.max_num_batched_tokens) break;
      if (running_.size() + 1 > c_.max_num_seqs) break;
      const std::uint64_t need = units_for(r, tokens);
      // vLLM can_allocate: num_free - num_required >= watermark_blocks.
      if (free_units_ < need || free_units_ - need < watermark_units_) break;
      waiting_.pop_front();
      take(i, need);
      running_.insert(std::lower_bound(running_.begin(), running_.end(), i), i);
      batch_.push_back(i);
      batched += tokens;
    }
    return !batch_.empty();
  }

  // Decode: every running request gets the KV for one more token, oldest first; when the units run
  // out the youngest running request is preempted (recompute) until the older one fits, and a
  // request that is itself the youngest left preempts itself.
  void append_slots() {
    std::deque<std::uint32_t> queue(running_.begin(), running_.end());
    running_.clear();
    while (!queue.empty()) {
      const std::uint32_t i = queue.front();
      queue.pop_front();
      Request& r = requests_[i];
      const std::uint64_t more = units_for(r, r.prompt + r.generated) - r.held;
      bool fits = true;
      while (more > free_units_) {
        if (!queue.empty()) {
          preempt(queue.back());
          queue.pop_back();
        } else {
          preempt(i);
          fits = false;
          break;
        }
      }
      if (!fits) continue;
      free_units_ -= more;
      r.held += more;
      running_.push_back(i);
      batch_.push_back(i);
    }
  }

  void preempt(std::uint32_t i) {
    release(i);
    // Victims are taken youngest first, so pushing each to the front keeps the queue in arrival
    // order (vLLM: self.waiting.appendleft).
    waiting_.push_front(i);
    ++preemptions_;
  }

  // --- One step

  void execute(bool prefill) {
    ++steps_;
    if (c_.phase_every != 0 && steps_ % c_.phase_every == 0) builder_.phase("serve.step" + std::to_string(steps_));
    seqs_.clear();
    for (std::uint32_t i : batch_) {
      Request& r = requests_[i];
      const std::uint64_t stored = r.prompt + r.generated;
      stored_tokens_ += stored - r.stored;
      r.stored = stored;
      seqs_.push_back({prefill ? stored : 1, stored});
    }
    write_counters();

    auto grow = [this](std::uint64_t layer) { grow_concat(layer); };
    if (c_.activations) {
      if (!tags_ready_) {
        prefill_tags_ = intern_step_tags(builder_, "prefill");
        decode_tags_ = intern_step_tags(builder_, "decode");
        tags_ready_ = true;
      }
      write_forward(out_, m_, prefill ? prefill_tags_ : decode_tags_, prefill, c_.unfused, seqs_, grow);
    } else {
      for (std::uint64_t l = 0; l < m_.layers; ++l) grow(l);
    }

    const std::uint64_t ns = step_ns(time_, m_, prefill, seqs_);
    builder_.counter(tag_step_ns_, ns);
    clock_ns_ += ns;

    bool any_finished = false;
    for (std::uint32_t i : batch_) {
      Request& r = requests_[i];
      if (++r.generated == r.output) {
        release(i);
        ++finished_;
        any_finished = true;
      }
    }
    if (any_finished) {
      std::erase_if(running_, [this](std::uint32_t i) { return !requests_[i].running; });
    }
  }

  // Concat: in layer `layer`, each sequence of the step gets K and V blocks one token longer (or, at
  // its prefill, its first blocks): torch.cat allocates the new block before the old one is freed.
  void grow_concat(std::uint64_t layer) {
    if (c_.policy != KvPolicy::kConcat) return;
    const std::uint64_t half = m_.kv_bytes_per_token_layer() / 2;  // K or V of one token
    for (std::uint32_t i : batch_) {
      Request& r = requests_[i];
      if (r.layer_blocks.empty()) {
        r.layer_blocks.assign(2 * m_.layers, kNoBlock);
        for (std::uint64_t l = 0; l < m_.layers; ++l) {
          const std::string name = "kv.req" + std::to_string(i) + ".layer" + std::to_string(l);
          r.layer_tags.push_back(builder_.tag(name + ".k"));
          r.layer_tags.push_back(builder_.tag(name + ".v"));
        }
      }
      for (std::uint64_t kv = 0; kv < 2; ++kv) {
        SlotId& block = r.layer_blocks[2 * layer + kv];
        const SlotId grown = builder_.allocate(r.stored * half, r.layer_tags[2 * layer + kv]);
        if (block != kNoBlock) builder_.deallocate(block);
        block = grown;
      }
    }
  }

  void write_counters() {
    const std::uint64_t values[] = {stored_tokens_ * m_.kv_bytes_per_token(),
                                    (capacity_units_ - free_units_) * unit_bytes_, running_.size(), finished_,
                                    preemptions_};
    for (std::size_t k = 0; k < std::size(values); ++k) {
      if (values[k] != last_counter_[k]) {
        builder_.counter(counter_tags_[k], values[k]);
        last_counter_[k] = values[k];
      }
    }
  }

  // --- Start and metadata

  void write_metadata() {
    builder_.set_metadata("seed", std::to_string(c_.seed));
    builder_.set_metadata("kv.policy", c_.policy_name);
    builder_.set_metadata("kv.bytes_per_token", std::to_string(m_.kv_bytes_per_token()));
    builder_.set_metadata("kv.page_tokens", std::to_string(unit_tokens_));
    builder_.set_metadata("kv.capacity_bytes", std::to_string(capacity_units_ * unit_bytes_));
    builder_.set_metadata("model.weight_bytes", std::to_string(weight_bytes_));
    builder_.set_metadata("model.activation_peak_bytes", std::to_string(activation_peak_));
  }

  void load() {
    counter_tags_ = {builder_.tag("kv.token_bytes"), builder_.tag("kv.committed_bytes"), builder_.tag("sched.running"),
                     builder_.tag("sched.finished"), builder_.tag("sched.preemptions")};
    tag_step_ns_ = builder_.tag("sim.step_ns");
    builder_.phase("load");
    for (const Tensor& t : weights_) weight_ids_.push_back(builder_.allocate(t.bytes, builder_.tag(t.name)));
    if (c_.policy == KvPolicy::kPaged) {
      // vLLM CacheEngine: one K and one V tensor per layer, each num_blocks * block_size * a_kv * d * p.
      const std::uint64_t half = capacity_units_ * unit_tokens_ * (m_.kv_bytes_per_token_layer() / 2);
      if (half > 0) {
        for (std::uint64_t l = 0; l < m_.layers; ++l) {
          const std::string name = "kv.pool.layer" + std::to_string(l);
          pool_.push_back(builder_.allocate(half, builder_.tag(name + ".k")));
          pool_.push_back(builder_.allocate(half, builder_.tag(name + ".v")));
        }
      }
    }
  }

  const Config& c_;
  const Model& m_;
  std::vector<Request> requests_;
  TraceBuilder& builder_;
  BuilderOut out_;

  std::vector<Tensor> weights_;
  std::uint64_t weight_bytes_ = 0;
  std::uint64_t activation_peak_ = 0;
  TimeModel time_;

  std::uint64_t unit_tokens_ = 1, unit_bytes_ = 0;
  std::uint64_t capacity_units_ = 0, watermark_units_ = 0, free_units_ = 0;
  std::uint64_t stored_tokens_ = 0;

  std::deque<std::uint32_t> waiting_;
  std::vector<std::uint32_t> running_;  // in arrival order
  std::vector<std::uint32_t> batch_;    // this step's requests
  std::vector<SeqWork> seqs_;
  std::uint32_t next_arrival_ = 0;
  std::uint64_t finished_ = 0, preemptions_ = 0, steps_ = 0;
  std::uint64_t clock_ns_ = 0;

  std::vector<SlotId> weight_ids_, pool_;
  std::array<TagId, 5> counter_tags_{};
  std::array<std::uint64_t, 5> last_counter_{};
  TagId tag_step_ns_ = kNoTag;
  StepTags prefill_tags_, decode_tags_;
  bool tags_ready_ = false;
};

void generate(const Options& options, TraceBuilder& builder) {
  const Config config = read_config(options);
  Server server(config, options, make_requests(config), builder);
  server.run();
}

}  // namespace

const GeneratorInfo& llm_serve_generator() {
  static const GeneratorInfo kInfo = {
      "llm-serve",
      "an LLM server's device allocations under continuous batching: weights, KV cache (five policies), per-step "
      "activations",
      option_specs(), kPresets, generate};
  return kInfo;
}

}  // namespace tiermark
