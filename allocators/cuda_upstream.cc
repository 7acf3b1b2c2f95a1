#include "allocators/cuda_upstream.h"

#include <string>
#include <vector>

#include "common/input_error.h"
#include "cuda/cuda_runtime.h"

namespace tiermark {
namespace {

// cudaMalloc aligns to at least 256 bytes (CUDA C++ Programming Guide, "Device Memory Accesses");
// a larger alignment cannot be asked for, so such a request is refused rather than misaligned.
constexpr std::size_t kCudaAlignment = 256;

const std::vector<OptionSpec> kCudaOptions = {
    {"device", OptionType::kCount, "0", "CUDA device index"},
    {"async", OptionType::kBool, "false", "cudaMallocAsync/cudaFreeAsync (the stream-ordered pool) instead of cudaMalloc/cudaFree"},
    {"capacity", OptionType::kSize, "", "most bytes held at once; unset means what the device gives"},
};

}  // namespace

std::span<const OptionSpec> CudaUpstream::option_specs() { return kCudaOptions; }

CudaUpstream::CudaUpstream(const Options& options)
    : Upstream(options.canonical(), options.has("capacity") ? options.size("capacity") : 0, 0.0, 0.0),
      device_(static_cast<int>(options.count("device"))),
      stream_ordered_(options.flag("async")) {
  if (options.has("capacity") && options.size("capacity") == 0) options.reject("capacity", "must be positive");
  const cuda::Probe probe = cuda::probe();
  if (!probe.unavailable.empty()) throw InputError("memory source 'cuda': " + probe.unavailable);
  if (options.count("device") >= probe.devices.size()) {
    options.reject("device", "no such CUDA device (this machine has " + std::to_string(probe.devices.size()) + ")");
  }
}

void* CudaUpstream::do_allocate(std::size_t bytes, std::size_t alignment) noexcept {
  if (alignment > kCudaAlignment) return nullptr;
  std::string error;
  return cuda::device_alloc(device_, bytes, stream_ordered_, error);
}

void CudaUpstream::do_deallocate(void* p, std::size_t, std::size_t) noexcept {
  std::string error;
  cuda::device_free(device_, p, stream_ordered_, error);
}

}  // namespace tiermark
