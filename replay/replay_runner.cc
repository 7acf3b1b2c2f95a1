#include "replay/replay_runner.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <span>
#include <type_traits>

#include "allocators/allocator_types.h"
#include "allocators/registry.h"
#include "common/input_error.h"
#include "replay/page_lru.h"
#include "replay/replay_loop.h"
#include "replay/threaded_replay.h"

namespace tiermark {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t elapsed_ns(Clock::time_point t0, Clock::time_point t1) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
  return ns < 0 ? 0 : static_cast<std::uint64_t>(ns);
}

template <class A>
void time_ops(Touch touch, A& allocator, std::span<const ReplayOp> ops, void** slots, std::uint64_t overhead,
              LatencyHistogram& alloc_ns, LatencyHistogram& free_ns) {
  for (const ReplayOp& op : ops) {
    if (op.kind == ReplayOpKind::kAlloc) {
      const Clock::time_point t0 = Clock::now();
      clobber_memory();
      void* p = allocator.allocate(op.size, op.alignment(), op.stream);
      keep(p);
      clobber_memory();
      const Clock::time_point t1 = Clock::now();
      slots[op.slot] = p;
      const std::uint64_t ns = elapsed_ns(t0, t1);
      alloc_ns.record(ns > overhead ? ns - overhead : 0);
      // The touch is the program's work, not the allocator's: outside the timed region.
      if (p != nullptr) {
        switch (touch) {
          case Touch::kNone: break;
          case Touch::kFirst: touch_block<Touch::kFirst>(p, op.size); break;
          case Touch::kFull: touch_block<Touch::kFull>(p, op.size); break;
        }
      }
    } else if (void* p = slots[op.slot]; p != nullptr) {
      const Clock::time_point t0 = Clock::now();
      clobber_memory();
      allocator.deallocate(p, op.size, op.alignment(), op.stream);
      clobber_memory();
      const Clock::time_point t1 = Clock::now();
      const std::uint64_t ns = elapsed_ns(t0, t1);
      free_ns.record(ns > overhead ? ns - overhead : 0);
    }
  }
}

MemorySample sample_of(std::uint64_t op_index, const AllocatorStats& s) {
  return {op_index, s.requested_bytes.current, s.allocated_bytes.current, s.reserved_bytes.current,
          s.reserved_known ? s.external_fragmentation() : 0.0};
}

// `Make` builds a fresh allocator on the upstream it is given: make(upstream) -> unique_ptr<A>.
template <class A, class Make>
class Runner final : public AllocatorRunner {
 public:
  Runner(std::string_view name, std::string config, const FlatTrace& trace, const ReplaySettings& settings, Make make)
      : name_(name), config_(std::move(config)), trace_(trace), settings_(settings), make_(std::move(make)),
        slots_(trace.slots, nullptr) {
    // Built once now: a configuration the upstream cannot serve fails here, with its own message.
    auto upstream = make_upstream(settings_.upstream_spec);
    if (settings_.touch != Touch::kNone && !upstream->touchable()) {
      throw InputError("--touch " + std::string(touch_name(settings_.touch)) + " writes into blocks: it needs --memory host");
    }
    make_(*upstream).reset();
    if (settings_.threads > 1) {
      if (trace_.streamed()) throw InputError("--threads: a streamed trace replays on one thread (raise --max-events-in-memory)");
      if constexpr (std::is_same_v<A, PlannedAllocator>) {
        throw InputError("--threads: the planner serves requests in trace order, which threads do not keep");
      }
      streams_ = split_by_thread(trace_, settings_.threads);
    }
  }

  std::string_view name() const override { return name_; }
  const std::string& config() const override { return config_; }

