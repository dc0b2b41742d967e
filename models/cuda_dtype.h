// The element type of a tensor as the project's CUDA launchers name it (models/fused_kernels_cuda.h:
// cuda::Dtype, whose interface has no LibTorch): bf16, else fp32 (callers check which dtypes they
// take before they launch).
#pragma once
#include <ATen/core/Tensor.h>

#include "models/fused_kernels_cuda.h"

namespace nt {

inline cuda::Dtype cuda_dtype_of(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? cuda::Dtype::bf16 : cuda::Dtype::f32;
}

}  // namespace nt
