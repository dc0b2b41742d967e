// CUDA events around queued work (see models/event_timer_cuda.h).
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "models/event_timer_cuda.h"

namespace nt::cuda {

EventTimer::EventTimer(int device, void* stream) : stream_(stream), device_(device) {
  CudaDeviceScope scope(device_);
  cudaEvent_t start = nullptr, end = nullptr;
  NT_CUDA_CHECK(cudaEventCreate(&start));
  NT_CUDA_CHECK(cudaEventCreate(&end));
  start_ = start;
  end_ = end;
  NT_CUDA_CHECK(cudaEventRecord(start, static_cast<cudaStream_t>(stream_)));
}

EventTimer::~EventTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));  // failures ignored (destructor)
  cudaEventDestroy(static_cast<cudaEvent_t>(end_));
}

void EventTimer::stop() {
  CudaDeviceScope scope(device_);
  NT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(end_), static_cast<cudaStream_t>(stream_)));
  stopped_ = true;
}

std::optional<float> EventTimer::ms() const {
  if (!stopped_) return std::nullopt;
  const cudaError_t rc = cudaEventQuery(static_cast<cudaEvent_t>(end_));
  if (rc == cudaErrorNotReady) return std::nullopt;
  NT_CUDA_CHECK(rc);
  float ms = 0.f;
  NT_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(end_)));
  return ms;
}

}  // namespace nt::cuda