  RepetitionResult repetition(bool latency) override {
    if (settings_.threads > 1) return threaded_repetition(latency);
    RepetitionResult out;
    {
      auto upstream = make_upstream(settings_.upstream_spec);
      auto allocator = make_(*upstream);
      // One timed region per buffer (one in all for a trace in memory): reading a streamed trace
      // again happens between them, untimed.
      std::uint64_t ns = 0;
      for_each_chunk(trace_, [&](std::span<const ReplayOp> ops, std::uint64_t) {
        const Clock::time_point t0 = Clock::now();
        run_ops(settings_.touch, *allocator, ops.data(), ops.data() + ops.size(), slots_.data());
        const Clock::time_point t1 = Clock::now();
        ns += elapsed_ns(t0, t1);
        return true;
      });
      out.seconds = static_cast<double>(ns) * 1e-9;
      out.ops_per_second = out.seconds > 0 ? static_cast<double>(trace_.events) / out.seconds : 0;
      out.stats = allocator->stats();
      out.upstream = upstream->stats();
      release_leftovers(*allocator, trace_, slots_.data());
    }
    if (latency) {
      if (overhead_ns_ == UINT64_MAX) overhead_ns_ = timer_overhead_ns();
      auto upstream = make_upstream(settings_.upstream_spec);
      auto allocator = make_(*upstream);
      for_each_chunk(trace_, [&](std::span<const ReplayOp> ops, std::uint64_t) {
        time_ops(settings_.touch, *allocator, ops, slots_.data(), overhead_ns_, out.alloc_ns, out.free_ns);
        return true;
      });
      release_leftovers(*allocator, trace_, slots_.data());
      out.latency_measured = true;
    }
    return out;
  }

  MemoryObservation observe_memory() override {
    MemoryObservation out;
    const std::uint64_t n = trace_.events;
    const std::uint64_t every = settings_.sample_every != 0 ? settings_.sample_every : std::max<std::uint64_t>(1, n / 1000);
    const TagId step_ns = trace_.counter_tag("sim.step_ns");
    const TagId token = trace_.counter_tag("kv.token_bytes");
    const TagId committed = trace_.counter_tag("kv.committed_bytes");
    out.kv_counters = step_ns != kNoTag && token != kNoTag && committed != kNoTag;
    std::uint64_t token_bytes = 0, committed_bytes = 0;
    {
      auto upstream = make_upstream(settings_.upstream_spec);
      auto allocator = make_(*upstream);
      auto counter = trace_.counters.begin();
      for_each_chunk(trace_, [&](std::span<const ReplayOp> ops, std::uint64_t first) {
        for (std::uint64_t k = 0; k < ops.size(); ++k) {
          const std::uint64_t i = first + k;
          for (; counter != trace_.counters.end() && counter->op_index == i; ++counter) {
            if (!out.kv_counters) continue;
            if (counter->tag == token) token_bytes = counter->value;
            if (counter->tag == committed) committed_bytes = counter->value;
            if (counter->tag == step_ns) kv_step(out, allocator->stats(), token_bytes, committed_bytes, counter->value);
          }
          run_ops(settings_.touch, *allocator, &ops[k], &ops[k] + 1, slots_.data());
          const bool at_peak = i == trace_.peak_op;
          if (at_peak || i % every == every - 1 || i + 1 == n) {
            const AllocatorStats s = allocator->stats();
            out.timeline.push_back(sample_of(i, s));
            if (at_peak) out.at_peak = s;
            if (out.timeline.back().external_fragmentation > out.max_external_fragmentation) {
              out.max_external_fragmentation = out.timeline.back().external_fragmentation;
              out.max_external_fragmentation_op = i;
            }
          }
        }
        return true;
      });
      // Counters after the last op: the same updates as inside the loop (a step's token and committed
      // bytes come before its sim.step_ns).
      for (; counter != trace_.counters.end(); ++counter) {
        if (!out.kv_counters) continue;
        if (counter->tag == token) token_bytes = counter->value;
        if (counter->tag == committed) committed_bytes = counter->value;
        if (counter->tag == step_ns) kv_step(out, allocator->stats(), token_bytes, committed_bytes, counter->value);
      }
      out.reserved_known = allocator->stats().reserved_known;
      release_leftovers(*allocator, trace_, slots_.data());
    }
    if (out.reserved_known && n != 0) {
      // Replay to the peak op again and trim(): what is still free then cannot go back upstream.
      auto upstream = make_upstream(settings_.upstream_spec);
      auto allocator = make_(*upstream);
      // Each slot's last op up to the peak: an alloc means the block is live at the peak.
      std::vector<ReplayOp> last_op(trace_.slots);
      std::vector<bool> live(trace_.slots, false);
      for_each_chunk(trace_, [&](std::span<const ReplayOp> ops, std::uint64_t first) {
        const std::uint64_t count = std::min<std::uint64_t>(ops.size(), trace_.peak_op + 1 - first);
        run_ops(settings_.touch, *allocator, ops.data(), ops.data() + count, slots_.data());
        for (std::uint64_t k = 0; k < count; ++k) {
          last_op[ops[k].slot] = ops[k];
          live[ops[k].slot] = ops[k].kind == ReplayOpKind::kAlloc;
        }
        return first + count <= trace_.peak_op;
      });
      allocator->trim();
      const AllocatorStats s = allocator->stats();
      out.unreturnable_bytes_at_peak = s.reserved_bytes.current - s.allocated_bytes.current;
      for (std::size_t slot = 0; slot < trace_.slots; ++slot) {
        if (live[slot] && slots_[slot] != nullptr) {
          const ReplayOp& op = last_op[slot];
          allocator->deallocate(slots_[slot], op.size, op.alignment(), op.stream);
        }
      }
    }
    return out;
  }

