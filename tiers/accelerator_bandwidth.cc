#include "tiers/accelerator_bandwidth.h"

#include <cstring>
#include <stdexcept>

namespace tiermark {
namespace {

class CudaCopyEngine final : public CopyEngine {
 public:
  explicit CudaCopyEngine(int device) : device_(device) {}
  void* host_alloc(std::size_t bytes, std::string& error) override { return cuda::pinned_host_alloc(bytes, error); }
  void host_free(void* p) override { cuda::pinned_host_free(p); }
  void* device_alloc(std::size_t bytes, std::string& error) override {
    return cuda::device_alloc(device_, bytes, false, error);
  }
  void device_free(void* p) override {
    std::string ignored;
    cuda::device_free(device_, p, false, ignored);
  }
  bool copy(void* dst, const void* src, std::size_t bytes, cuda::CopyKind kind, std::string& error) override {
    return cuda::copy(device_, dst, src, bytes, kind, error);
  }
  std::optional<double> time_copies_ms(void* dst, const void* src, std::size_t bytes, cuda::CopyKind kind, int loops,
                                       std::string& error) override {
    return cuda::time_copies(device_, dst, src, bytes, kind, loops, error);
  }

 private:
  int device_;
};

// One buffer of the engine's, freed on every path.
class Buffer {
 public:
  Buffer(CopyEngine& engine, bool host, std::size_t bytes) : engine_(engine), host_(host) {
    std::string error;
    p_ = host ? engine.host_alloc(bytes, error) : engine.device_alloc(bytes, error);
    if (p_ == nullptr) throw std::runtime_error("accelerator tier: " + error);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { host_ ? engine_.host_free(p_) : engine_.device_free(p_); }
  void* get() const { return p_; }

 private:
  CopyEngine& engine_;
  bool host_;
  void* p_ = nullptr;
};

void must(bool done, const std::string& error) {
  if (!done) throw std::runtime_error("accelerator tier: " + error);
}

}  // namespace

std::unique_ptr<CopyEngine> cuda_copy_engine(int device) { return std::make_unique<CudaCopyEngine>(device); }

std::string_view direction_name(cuda::CopyKind kind) {
  switch (kind) {
    case cuda::CopyKind::kHostToDevice: return "h2d";
    case cuda::CopyKind::kDeviceToHost: return "d2h";
    case cuda::CopyKind::kDeviceToDevice: return "d2d";
  }
  return "?";
}

std::vector<CopyBandwidth> measure_copies(CopyEngine& engine, const AcceleratorSettings& settings,
                                          const Topology* topology, std::optional<unsigned> host_node) {
  const std::size_t bytes = settings.buffer_bytes;
  if (bytes == 0 || settings.loops < 1 || settings.trials < 1) throw std::runtime_error("accelerator tier: empty run");
  const bool bind = topology != nullptr && host_node.has_value();
  if (bind) topology->bind_thread_memory_to_node(host_node);
  Buffer host_source(engine, true, bytes), host_result(engine, true, bytes);
  if (bind) topology->bind_thread_memory_to_node(std::nullopt);
  Buffer device_a(engine, false, bytes), device_b(engine, false, bytes);

  // The check: a pattern goes host -> device -> device -> host and must come back unchanged.
  auto* source = static_cast<std::uint64_t*>(host_source.get());
  for (std::size_t i = 0; i < bytes / sizeof(std::uint64_t); ++i) source[i] = 0x9E3779B97F4A7C15ULL * (i + 1);
  std::memset(host_result.get(), 0, bytes);
  std::string error;
  must(engine.copy(device_a.get(), source, bytes, cuda::CopyKind::kHostToDevice, error), error);
  must(engine.copy(device_b.get(), device_a.get(), bytes, cuda::CopyKind::kDeviceToDevice, error), error);
  must(engine.copy(host_result.get(), device_b.get(), bytes, cuda::CopyKind::kDeviceToHost, error), error);
  if (std::memcmp(host_result.get(), source, bytes - bytes % sizeof(std::uint64_t)) != 0) {
    throw std::runtime_error("accelerator tier: a host -> device -> device -> host copy came back changed");
  }

  struct Direction {
    cuda::CopyKind kind;
    void* dst;
    const void* src;
  };
  const Direction directions[] = {{cuda::CopyKind::kHostToDevice, device_a.get(), host_source.get()},
                                  {cuda::CopyKind::kDeviceToHost, host_result.get(), device_a.get()},
                                  {cuda::CopyKind::kDeviceToDevice, device_b.get(), device_a.get()}};
  std::vector<CopyBandwidth> results;
  for (const Direction& d : directions) {
    CopyBandwidth result;
    result.direction = direction_name(d.kind);
    result.bytes = bytes;
    result.loops = settings.loops;
    for (int run = 0; run < settings.warmups + settings.trials; ++run) {
      const std::optional<double> ms = engine.time_copies_ms(d.dst, d.src, bytes, d.kind, settings.loops, error);
      must(ms.has_value(), error);
      if (*ms <= 0) throw std::runtime_error("accelerator tier: the CUDA events measured no time");
      if (run >= settings.warmups) {
        result.trial_bytes_per_second.push_back(double(bytes) * settings.loops / (*ms / 1000.0));
      }
    }
    result.bytes_per_second = summarize(result.trial_bytes_per_second, true);
    results.push_back(result);
  }
  return results;
}

}  // namespace tiermark
