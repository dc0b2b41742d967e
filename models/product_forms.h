// A linear layer's weight and input gradients (y [M, O] = a [M, H] · W^T + b, W [O, H]) in one of
// several forms of the same product:
//
//   direct:      dW [O, H] = dy^T · a           (autograd's)
//   transposed:  dW [O, H] = (a^T · dy)^T       cuBLAS solves the transposed problem [H, O], then
//                                               the project's transpose kernel turns it around
//   staged:      dW [O, H] = dy^T · a with one operand, the narrower of dy and a, copied first
//                as its transpose [min(O, H), M] (the transpose kernel), so that cuBLAS reads it
//                with k (= M) contiguous (for fp32: see below)
//
// cuBLAS picks its kernel by the problem's shape and the operands' layouts, and for the same
// arithmetic the kernels differ: in DiT-XL/2 steps on the H200 the [1152, 4608] weight-gradient
// problem of fc2 (K = 32768) ran at 572-577 µs per call where the [4608, 1152] problem of fc1,
// with the same operand layouts, ran at 469-470; fc2's gradient in the transposed form then took
// 470 + 14 µs (docs/performance.md, fourteenth session). Timing the two forms on their first calls
// (alone, or inside the first steps) ranked them the other way round, so the choice is a rule:
// FormPolicy::tall, the default (train.product_forms = "tall"), takes the transposed form where
// 256 <= O < H (the problem with more rows than columns; fc2's in DiT, not the final layer's 16
// rows, which ran at 0.03 ms direct against 0.11 transposed). Both forms give the same values up
// to the products' rounding (the DiT-XL/2 losses of 13 bf16 steps agreed to every printed digit).
// The CPU, and CUDA with FormPolicy::direct, take the direct form: on the CPU autograd's
// product, bit for bit.
//
// The input gradient dX [M, H] = dy [M, O] · W [O, H] likewise:
//
//   direct:      dy · W                       (autograd's; also for `transposed`)
//   staged:      dy · (W^T)^T                 W^T [H, O] made contiguous first (the transpose
//                                             kernel; W is small next to dy), so that the product
//                                             reads both operands with k (= O) contiguous, as the
//                                             forward's product reads its own
//
// Hopper's tensor cores take TF32 operands with k contiguous only, and for the other layouts cuBLAS
// runs other kernels: in the fifteenth session's TREAD-XL/2 trace (H200) the fp32 block's products
// ran at 349 TFLOP/s with k contiguous in both operands (forward), 288 with it in one (the input
// gradients: `nn`) and 190 in none (the weight gradients: `nt`, where both operands have k = M
// across their rows). So FormPolicy::tall takes the staged forms for fp32 on CUDA where TF32 is
// allowed (TF32 products; train.precision = "fp32" keeps it off and the direct forms):
// both operands of the input gradient and one of the weight gradient's (copying the other as
// well would move 0.45-0.6 GB more for each of DiT-XL/2's products); bf16 keeps the rule above
// (its kernels take either layout).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace nt {

enum class ProductForm { direct, transposed, staged };

// dy2 [M, O], weight [O, H] -> dX [M, H], in dy2's dtype (the weight cast to it).
at::Tensor input_gradient(const at::Tensor& dy2, const at::Tensor& weight);
// The weight as input_gradient's product reads it, in dy2's dtype: W [O, H] itself (direct), or
// W^T [H, O] contiguous (staged, `transposed`), for products of the same form made elsewhere
// (models/gelu_mlp.h: cuBLASLt's with the GELU's derivative).
struct InputGradientWeight {
  at::Tensor w;
  bool transposed;
};
InputGradientWeight input_gradient_weight(const at::Tensor& dy2, const at::Tensor& weight);
// dy2 [M, O], a2 [M, H] -> dW [O, H], contiguous, in dy2's dtype.
at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2);
// grad [O, H] (contiguous, dy2's dtype) += dW, in the same form: the direct form as one product
// with beta = 1 (the sum rounded once), the transposed one as its product, then the transpose
// kernel adding into grad (the sum in fp32, rounded once, as LibTorch's add).
void add_weight_gradient(const at::Tensor& dy2, const at::Tensor& a2, at::Tensor& grad);

// How CUDA takes the form (the trainer sets it from train.product_forms before training).
enum class FormPolicy { direct, tall };
void set_product_form_policy(FormPolicy policy);

// For tests only: every call takes `form`, on any device (the CPU included), until reset with
// std::nullopt; linear_node (models/linear_node.h) then runs its node on the CPU too.
void force_product_form_for_tests(std::optional<ProductForm> form);
std::optional<ProductForm> forced_product_form();

}  // namespace nt
