// The backward of y = linear(a, weight, bias) for an op that keeps `a` itself or computes it
// again (models/gelu_linear.h, models/modulated_linear.h, models/linear_node.h): the ops autograd
// runs for linear on a contiguous input (addmm on the rows flattened, the weight transposed, i.e.
// column-major), so on the CPU the gradients are autograd's bit for bit; on CUDA the weight
// gradient takes the form models/product_forms.h picks. Under CUDA autocast the product
// ran in dy's dtype: a and the weight are cast to it (as autocast cast them), and the weight and
// bias gradients go back to their own dtypes (as autograd does through autocast's casts).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

namespace nt {

struct LinearGrads {
  at::Tensor input;   // [..., H] like a, in dy's dtype (undefined unless asked for)
  at::Tensor weight;  // [O, H] in the weight's dtype
  at::Tensor bias;    // [O] in bias_dtype
};

// dy [..., O], a [..., H] (undefined when the weight's gradient is not asked for), weight [O, H].
LinearGrads linear_backward(const at::Tensor& dy, const at::Tensor& a, const at::Tensor& weight,
                            at::ScalarType bias_dtype, bool need_input, bool need_weight, bool need_bias);

}  // namespace nt
