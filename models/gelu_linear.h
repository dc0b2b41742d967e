// linear(gelu_tanh(h), weight, bias): the second half of timm's Mlp (GELU, then fc2) as one
// autograd node that keeps for backward only h and the weight, not the GELU output (the [.., H]
// input of the product, which a plain linear keeps: 4x the width of the block's stream). The
// backward computes gelu(h) once more, an elementwise pass, and no product again. Values and
// gradients are those of the plain ops, bit for bit on the CPU (the same ATen calls in the same
// order); under CUDA autocast it computes in the dtype autocast gives the product (bf16) and
// hands the weight and bias gradients back in their own dtypes, as autocast's casts do.
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

// h [..., H], weight [O, H], bias [O] -> [..., O]. Grad mode off: the plain ops.
at::Tensor gelu_linear(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace nt
