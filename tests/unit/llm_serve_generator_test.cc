// The llm-serve generator: hand-computed event lists for small servers (exact and paged KV, a
// recompute preemption, one forward pass), the presets' KV bytes per token and weights, the vLLM
// paper's KV-utilisation gap between the policies, preemption under a small cache, determinism per
// seed, the concat sawtooth, and one-line errors for bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/input_error.h"
#include "workloads/trace_recorder.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

TraceRecorder generate(const std::string& spec) {
  TraceRecorder recorder;
  generate_workload(spec, recorder);
  return recorder;
}

// The trace as readable lines "alloc SIZE TAG", "free SIZE TAG" (the size and tag of the block it
// frees), "counter NAME VALUE" and "phase NAME". sim.step_ns counters are left out (their values come
// from the floating-point time model, tested on their own); they are counted in `steps`.
std::vector<std::string> describe(const TraceRecorder& trace, int* steps = nullptr) {
  std::unordered_map<SlotId, std::string> blocks;
  std::vector<std::string> lines;
  for (const TraceEvent& e : trace.events()) {
    const std::string tag(trace.tag(e));
    switch (e.kind) {
      case EventKind::kAlloc:
        blocks[e.id] = std::to_string(e.size) + " " + tag;
        lines.push_back("alloc " + blocks[e.id]);
        break;
      case EventKind::kFree:
        lines.push_back("free " + blocks.at(e.id));
        break;
      case EventKind::kPhase:
        lines.push_back("phase " + tag);
        break;
      case EventKind::kCounter:
        if (tag == "sim.step_ns") {
          if (steps != nullptr) ++*steps;
        } else {
          lines.push_back("counter " + tag + " " + std::to_string(e.size));
        }
        break;
    }
  }
  return lines;
}

// A model small enough to follow by hand: L=1, h=8, a=2 heads of d=4, one KV head, f=16, V=10,
// fp16. KV bytes per token 2*L*a_kv*d*p = 16. Its weights (llama layout):
const std::string kTinyShape = "llm-serve:arch=llama,h=8,a=2,a_kv=1,f=16,V=10,max_seq_len=16,dtype=fp16,phase_every=0";
const std::string kTiny = kTinyShape + ",L=1";
const std::vector<std::string> kTinyWeights = {
    "alloc 160 weights.embed",            // V*h*p
    "alloc 16 weights.layer0.attn_norm",  // h*p
    "alloc 256 weights.layer0.qkv",       // h*(a+2*a_kv)*d*p
    "alloc 128 weights.layer0.o_proj",    // h*h*p
    "alloc 16 weights.layer0.ffn_norm",
    "alloc 512 weights.layer0.ffn_up",    // h*2f*p (gate and up)
    "alloc 256 weights.layer0.ffn_down",  // f*h*p
    "alloc 16 weights.norm",
    "alloc 160 weights.lm_head",
};

std::vector<std::string> freed(const std::vector<std::string>& allocs) {
  std::vector<std::string> out;
  for (const std::string& line : allocs) out.push_back("free " + line.substr(6));
  return out;
}

