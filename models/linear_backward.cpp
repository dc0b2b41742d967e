// The gradients of a linear layer as autograd computes them (see models/linear_backward.h).
#include "models/linear_backward.h"

#include <torch/torch.h>

#include "models/product_forms.h"

namespace nt {

LinearGrads linear_backward(const at::Tensor& dy, const at::Tensor& a, const at::Tensor& weight,
                            at::ScalarType bias_dtype, bool need_input, bool need_weight, bool need_bias) {
  const auto dtype = dy.scalar_type();
  const int64_t O = weight.size(0), H = weight.size(1);
  const at::Tensor dy2 = dy.reshape({-1, O});  // [M, O]
  LinearGrads g;
  if (need_weight) g.weight = weight_gradient(dy2, a.to(dtype).reshape({-1, H})).to(weight.scalar_type());  // [O, H]
  if (need_bias) g.bias = dy2.sum(0).to(bias_dtype);                                               // [O]
  if (need_input) {
    auto sizes = dy.sizes().vec();
    sizes.back() = H;
    g.input = dy2.mm(weight.to(dtype)).view(sizes);  // [..., H]
  }
  return g;
}

}  // namespace nt
