// linear(modulate(LayerNorm(x), shift, scale), weight, bias): the LayerNorm + adaLN modulate
// that opens a DiT branch together with the product it feeds (qkv, fc1, the final layer), as
// one autograd node that keeps for backward x, shift, scale and the weight, and not the
// normalised input of the product (which a plain linear keeps: [N, T, D] per product, in bf16
// under autocast). Backward computes the normalisation once more (models/modulated_norm.h,
// composite or fused), then the product's gradients (models/linear_backward.h) and the
// normalisation's through it; no product runs again. Values and gradients are those of
// linear(modulated_norm(...)), bit for bit on the CPU.
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

// x [N, T, D], shift and scale [N, D], weight [O, D], bias [O] -> [N, T, O]. `fused` as in
// modulated_norm. Grad mode off: linear(modulated_norm(x, shift, scale)).
at::Tensor modulated_linear(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                            const at::Tensor& weight, const at::Tensor& bias, bool fused = false);

}  // namespace nt