std::vector<std::string> concat(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

// Three requests of 6 prompt + 4 output tokens arrive together; max_num_seqs=2 lets two run, the
// third starts when they finish. Each request takes 4 steps (a prefill, then 3 decodes) and ends
// with 6+3 = 9 tokens stored (the last output token's K and V are never computed).
const std::string kThree = kTiny + ",requests=3,dataset=fixed,prompt_len=6,output_len=4,arrival=burst,max_num_seqs=2,"
                                   "activations=none,kv_capacity=1600";

TEST(LlmServeGenerator, ExactPolicyMatchesHandComputedEvents) {
  int steps = 0;
  const std::vector<std::string> events = describe(generate(kThree + ",kv=exact"), &steps);
  // Exact reserves prompt + output = 10 tokens = 160 B per request at admission.
  const std::vector<std::string> expected = concat({
      {"phase load"},
      kTinyWeights,
      {"phase serve",
       // Step 1, prefill of requests 0 and 1 (request 2 waits: max_num_seqs).
       "alloc 160 kv.req0", "alloc 160 kv.req1", "counter kv.token_bytes 192", "counter kv.committed_bytes 320",
       "counter sched.running 2",
       // Steps 2-4, decodes: 7, 8, 9 tokens each; both finish after step 4.
       "counter kv.token_bytes 224", "counter kv.token_bytes 256", "counter kv.token_bytes 288", "free 160 kv.req0",
       "free 160 kv.req1",
       // Step 5, prefill of request 2; steps 6-8 its decodes.
       "alloc 160 kv.req2", "counter kv.token_bytes 96", "counter kv.committed_bytes 160", "counter sched.running 1",
       "counter sched.finished 2", "counter kv.token_bytes 112", "counter kv.token_bytes 128",
       "counter kv.token_bytes 144", "free 160 kv.req2",
       // The end: every counter back to zero, then teardown.
       "counter kv.token_bytes 0", "counter kv.committed_bytes 0", "counter sched.running 0", "counter sched.finished 3",
       "phase teardown"},
      freed(kTinyWeights),
  });
  EXPECT_EQ(events, expected);
  EXPECT_EQ(steps, 8);
}

TEST(LlmServeGenerator, PagedPolicyMatchesHandComputedEvents) {
  int steps = 0;
  const TraceRecorder trace = generate(kThree + ",kv=paged,page_tokens=4");
  const std::vector<std::string> events = describe(trace, &steps);
  // 1600 B / (4 tokens * 16 B) = 25 pages; the pool is one K and one V tensor per layer of
  // 25 * 4 * a_kv*d*p = 800 B. A request holds ceil(stored / 4) pages: 2 for 6-8 tokens, 3 for 9.
  const std::vector<std::string> expected = concat({
      {"phase load"},
      kTinyWeights,
      {"alloc 800 kv.pool.layer0.k", "alloc 800 kv.pool.layer0.v", "phase serve",
       "counter kv.token_bytes 192", "counter kv.committed_bytes 256", "counter sched.running 2",  // step 1
       "counter kv.token_bytes 224",                                                               // step 2
       "counter kv.token_bytes 256",                                                               // step 3
       "counter kv.token_bytes 288", "counter kv.committed_bytes 384",                             // step 4: 3rd pages
       "counter kv.token_bytes 96", "counter kv.committed_bytes 128", "counter sched.running 1",
       "counter sched.finished 2",                                                                 // step 5
       "counter kv.token_bytes 112", "counter kv.token_bytes 128",                                 // steps 6, 7
       "counter kv.token_bytes 144", "counter kv.committed_bytes 192",                             // step 8
       "counter kv.token_bytes 0", "counter kv.committed_bytes 0", "counter sched.running 0", "counter sched.finished 3",
       "phase teardown", "free 800 kv.pool.layer0.k", "free 800 kv.pool.layer0.v"},
      freed(kTinyWeights),
  });
  EXPECT_EQ(events, expected);
  EXPECT_EQ(steps, 8);
  EXPECT_EQ(trace.metadata().get("kv.policy"), "paged");
  EXPECT_EQ(trace.metadata().get("kv.bytes_per_token"), "16");
  EXPECT_EQ(trace.metadata().get("kv.page_tokens"), "4");
  EXPECT_EQ(trace.metadata().get("kv.capacity_bytes"), "1600");
}

// Two requests in 5 pages (320 B): at step 4 both need a third page and one is left, so the older
// request takes it and the younger, now the youngest left, preempts itself (recompute). Its next
// prefill covers the prompt and the 3 tokens it had generated, 9 tokens in 3 pages, and produces
// its 4th and last token.
TEST(LlmServeGenerator, RecomputePreemptionMatchesHandComputedEvents) {
  int steps = 0;
  const std::vector<std::string> events = describe(
      generate(kTiny + ",requests=2,dataset=fixed,prompt_len=6,output_len=4,arrival=burst,activations=none,"
                       "kv=paged,page_tokens=4,kv_capacity=320"),
      &steps);
  const std::vector<std::string> expected = concat({
      {"phase load"},
      kTinyWeights,
      {"alloc 160 kv.pool.layer0.k", "alloc 160 kv.pool.layer0.v", "phase serve",
       "counter kv.token_bytes 192", "counter kv.committed_bytes 256", "counter sched.running 2",  // step 1
       "counter kv.token_bytes 224", "counter kv.token_bytes 256",                                 // steps 2, 3
       // Step 4: request 1 preempted; request 0 alone stores 9 tokens in 3 pages, and finishes.
       "counter kv.token_bytes 144", "counter kv.committed_bytes 192", "counter sched.running 1",
       "counter sched.preemptions 1",
       // Step 5: request 1 recomputed (9 tokens, 3 pages) and finished.
       "counter sched.finished 1",
       "counter kv.token_bytes 0", "counter kv.committed_bytes 0", "counter sched.running 0", "counter sched.finished 2",
       "phase teardown", "free 160 kv.pool.layer0.k", "free 160 kv.pool.layer0.v"},
      freed(kTinyWeights),
  });
  EXPECT_EQ(events, expected);
  EXPECT_EQ(steps, 5);
}

// One request of 4 prompt + 2 output tokens on the tiny model: a prefill step (T=4 tokens, unfused
// attention) then a decode step (T=1). Sizes per shared/REFERENCE.md 5: [T, width] tensors are
// T*width*p, scores and probabilities a*s*s*p, logits and sampler probabilities n*V*4 (fp32).
TEST(LlmServeGenerator, ForwardPassTensorsMatchHandComputedSizes) {
  const std::vector<std::string> events = describe(
      generate(kTiny + ",requests=1,dataset=fixed,prompt_len=4,output_len=2,arrival=burst,kv=exact,kv_capacity=1KiB"));
  auto step = [](const std::string& kind, std::uint64_t t, bool prefill) {
    const std::string s = "step." + kind + ".";
    auto n = [&](std::uint64_t width) { return std::to_string(t * width * 2) + " " + s; };
    std::vector<std::string> lines = {"alloc " + n(8) + "hidden", "alloc " + n(8) + "attn_norm", "alloc " + n(16) + "qkv",
                                      "free " + n(8) + "attn_norm", "alloc " + n(8) + "attn_out"};
    if (prefill) {
      const std::string scores = std::to_string(2 * t * t * 2) + " " + s;  // a*s*s*p
      lines.insert(lines.end(), {"alloc " + scores + "scores", "alloc " + scores + "probs", "free " + scores + "scores",
                                 "free " + scores + "probs"});
    }
    lines.insert(lines.end(), {"free " + n(16) + "qkv", "alloc " + n(8) + "o_proj", "free " + n(8) + "attn_out",
                               "free " + n(8) + "o_proj", "alloc " + n(8) + "ffn_norm", "alloc " + n(32) + "ffn_up",
                               "free " + n(8) + "ffn_norm", "alloc " + n(16) + "ffn_act", "free " + n(32) + "ffn_up",
                               "alloc " + n(8) + "ffn_down", "free " + n(16) + "ffn_act", "free " + n(8) + "ffn_down",
                               "alloc 16 " + s + "last_hidden", "free " + n(8) + "hidden", "alloc 40 " + s + "logits",
                               "free 16 " + s + "last_hidden", "alloc 40 " + s + "sampler", "free 40 " + s + "logits",
                               "free 40 " + s + "sampler"});
    return lines;
  };
  const std::vector<std::string> expected = concat({
      {"phase load"},
      kTinyWeights,
      {"phase serve", "alloc 96 kv.req0", "counter kv.token_bytes 64", "counter kv.committed_bytes 96",
       "counter sched.running 1"},
      step("prefill", 4, true),
      {"counter kv.token_bytes 80"},
      step("decode", 1, false),
      {"free 96 kv.req0", "counter kv.token_bytes 0", "counter kv.committed_bytes 0", "counter sched.running 0",
       "counter sched.finished 1", "phase teardown"},
      freed(kTinyWeights),
  });
  EXPECT_EQ(events, expected);

  // FlashAttention keeps a*s fp32 statistics instead of the two a*s*s matrices.
  const std::vector<std::string> flash = describe(generate(
      kTiny + ",requests=1,dataset=fixed,prompt_len=4,output_len=1,arrival=burst,kv=exact,kv_capacity=1KiB,attention=flash"));
  EXPECT_EQ(std::count(flash.begin(), flash.end(), "alloc 32 step.prefill.softmax_lse"), 1);
  EXPECT_EQ(std::count_if(flash.begin(), flash.end(), [](const std::string& l) { return l.find("scores") != std::string::npos; }), 0);
}

// shared/REFERENCE.md 5: KV bytes per token 2*L*a_kv*d*p are OPT-13B 800 KB (819,200 B), Llama-2-7B
// 512 KiB, Llama-3-8B 128 KiB. The weights are the published parameter counts at 2 bytes each.
TEST(LlmServeGenerator, PresetsHaveTheModelsKvBytesPerTokenAndWeights) {
  struct Case {
    const char* preset;
    std::uint64_t kv_bytes_per_token;
    std::uint64_t parameters;
  };
  const Case cases[] = {
      {"opt-13b", 819200, 12'853'473'280},   // facebook/opt-13b: 12.9B (counted from its config.json)
      {"llama2-7b", 524288, 6'738'415'616},  // meta-llama/Llama-2-7b-hf
      {"llama3-8b", 131072, 8'030'261'248},  // meta-llama/Meta-Llama-3-8B
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.preset);
    const TraceRecorder trace =
        generate(std::string("llm-serve/") + c.preset +
                 ":requests=1,dataset=fixed,prompt_len=8,output_len=2,activations=none,phase_every=0");
    EXPECT_EQ(trace.metadata().get("kv.bytes_per_token"), std::to_string(c.kv_bytes_per_token));
    EXPECT_EQ(trace.metadata().get("model.weight_bytes"), std::to_string(2 * c.parameters));
  }
}

// Replays the counters as docs/workload-llm-serve.md says: each sim.step_ns weighs the current
// kv.token_bytes and kv.committed_bytes by the step's duration.
class KvUtilisation final : public TraceSink {
 public:
  void begin(const TraceMetadata& metadata, const TagTable& tags) override {
    tags_ = &tags;
    capacity_ = std::stoull(*metadata.get("kv.capacity_bytes"));
  }
  void event(const TraceEvent& e) override {
    if (e.kind != EventKind::kCounter) return;
    const std::string_view name = tags_->name(e.tag);
    if (name == "kv.token_bytes") token_ = e.size;
    if (name == "kv.committed_bytes") committed_ = e.size;
    if (name == "sched.preemptions") preemptions = e.size;
    if (name == "sched.finished") finished = e.size;
    if (name == "sim.step_ns") {
      token_time_ += static_cast<double>(token_) * static_cast<double>(e.size);
      committed_time_ += static_cast<double>(committed_) * static_cast<double>(e.size);
      ++steps;
      // The counters of a step are written one after another, so they agree at step points only.
      if (token_ > committed_ || committed_ > capacity_) bounds_held = false;
    }
  }
  void end() override {}

  double utilisation() const { return token_time_ / committed_time_; }
  bool bounds_held = true;
  std::uint64_t preemptions = 0, finished = 0, steps = 0;

 private:
  const TagTable* tags_ = nullptr;
  std::uint64_t capacity_ = 0, token_ = 0, committed_ = 0;
  double token_time_ = 0, committed_time_ = 0;
};

KvUtilisation utilisation(const std::string& spec) {
  KvUtilisation sink;
  generate_workload(spec, sink);
  return sink;
}

// The vLLM paper (SOSP 2023) Fig. 2 setting: OPT-13B on one A100-40GB serving ShareGPT. Its shares
// of KV memory holding token states are 20.4% (contiguous max), 26.8% (pow2), 38.2% (oracle), 96.3%
// (paged); its pow2 and oracle figures also count the external fragmentation of their allocator,
// which here is left to the allocator that replays the trace. The counters give the policies' own
// share; its ordering and paged's level must hold.
TEST(LlmServeGenerator, KvUtilisationReproducesTheVllmGap) {
  std::map<std::string, double> share;
  for (const char* kv : {"contiguous-max", "pow2", "exact", "paged"}) {
    const KvUtilisation u = utilisation(std::string("llm-serve/opt-13b:gpu_memory=40GiB,rate=2,activations=none,kv=") + kv);
    EXPECT_TRUE(u.bounds_held) << kv;
    EXPECT_EQ(u.finished, 1000u) << kv;
    share[kv] = u.utilisation();
    std::printf("[ utilisation ] opt-13b sharegpt kv=%s: %.1f%%\n", kv, 100 * share[kv]);
  }
  EXPECT_LT(share["contiguous-max"], share["pow2"]);
  EXPECT_LT(share["pow2"], share["exact"]);
  EXPECT_LT(share["exact"], share["paged"]);
  EXPECT_GT(share["paged"], 0.90);
  // max_seq_len 2048 against about 161 + 338/2 tokens held on average: near the paper's 20.4%.
  EXPECT_GT(share["contiguous-max"], 0.12);
  EXPECT_LT(share["contiguous-max"], 0.30);
}

TEST(LlmServeGenerator, PreemptedRequestsStillFinish) {
  for (const char* kv : {"paged", "concat"}) {
    SCOPED_TRACE(kv);
    // 2 GiB of KV is about 2,600 OPT-13B tokens: a handful of ShareGPT requests.
    const KvUtilisation u = utilisation(std::string("llm-serve/opt-13b:requests=80,rate=50,kv_capacity=2GiB,kv=") + kv +
                                        ",activations=none");
    EXPECT_GT(u.preemptions, 10u);
    EXPECT_EQ(u.finished, 80u);  // and generate_workload checked that the trace ends empty
    EXPECT_TRUE(u.bounds_held);
  }
}

TEST(LlmServeGenerator, SameSeedSameTraceOtherSeedOtherTrace) {
  const std::string spec = "llm-serve:requests=50,activations=none,kv=exact,seed=";
  const TraceRecorder a = generate(spec + "7");
  const TraceRecorder b = generate(spec + "7");
  const TraceRecorder c = generate(spec + "8");
  EXPECT_EQ(a.events(), b.events());
  EXPECT_EQ(a.tag_names(), b.tag_names());
  EXPECT_NE(a.events(), c.events());
  // The seed changes the lengths, not just the arrival times: the reservations differ.
  auto sizes = [](const TraceRecorder& t) {
    std::vector<std::uint64_t> out;
    for (const TraceEvent& e : t.events()) {
      if (e.kind == EventKind::kAlloc && t.tag(e).starts_with("kv.req")) out.push_back(e.size);
    }
    return out;
  };
  EXPECT_NE(sizes(a), sizes(c));
}

// Concat regrows each layer's K and V every step: the block of t+1 tokens is allocated while the
// block of t tokens is live, then the old one is freed, so each tensor's blocks grow by one token.
TEST(LlmServeGenerator, ConcatGrowsEveryLayerInASawtooth) {
  const TraceRecorder trace =
      generate(kTinyShape + ",L=2,requests=1,dataset=fixed,prompt_len=5,output_len=6,arrival=burst,kv=concat,kv_capacity=1KiB");
  std::unordered_map<SlotId, std::uint64_t> live;
  std::map<std::string, std::vector<std::uint64_t>> sizes;
  std::map<std::string, SlotId> current;
  for (const TraceEvent& e : trace.events()) {
    if (e.kind == EventKind::kAlloc) {
      live[e.id] = e.size;
      const std::string tag(trace.tag(e));
      if (!tag.starts_with("kv.req0.layer")) continue;
      // The previous block of this tensor is still live when its successor is allocated.
      if (current.contains(tag)) {
        EXPECT_TRUE(live.contains(current[tag])) << tag;
      }
      current[tag] = e.id;
      sizes[tag].push_back(e.size);
    } else if (e.kind == EventKind::kFree) {
      live.erase(e.id);
    }
  }
  // K or V of one token in one layer: a_kv*d*p = 8 B; stored tokens 5, 6, ..., 10.
  const std::vector<std::uint64_t> sawtooth = {40, 48, 56, 64, 72, 80};
  for (const char* tensor : {"kv.req0.layer0.k", "kv.req0.layer0.v", "kv.req0.layer1.k", "kv.req0.layer1.v"}) {
    EXPECT_EQ(sizes[tensor], sawtooth) << tensor;
  }
}

// Every bad option is one InputError of one line that names the option.
TEST(LlmServeGenerator, BadOptionsGiveOneLineInputErrors) {
  const std::pair<std::string, std::string> cases[] = {
      {"llm-serve:kv=buddy", "kv"},
      {"llm-serve/gpt5", "gpt5"},
      {"llm-serve:a=3", "a"},
      {"llm-serve:a_kv=5", "a_kv"},
      {"llm-serve:dataset=fixed", "dataset"},
      {"llm-serve:prompt_len=10", "prompt_len"},
      {"llm-serve:dataset=fixed,prompt_len=4000,output_len=200", "output_len"},
      {"llm-serve:rate=0", "rate"},
      {"llm-serve:max_num_batched_tokens=1024", "max_num_batched_tokens"},
      {"llm-serve:gpu_memory_utilization=1.5", "gpu_memory_utilization"},
      {"llm-serve:gpu_memory=15GiB", "gpu_memory"},
      {"llm-serve:kv=contiguous-max,kv_capacity=1GiB", "kv_capacity"},
      {"llm-serve:requests=0", "requests"},
      {"llm-serve:L=0", "L"},
      {"llm-serve:hbm_gbps=0", "hbm_gbps"},
  };
  for (const auto& [spec, key] : cases) {
    SCOPED_TRACE(spec);
    try {
      TraceRecorder recorder;
      generate_workload(spec, recorder);
      ADD_FAILURE() << "no error";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
      EXPECT_NE(message.find(key), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace tiermark