  std::optional<LocalityObservation> observe_locality() override {
    if (settings_.touch != Touch::kFull || settings_.cache_bytes == 0) return std::nullopt;
    auto upstream = make_upstream(settings_.upstream_spec);
    if (!upstream->touchable()) return std::nullopt;
    if (overhead_ns_ == UINT64_MAX) overhead_ns_ = timer_overhead_ns();
    PageLru cache(settings_.cache_bytes);
    upstream->set_release_hook(
        [](void* model, void* p, std::size_t bytes) {
          static_cast<PageLru*>(model)->forget(reinterpret_cast<std::uintptr_t>(p), bytes);
        },
        &cache);
    auto allocator = make_(*upstream);
    LocalityObservation out;
    out.cache_bytes = settings_.cache_bytes;
    std::uint64_t ns_total = 0, hot_ns = 0, cold_ns = 0;
    for_each_chunk(trace_, [&](std::span<const ReplayOp> ops, std::uint64_t) {
      for (const ReplayOp& op : ops) {
        if (op.kind == ReplayOpKind::kFree) {
          if (void* p = slots_[op.slot]; p != nullptr) allocator->deallocate(p, op.size, op.alignment(), op.stream);
          continue;
        }
        void* p = allocator->allocate(op.size, op.alignment(), op.stream);
        slots_[op.slot] = p;
        if (p == nullptr) continue;
        const std::uint64_t resident = cache.touch(reinterpret_cast<std::uintptr_t>(p), op.size);
        const Clock::time_point t0 = Clock::now();
        clobber_memory();
        touch_block<Touch::kFull>(p, op.size);
        clobber_memory();
        const std::uint64_t raw = elapsed_ns(t0, Clock::now());
        const std::uint64_t ns = raw > overhead_ns_ ? raw - overhead_ns_ : 0;
        out.touched_bytes += op.size;
        out.resident_bytes += resident;
        ns_total += ns;
        if (2 * resident >= op.size) {
          out.hot_bytes += op.size;
          hot_ns += ns;
        } else {
          out.cold_bytes += op.size;
          cold_ns += ns;
        }
      }
      return true;
    });
    release_leftovers(*allocator, trace_, slots_.data());
    allocator.reset();
    upstream->set_release_hook(nullptr, nullptr);
    out.touch_seconds = static_cast<double>(ns_total) * 1e-9;
    out.hot_seconds = static_cast<double>(hot_ns) * 1e-9;
    out.cold_seconds = static_cast<double>(cold_ns) * 1e-9;
    return out;
  }

 private:
  // The process's malloc is thread-safe; tiermark's allocators are called under one lock.
  static constexpr bool kThreadSafe = std::is_same_v<A, SystemAllocator>;

  template <class B>
  ThreadedPassResult threaded_pass(B& allocator, bool timed) {
    if constexpr (kThreadSafe) {
      return replay_threads(allocator, streams_, trace_.slots, slots_.data(), settings_.touch, timed, overhead_ns_);
    } else {
      LockedAllocator<B> locked(allocator);
      return replay_threads(locked, streams_, trace_.slots, slots_.data(), settings_.touch, timed, overhead_ns_);
    }
  }

