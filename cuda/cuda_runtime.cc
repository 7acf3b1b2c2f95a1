#include "cuda/cuda_runtime.h"

#if TIERMARK_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <atomic>
#include <thread>
#endif

namespace tiermark::cuda {

#if TIERMARK_HAVE_CUDA
namespace {

// "cudaMalloc: out of memory": the failing call and the runtime's words for the error.
bool ok(cudaError_t status, const char* call, std::string& error) {
  if (status == cudaSuccess) return true;
  error = std::string(call) + ": " + cudaGetErrorString(status);
  cudaGetLastError();  // clear the sticky-until-read error so later calls start clean
  return false;
}

cudaMemcpyKind kind_of(CopyKind kind) {
  switch (kind) {
    case CopyKind::kHostToDevice: return cudaMemcpyHostToDevice;
    case CopyKind::kDeviceToHost: return cudaMemcpyDeviceToHost;
    case CopyKind::kDeviceToDevice: return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

// Runs on the runtime's callback thread and holds the stream until the enqueueing thread opens it.
void CUDART_CB wait_for_gate(void* gate) {
  auto* open = static_cast<std::atomic<bool>*>(gate);
  while (!open->load(std::memory_order_acquire)) std::this_thread::yield();
}

}  // namespace

bool built_with_cuda() { return true; }

Probe probe() {
  Probe out;
  cudaRuntimeGetVersion(&out.runtime_version);
  cudaDriverGetVersion(&out.driver_version);
  int count = 0;
  std::string error;
  if (!ok(cudaGetDeviceCount(&count), "cudaGetDeviceCount", error)) {
    out.unavailable = "no CUDA device (" + error + ")";
    return out;
  }
  for (int index = 0; index < count; ++index) {
    cudaDeviceProp properties{};
    if (!ok(cudaGetDeviceProperties(&properties, index), "cudaGetDeviceProperties", error)) continue;
    Device device;
    device.index = index;
    device.name = properties.name;
    device.memory_bytes = properties.totalGlobalMem;
    device.compute_major = properties.major;
    device.compute_minor = properties.minor;
    char bus_id[32] = {};
    if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, index) == cudaSuccess) device.pci_bus_id = bus_id;
    out.devices.push_back(device);
  }
  if (out.devices.empty()) out.unavailable = error.empty() ? "no CUDA device" : "no CUDA device (" + error + ")";
  return out;
}

void* device_alloc(int device, std::size_t bytes, bool stream_ordered, std::string& error) noexcept {
  if (!ok(cudaSetDevice(device), "cudaSetDevice", error)) return nullptr;
  void* p = nullptr;
  if (stream_ordered) {
    if (!ok(cudaMallocAsync(&p, bytes, cudaStreamPerThread), "cudaMallocAsync", error)) return nullptr;
  } else if (!ok(cudaMalloc(&p, bytes), "cudaMalloc", error)) {
    return nullptr;
  }
  return p;
}

bool device_free(int device, void* p, bool stream_ordered, std::string& error) noexcept {
  if (!ok(cudaSetDevice(device), "cudaSetDevice", error)) return false;
  if (stream_ordered) return ok(cudaFreeAsync(p, cudaStreamPerThread), "cudaFreeAsync", error);
  return ok(cudaFree(p), "cudaFree", error);
}

void* pinned_host_alloc(std::size_t bytes, std::string& error) noexcept {
  void* p = nullptr;
  if (!ok(cudaHostAlloc(&p, bytes, cudaHostAllocDefault), "cudaHostAlloc", error)) return nullptr;
  return p;
}

void pinned_host_free(void* p) noexcept {
  if (p != nullptr) cudaFreeHost(p);
}

bool copy(int device, void* dst, const void* src, std::size_t bytes, CopyKind kind, std::string& error) noexcept {
  return ok(cudaSetDevice(device), "cudaSetDevice", error) &&
         ok(cudaMemcpy(dst, src, bytes, kind_of(kind)), "cudaMemcpy", error);
}

std::optional<double> time_copies(int device, void* dst, const void* src, std::size_t bytes, CopyKind kind, int loops,
                                  std::string& error) noexcept {
  if (!ok(cudaSetDevice(device), "cudaSetDevice", error)) return std::nullopt;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  if (!ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate", error)) return std::nullopt;
  std::optional<double> milliseconds;
  std::atomic<bool> gate{false};
  bool gated = false;
  if (ok(cudaEventCreate(&start), "cudaEventCreate", error) && ok(cudaEventCreate(&stop), "cudaEventCreate", error) &&
      ok(cudaLaunchHostFunc(stream, wait_for_gate, &gate), "cudaLaunchHostFunc", error)) {
    gated = true;
    bool enqueued = ok(cudaEventRecord(start, stream), "cudaEventRecord", error);
    for (int i = 0; enqueued && i < loops; ++i) {
      enqueued = ok(cudaMemcpyAsync(dst, src, bytes, kind_of(kind), stream), "cudaMemcpyAsync", error);
    }
    enqueued = enqueued && ok(cudaEventRecord(stop, stream), "cudaEventRecord", error);
    gate.store(true, std::memory_order_release);
    float elapsed = 0;
    if (enqueued && ok(cudaEventSynchronize(stop), "cudaEventSynchronize", error) &&
        ok(cudaEventElapsedTime(&elapsed, start, stop), "cudaEventElapsedTime", error)) {
      milliseconds = elapsed;
    }
  }
  if (gated) gate.store(true, std::memory_order_release);
  cudaStreamSynchronize(stream);  // the gate's callback must finish before `gate` goes out of scope
  if (start != nullptr) cudaEventDestroy(start);
  if (stop != nullptr) cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  return milliseconds;
}

#else  // a build without the CUDA toolkit

namespace {
constexpr const char* kNotBuilt = "tiermark was built without CUDA (CMake found no CUDA toolkit)";
}

bool built_with_cuda() { return false; }

Probe probe() {
  Probe out;
  out.unavailable = std::string("no CUDA device: ") + kNotBuilt;
  return out;
}

void* device_alloc(int, std::size_t, bool, std::string& error) noexcept {
  error = kNotBuilt;
  return nullptr;
}
bool device_free(int, void*, bool, std::string& error) noexcept {
  error = kNotBuilt;
  return false;
}
void* pinned_host_alloc(std::size_t, std::string& error) noexcept {
  error = kNotBuilt;
  return nullptr;
}
void pinned_host_free(void*) noexcept {}
bool copy(int, void*, const void*, std::size_t, CopyKind, std::string& error) noexcept {
  error = kNotBuilt;
  return false;
}
std::optional<double> time_copies(int, void*, const void*, std::size_t, CopyKind, int, std::string& error) noexcept {
  error = kNotBuilt;
  return std::nullopt;
}

#endif

}  // namespace tiermark::cuda
