// linear(x, weight, bias) as one autograd node whose backward runs models/linear_backward.h: the
// same products autograd's AddmmBackward runs, the weight gradient on CUDA in the form
// models/product_forms.h picks. It keeps what autograd keeps for linear: x as the product takes
// it (bf16 under CUDA autocast) and the weight. On the CPU it is at::linear itself (the node only
// where tests force a product form).
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

// x [..., H], weight [O, H], bias [O] (or undefined) -> [..., O]. Grad mode off: at::linear.
at::Tensor linear_node(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace nt
