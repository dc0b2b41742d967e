// modulate(LayerNorm(x), shift, scale): the LayerNorm (no affine, eps 1e-6) and adaLN modulation
// that open every DiT block branch and the final layer, in three forms:
//  - composite: LibTorch's layer_norm, then x * (1 + scale) + shift (the reference's ops);
//  - recomputed (models/recompute.h): the same ops, their fp32 intermediates not kept for backward;
//  - fused (CUDA, own kernels in modulated_norm_cuda.cu): one pass for the statistics and the
//    output, written directly in the dtype the next matrix product uses (bf16 under autocast),
//    keeping for backward only x and the per-row mean and 1/std. It agrees with the composite
//    to fp32 rounding (other summation orders), not bit for bit.
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

// x [N, T, D], shift and scale [N, D] -> [N, T, D].
at::Tensor modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, bool recompute = false,
                          bool fused = false);

// The fused form for what it supports (CUDA, fp32 x [N, T, D], shift and scale [N, D] of one
// dtype, fp32 or bf16, unit stride along D); its output is bf16 when `bf16_out`, else fp32.
at::Tensor fused_modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, bool bf16_out);
bool fused_modulated_norm_supports(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);
// Whether this build has the kernels (nvcc found at configure time).
bool fused_kernels_built();

}  // namespace nt
