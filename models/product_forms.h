// The two products of a linear layer's backward (y [M, O] = a [M, H] · W^T + b, W [O, H]), each
// computed on CUDA in whichever of two forms of the same product runs faster for its shapes:
//
//   weight gradient dW [O, H]   direct:      dy^T · a
//                               transposed:  (a^T · dy)^T, made contiguous: cuBLAS solves the
//                                            transposed problem [H, O], one copy turns it back
//   input gradient  da [M, H]   direct:      dy · W
//                               transposed:  dy · (W^T)^T, W^T made contiguous: one copy of the
//                                            weight, then the product in a forward product's
//                                            layout (x · W^T, both operands row-major along K)
//
// cuBLAS picks its kernel by the operands' layouts as well as the shapes, and the kernels differ:
// in a DiT-XL/2 step on the H200, fc2's weight gradient [1152, 4608] took 579 µs where fc1's, the
// transposed problem [4608, 1152] with the same operand layouts, took 475; fc1's input gradient
// (dy · W) took 496 µs where fc2's forward product, the same sizes as x · W^T, took 445
// (docs/performance.md). The first call of given sizes, dtype and device times both forms on
// the GPU (one untimed and 3 timed calls each, between device synchronisations) and keeps the
// faster; rank 0 logs both times. Both forms give the same values up to the products' rounding
// (their kernels may sum in another order). The CPU, and every device other than CUDA, takes the
// direct form: the ops autograd runs for linear, bit for bit. So does CUDA after
// time_product_forms(false) (train.product_forms = "direct": the same kernels in every run).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace nt {

enum class ProductForm { direct, transposed };

// dy2 [M, O], a2 [M, H] -> dW [O, H], contiguous, in dy2's dtype.
at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2);

// dy2 [M, O], w [O, H] (in dy2's dtype) -> da [M, H], contiguous.
at::Tensor input_gradient(const at::Tensor& dy2, const at::Tensor& w);

// Whether CUDA products time their two forms (the default) or take the direct form; set once,
// before training (the trainer sets it from train.product_forms).
void time_product_forms(bool on);

// For tests only: every call takes `form`, on any device (the CPU included), until reset with
// std::nullopt; linear_node (models/linear_node.h) then runs its node on the CPU too.
void force_product_form_for_tests(std::optional<ProductForm> form);
std::optional<ProductForm> forced_product_form();

}  // namespace nt
