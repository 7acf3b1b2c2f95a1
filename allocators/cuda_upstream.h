// CudaUpstream: real device memory from the CUDA runtime (cudaMalloc/cudaFree, or the stream-ordered
// cudaMallocAsync/cudaFreeAsync pool), so every allocator can run over a real GPU's memory. Not
// touchable from the host: allocators keep their metadata on the side, as over `simulated`.
// Built in every configuration; without the toolkit or a device, constructing it throws InputError
// with one line ("no CUDA device (...)"), which the commands report with exit code 2.
#pragma once

#include <span>
#include <string_view>

#include "allocators/upstream.h"
#include "common/options.h"

namespace tiermark {

class CudaUpstream final : public Upstream {
 public:
  static constexpr std::string_view kName = "cuda";
  static constexpr std::string_view kDescription =
      "real GPU memory from the CUDA runtime (cudaMalloc, or cudaMallocAsync); needs a CUDA device";
  static std::span<const OptionSpec> option_specs();

  explicit CudaUpstream(const Options& options);
  ~CudaUpstream() override = default;

  bool touchable() const noexcept override { return false; }
  int device() const { return device_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) noexcept override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept override;

  int device_;
  bool stream_ordered_;
};

}  // namespace tiermark
