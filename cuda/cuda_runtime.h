// The CUDA runtime behind a plain C++ interface: the one file that calls CUDA, so nothing else needs
// its headers or an #if. A build without the toolkit (CMake found no CUDAToolkit) compiles the same
// interface, and every call says "built without CUDA"; on a machine without a driver or a device,
// probe() says "no CUDA device" with the runtime's own reason. No call throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tiermark::cuda {

struct Device {
  int index = 0;
  std::string name;
  std::string pci_bus_id;          // "0000:65:00.0", as cudaDeviceGetPCIBusId gives it
  std::uint64_t memory_bytes = 0;  // total device memory
  int compute_major = 0, compute_minor = 0;
};

struct Probe {
  std::vector<Device> devices;
  // Empty when there is a device; else one line for the user, e.g. "no CUDA device
  // (cudaGetDeviceCount: CUDA driver version is insufficient for CUDA runtime version)".
  std::string unavailable;
  int runtime_version = 0;  // 13000 for CUDA 13.0; 0 in a build without CUDA
  int driver_version = 0;   // 0 when no driver is installed
};

// True when this build links the CUDA runtime.
bool built_with_cuda();
// Asks the runtime once per call (cheap after the first: the runtime caches its initialisation).
Probe probe();

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };

// Device memory on `device`: cudaMalloc, or cudaMallocAsync on the device's default stream when
// `stream_ordered` (its memory pool). nullptr with `error` set on failure.
void* device_alloc(int device, std::size_t bytes, bool stream_ordered, std::string& error) noexcept;
bool device_free(int device, void* p, bool stream_ordered, std::string& error) noexcept;
// Page-locked host memory (cudaHostAlloc), placed by the calling thread's memory policy.
void* pinned_host_alloc(std::size_t bytes, std::string& error) noexcept;
void pinned_host_free(void* p) noexcept;
// A synchronous copy on `device` (for checking contents, not for timing).
bool copy(int device, void* dst, const void* src, std::size_t bytes, CopyKind kind, std::string& error) noexcept;

// nvbandwidth's measurement: on one stream of `device`, a host gate holds the stream while a start
// event, `loops` copies of `bytes` and a stop event are enqueued, then the gate opens; the result is
// the events' elapsed milliseconds, so enqueueing is not timed. nullopt with `error` on failure.
std::optional<double> time_copies(int device, void* dst, const void* src, std::size_t bytes, CopyKind kind, int loops,
                                  std::string& error) noexcept;

}  // namespace tiermark::cuda
