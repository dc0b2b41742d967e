// The two products of a linear layer's backward (y [M, O] = a [M, H] · W^T + b, W [O, H]), each
// computed on CUDA in whichever of two forms of the same product runs faster for its shapes:
//
//   weight gradient dW [O, H]   direct:      dy^T · a
//                               transposed:  (a^T · dy)^T: cuBLAS solves the transposed problem
//                                            [H, O], then the project's transpose kernel
//   input gradient  da [M, H]   direct:      dy · W
//                               transposed:  dy · (W^T)^T: the weight transposed once, then the
//                                            product in a forward product's layout (x · W^T)
//
// cuBLAS picks its kernel by the operands' layouts as well as the sizes, and the kernels differ:
// in a DiT-XL/2 step on the H200, fc2's weight gradient [1152, 4608] took 572 µs where fc1's,
// the transposed problem [4608, 1152] with the same operand layouts, took 475 (docs/performance.md).
// Products timed alone, between synchronisations, ranked these two the other way round (0.50
// against 0.53 ms), so the forms are timed inside the training step: on CUDA the first calls of
// given sizes, dtype and device (after 2 untimed ones) alternate the forms, each between two
// CUDA events on the stream, read later without waiting; once 3 calls of each have run, the
// faster mean is kept for good and rank 0 logs both. Both forms give the same values up to the
// products' rounding (their kernels may sum in another order). The CPU, a build without the
// project's CUDA kernels (no timer), and CUDA with the direct policy (train.product_forms =
// "direct") take the direct form, the ops autograd runs for linear: on the CPU bit for bit.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace nt {

enum class ProductForm { direct, transposed };

// dy2 [M, O], a2 [M, H] -> dW [O, H], contiguous, in dy2's dtype.
at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2);

// dy2 [M, O], w [O, H] (in dy2's dtype) -> da [M, H], contiguous.
at::Tensor input_gradient(const at::Tensor& dy2, const at::Tensor& w);

// How CUDA products pick their forms (the trainer sets it from train.product_forms, before
// training): direct: autograd's form always; tall: the weight gradient as the product whose
// output has more rows than columns ([H, O] when 256 <= O < H: transposed; fc2's in DiT), the
// input gradient direct; timed: the trials above.
enum class FormPolicy { direct, tall, timed };
void set_product_form_policy(FormPolicy policy);

// For tests only: every call takes `form`, on any device (the CPU included), until reset with
// std::nullopt; linear_node (models/linear_node.h) then runs its node on the CPU too.
void force_product_form_for_tests(std::optional<ProductForm> form);
std::optional<ProductForm> forced_product_form();

}  // namespace nt
