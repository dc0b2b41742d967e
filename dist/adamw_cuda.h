// Launcher of the fused optimizer step's CUDA kernel (dist/adamw_device.h; compiled by nvcc in
// adamw_cuda.cu, no LibTorch in this interface): for one flat buffer of n elements on CUDA device
// `device`, AdamW and the EMA in place (dist/adamw_math.h) and, where `copy_bf16` is not null,
// bf16(θ) written to it (round to nearest even). `grad` is fp32 or bf16 (`grad_bf16`). Launched
// on `stream` (nullptr: the legacy default stream, LibTorch's default).
#pragma once
#include <cstdint>

#include "dist/adamw_math.h"

namespace nt::cuda {

void adamw_ema_update(float* theta, const void* grad, bool grad_bf16, float* exp_avg, float* exp_avg_sq, float* ema,
                      void* copy_bf16, int64_t n, const AdamWEmaConsts& c, int device, void* stream);

}  // namespace nt::cuda
