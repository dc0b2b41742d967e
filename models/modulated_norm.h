// modulate(LayerNorm(x), shift, scale): the LayerNorm (no affine, eps 1e-6) and adaLN modulation
// that open every DiT block branch and the final layer, in two forms:
//  - composite: LibTorch's layer_norm, then x * (1 + scale) + shift (the reference's ops);
//  - fused (CUDA, models/fused_kernels.h): one pass for the statistics and the output, written
//    directly in the dtype the next matrix product uses (bf16 under autocast), keeping for
//    backward only x and the per-row mean and 1/std. It agrees with the composite to fp32
//    rounding (other summation orders), not bit for bit.
// With the product it feeds and its output not kept for backward: models/modulated_linear.h.
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

constexpr double kModulatedNormEps = 1e-6;  // DiT's LayerNorm(elementwise_affine=False, eps=1e-6)

// x [N, T, D], shift and scale [N, D] -> [N, T, D]; `fused` where the fused form supports the
// tensors (the composite elsewhere).
at::Tensor modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, bool fused = false);

}  // namespace nt
