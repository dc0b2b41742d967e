// NT_CUDA_CHECK(call) and NT_NCCL_CHECK(call): every CUDA runtime and NCCL call goes through
// them. On failure they throw std::runtime_error "file:line (rank R): CUDA|NCCL call <call>
// failed: <error string>". Needs only cuda_runtime.h and nccl.h (no LibTorch CUDA headers).
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

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

#define NT_NCCL_CHECK(call)                                                                        \
  do {                                                                                             \
    const ncclResult_t nt_nccl_rc_ = (call);                                                       \
    if (nt_nccl_rc_ != ncclSuccess)                                                                \
      throw std::runtime_error(::nt::where(__FILE__, __LINE__,                                     \
                                           std::string("NCCL call ") + #call + " failed: " +       \
                                               ncclGetErrorString(nt_nccl_rc_) +                   \
                                               " (NCCL_DEBUG=WARN prints NCCL's own reason)"));    \
  } while (0)
