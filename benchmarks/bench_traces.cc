// bench_traces: how fast traces are made and moved, in events per second (items_per_second).
//   generate/<spec>       a built-in generator writing into a sink that drops events (the generator
//                         alone, with the validation every generated trace gets)
//   write/<format>/<spec> encoding that workload's events into memory as CSV or binary
//   read/<format>/<spec>  decoding them again, through pump()'s validation, as every reader is used
// Binary rows also report bytes_per_event. Nothing is asserted; the numbers are measured.
#include <benchmark/benchmark.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "workloads/binary_trace.h"
#include "workloads/csv_trace.h"
#include "workloads/trace_recorder.h"
#include "workloads/workload_generator.h"
#include "benchmarks/bench_main.h"

namespace tiermark {
namespace {

// Small but representative configurations: about 10^5 to 10^6 events each.
const std::vector<std::string> kSpecs = {
    "transformer/cs336-2.7b:steps=2",
    "cnn/resnet50:batch=32,steps=2",
    "llm-serve/llama2-7b:requests=200",
};

class NullSink final : public TraceSink {
 public:
  void begin(const TraceMetadata&, const TagTable&) override {}
  void event(const TraceEvent& event) override { benchmark::DoNotOptimize(event); }
  void end() override {}
};

template <class Writer>
std::string encode(const TraceRecorder& trace) {
  RecordedTraceSource source(trace);
  std::ostringstream out;
  Writer writer(out);
  pump(source, writer);
  return out.str();
}

void register_benchmarks() {
  for (const std::string& spec : kSpecs) {
    benchmark::RegisterBenchmark(("generate/" + spec).c_str(), [spec](benchmark::State& state) {
      std::uint64_t events = 0;
      for (auto _ : state) {
        NullSink sink;
        events += generate_workload(spec, sink);
      }
      state.SetItemsProcessed(static_cast<std::int64_t>(events));
    })->Unit(benchmark::kMillisecond);

    auto trace = std::make_shared<TraceRecorder>();
    generate_workload(spec, *trace);
    const auto events = static_cast<std::int64_t>(trace->events().size());
    auto add_format = [&]<class Reader, class Writer>(const char* format) {
      benchmark::RegisterBenchmark((std::string("write/") + format + "/" + spec).c_str(), [trace, events](benchmark::State& state) {
        std::size_t bytes = 0;
        for (auto _ : state) bytes = encode<Writer>(*trace).size();
        state.SetItemsProcessed(state.iterations() * events);
        state.counters["bytes_per_event"] = static_cast<double>(bytes) / static_cast<double>(events);
      })->Unit(benchmark::kMillisecond);
      const auto encoded = std::make_shared<std::string>(encode<Writer>(*trace));
      benchmark::RegisterBenchmark((std::string("read/") + format + "/" + spec).c_str(), [encoded, events](benchmark::State& state) {
        for (auto _ : state) {
          std::istringstream in(*encoded);
          Reader reader(in, "bench");
          NullSink sink;
          pump(reader, sink);
        }
        state.SetItemsProcessed(state.iterations() * events);
      })->Unit(benchmark::kMillisecond);
    };
    add_format.template operator()<BinaryTraceReader, BinaryTraceWriter>("tmt");
    add_format.template operator()<CsvTraceReader, CsvTraceWriter>("csv");
  }
}

}  // namespace
}  // namespace tiermark

int main(int argc, char** argv) { return tiermark::run_benchmark_main(argc, argv, tiermark::register_benchmarks); }
