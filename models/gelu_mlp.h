// timm's Mlp, fc2(gelu_tanh(fc1(x))), as one autograd node whose two products carry the GELU
// (`train.fused_mlp`): on CUDA in bf16 (autocast), or in fp32 where TF32 products are allowed
// (TREAD's block after a route, outside autocast as the reference's, with fc2's weight handed to
// the backward's product transposed as models/product_forms.h's staged form reads it), where the
// build has cuBLASLt (models/gelu_gemm_cuda.h), fc1's product adds the bias and applies the GELU in its epilogue
// and writes the GELU's input beside its output. In backward fc2's input-gradient product is
// followed by the GELU's derivative and fc1's bias gradient in one of three ways, whichever the
// first step measures fastest: both in cuBLASLt's epilogue, the derivative in the epilogue and
// the bias gradient in a column-sum kernel of our own, or the plain product and then one kernel of
// our own for both (which also gives the GELU's output again where it was not kept). The
// separate GELU passes forward and backward go. Elsewhere (CPU, fp32 with TF32 off, shapes
// cuBLASLt declines) the node runs the plain ops: its values and gradients are then those of
// fc1 -> GELU -> fc2 bit for bit on the CPU (the same ATen calls); through cuBLASLt they agree to
// bf16 rounding, or TF32's (the forward's GELU computed from the fp32 accumulator, not its
// rounding).
//
// Kept for backward: fc1's input (in the product's dtype, as autocast's cast would be kept),
// the GELU's input (fc1's output) and, unless `recompute_gelu`, the GELU's output; with
// `recompute_gelu` backward computes the GELU once more for fc2's weight gradient (as
// models/gelu_linear.h does). modulated_gelu_mlp takes the LayerNorm + modulate before fc1
// into the node as well and keeps its inputs instead of fc1's input, computing the norm again
// in backward (as models/modulated_linear.h does: `train.recompute` = "norm").
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

// Whether this build has the cuBLASLt products.
bool gelu_mlp_cublaslt_built();

// x [..., D], w1 [H, D], b1 [H], w2 [O, H], b2 [O] -> [..., O]. Grad mode off: the plain ops.
at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                    const at::Tensor& b2, bool recompute_gelu);

// gelu_mlp(modulated_norm(h, shift, scale, fused_norm), ...): h [N, T, D], shift and scale [N, D].
at::Tensor modulated_gelu_mlp(const at::Tensor& h, const at::Tensor& shift, const at::Tensor& scale, bool fused_norm,
                              const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                              bool recompute_gelu);

}  // namespace nt
