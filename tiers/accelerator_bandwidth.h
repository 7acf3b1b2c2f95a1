// The accelerator tier: host-to-device, device-to-host and device-local copy bandwidth of one GPU by
// nvbandwidth's method (github.com/NVIDIA/nvbandwidth README, "Measurement Details"): copy-engine
// copies (cudaMemcpyAsync) of a 64 MiB buffer, 16 per timed run, timed with CUDA events behind a gate
// so enqueueing is not timed; `trials` runs (3) after a warm-up run, and the median reported. Host
// buffers are pinned and placed on the GPU's NUMA node. Bytes are counted as nvbandwidth counts
// them: the bytes copied (one read and one write of each byte count once, unlike STREAM).
// The measurement runs over a CopyEngine, so the method is tested without a GPU; cuda_copy_engine()
// is the real one. Invariant: every result is checked (host -> device -> device -> host returns the
// pattern), and a wrong copy throws std::runtime_error, never a number.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cuda/cuda_runtime.h"
#include "tiers/tier_measure.h"
#include "tiers/topology.h"

namespace tiermark {

class CopyEngine {
 public:
  virtual ~CopyEngine() = default;
  // Each returns nullptr / false / nullopt with `error` set on failure.
  virtual void* host_alloc(std::size_t bytes, std::string& error) = 0;  // pinned
  virtual void host_free(void* p) = 0;
  virtual void* device_alloc(std::size_t bytes, std::string& error) = 0;
  virtual void device_free(void* p) = 0;
  virtual bool copy(void* dst, const void* src, std::size_t bytes, cuda::CopyKind kind, std::string& error) = 0;
  virtual std::optional<double> time_copies_ms(void* dst, const void* src, std::size_t bytes, cuda::CopyKind kind,
                                               int loops, std::string& error) = 0;
};

// The CUDA runtime's engine on `device`.
std::unique_ptr<CopyEngine> cuda_copy_engine(int device);

struct AcceleratorSettings {
  std::uint64_t buffer_bytes = std::uint64_t{64} << 20;  // nvbandwidth --bufferSize default
  int loops = 16;                                        // nvbandwidth --loopCount default
  int trials = 3;                                        // nvbandwidth repeats each test 3 times
  int warmups = 1;
};

struct CopyBandwidth {
  std::string direction;  // "h2d", "d2h", "d2d"
  std::uint64_t bytes = 0;  // per copy
  int loops = 0;
  std::vector<double> trial_bytes_per_second;
  SampleSummary bytes_per_second;  // median is the figure reported
};

std::string_view direction_name(cuda::CopyKind kind);

// Measures the three directions on `engine`. When `topology` and `host_node` are given, the calling
// thread's memory is bound to that node while the pinned host buffers are made. Throws
// std::runtime_error naming the failing call or the wrong copy.
std::vector<CopyBandwidth> measure_copies(CopyEngine& engine, const AcceleratorSettings& settings,
                                          const Topology* topology = nullptr,
                                          std::optional<unsigned> host_node = std::nullopt);

}  // namespace tiermark
