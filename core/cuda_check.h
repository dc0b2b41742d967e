// NT_CUDA_CHECK(call): every CUDA runtime call goes through it. On failure it throws
// std::runtime_error "file:line (rank R): CUDA call <call> failed: <name>: <error string>".
// Needs only cuda_runtime.h (no LibTorch CUDA headers), so nvcc-compiled kernels use it too.
// CudaDeviceScope: makes a device current for a scope (launches, library calls) and restores
// the caller's device on leaving it.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/log.h"

#define NT_CUDA_CHECK(call)                                                                        \
  do {                                                                                             \
    const cudaError_t nt_cuda_rc_ = (call);                                                        \
    if (nt_cuda_rc_ != cudaSuccess)                                                                \
      throw std::runtime_error(::nt::where(__FILE__, __LINE__,                                     \
                                           std::string("CUDA call ") + #call + " failed: " +       \
                                               cudaGetErrorName(nt_cuda_rc_) + ": " +              \
                                               cudaGetErrorString(nt_cuda_rc_)));                  \
  } while (0)

namespace nt {

class CudaDeviceScope {
 public:
  explicit CudaDeviceScope(int device) {
    NT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) NT_CUDA_CHECK(cudaSetDevice(device));
  }
  ~CudaDeviceScope() { cudaSetDevice(previous_); }
  CudaDeviceScope(const CudaDeviceScope&) = delete;
  CudaDeviceScope& operator=(const CudaDeviceScope&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace nt