  RepetitionResult threaded_repetition(bool latency) {
    RepetitionResult out;
    if (latency && overhead_ns_ == UINT64_MAX) overhead_ns_ = timer_overhead_ns();
    {
      auto upstream = make_upstream(settings_.upstream_spec);
      auto allocator = make_(*upstream);
      const ThreadedPassResult pass = threaded_pass(*allocator, false);
      out.seconds = static_cast<double>(pass.wall_ns) * 1e-9;
      out.ops_per_second = out.seconds > 0 ? static_cast<double>(trace_.events) / out.seconds : 0;
      out.stats = allocator->stats();
      out.upstream = upstream->stats();
      release_leftovers(*allocator, trace_, slots_.data());
    }
    if (latency) {
      auto upstream = make_upstream(settings_.upstream_spec);
      auto allocator = make_(*upstream);
      ThreadedPassResult pass = threaded_pass(*allocator, true);
      out.alloc_ns = pass.alloc_ns;
      out.free_ns = pass.free_ns;
      release_leftovers(*allocator, trace_, slots_.data());
      out.latency_measured = true;
    }
    return out;
  }

  static void kv_step(MemoryObservation& out, const AllocatorStats& s, std::uint64_t token_bytes,
                      std::uint64_t committed_bytes, std::uint64_t dt) {
    const double t = static_cast<double>(dt);
    out.kv_token_time += static_cast<double>(token_bytes) * t;
    out.kv_committed_time += static_cast<double>(committed_bytes) * t;
    // Reserved memory not holding non-KV data: the KV cache's share plus every byte of slack.
    const std::uint64_t non_kv = s.requested_bytes.current - std::min(s.requested_bytes.current, committed_bytes);
    out.kv_reserved_time += static_cast<double>(s.reserved_bytes.current - std::min(s.reserved_bytes.current, non_kv)) * t;
  }

  std::string name_;
  std::string config_;
  const FlatTrace& trace_;
  ReplaySettings settings_;
  Make make_;
  std::vector<void*> slots_;
  std::vector<ThreadOps> streams_;  // with threads > 1: each replay thread's ops
  std::uint64_t overhead_ns_ = UINT64_MAX;
};

template <class A, class Make>
std::unique_ptr<AllocatorRunner> runner(std::string_view name, std::string config, const FlatTrace& trace,
                                        const ReplaySettings& settings, Make make) {
  return std::make_unique<Runner<A, Make>>(name, std::move(config), trace, settings, std::move(make));
}

}  // namespace

Touch parse_touch(std::string_view name) {
  if (name == "none") return Touch::kNone;
  if (name == "first") return Touch::kFirst;
  if (name == "full") return Touch::kFull;
  throw InputError("--touch: unknown value '" + std::string(name) + "' (known: none, first, full)");
}

std::string_view touch_name(Touch touch) {
  switch (touch) {
    case Touch::kNone: return "none";
    case Touch::kFirst: return "first";
    case Touch::kFull: return "full";
  }
  return "none";
}

std::unique_ptr<AllocatorRunner> make_runner(std::string_view spec, const FlatTrace& trace, const ReplaySettings& settings) {
  const std::string name(spec.substr(0, spec.find(':')));
  std::unique_ptr<AllocatorRunner> out;
  AllAllocatorTypes::for_each([&]<class T>(std::type_identity<T>) {
    if (out != nullptr || name != T::kName) return;
    const Options options = make_options(spec, T::kName, T::option_specs());
    out = runner<T>(T::kName, options.canonical(), trace, settings,
                    [options](Upstream& upstream) { return std::make_unique<T>(options, upstream); });
  });
  if (out == nullptr) {
    make_allocator(spec, *make_upstream("simulated"));  // throws the registry's "unknown allocator" message
    throw InputError("unknown allocator '" + name + "'");
  }
  return out;
}

std::unique_ptr<AllocatorRunner> make_planner_runner(const FlatTrace& trace, const std::vector<PlannedBuffer>& buffers,
                                                     const MemoryPlan& plan, const ReplaySettings& settings) {
  return runner<PlannedAllocator>(PlannedAllocator::kName, std::string(PlannedAllocator::kName), trace, settings,
                                  [&buffers, &plan](Upstream& upstream) {
                                    return std::make_unique<PlannedAllocator>(plan, buffers, upstream);
                                  });
}

std::uint64_t timer_overhead_ns() {
  constexpr std::size_t kSamples = 20'001;
  std::vector<std::uint64_t> samples(kSamples);
  for (std::uint64_t& sample : samples) {
    const Clock::time_point t0 = Clock::now();
    clobber_memory();
    clobber_memory();
    const Clock::time_point t1 = Clock::now();
    sample = elapsed_ns(t0, t1);
  }
  std::nth_element(samples.begin(), samples.begin() + kSamples / 2, samples.end());
  return samples[kSamples / 2];
}

}  // namespace tiermark
