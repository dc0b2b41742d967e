// NT_CUDA_CHECK(call): every CUDA runtime call goes through it. On failure it throws
// std::runtime_error "file:line (rank R): CUDA call <call> failed: <name>: <error string>".
// Needs only cuda_runtime.h (no LibTorch CUDA headers), so nvcc-compiled kernels use it too.
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
