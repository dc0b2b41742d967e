// NT_NCCL_CHECK(call): every NCCL call goes through it (and NT_CUDA_CHECK, core/cuda_check.h,
// every CUDA runtime call). On failure it throws std::runtime_error "file:line (rank R): NCCL
// call <call> failed: <error string>". Needs only nccl.h (no LibTorch CUDA headers).
#pragma once
#include <nccl.h>

#include <stdexcept>
#include <string>

#include "core/cuda_check.h"
#include "core/log.h"

#define NT_NCCL_CHECK(call)                                                                        \
  do {                                                                                             \
    const ncclResult_t nt_nccl_rc_ = (call);                                                       \
    if (nt_nccl_rc_ != ncclSuccess)                                                                \
      throw std::runtime_error(::nt::where(__FILE__, __LINE__,                                     \
                                           std::string("NCCL call ") + #call + " failed: " +       \
                                               ncclGetErrorString(nt_nccl_rc_) +                   \
                                               " (NCCL_DEBUG=WARN prints NCCL's own reason)"));    \
  } while (0)
