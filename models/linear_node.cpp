// A linear layer whose backward picks its weight gradient's form on CUDA (see models/linear_node.h).
#include "models/linear_node.h"

#include <torch/torch.h>

#include "models/autocast.h"
#include "models/linear_backward.h"
#include "models/product_forms.h"

namespace nt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LinearNode : torch::autograd::Function<LinearNode> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, bool has_bias) {
    // x as the product takes it: autocast's cast, which the plain linear keeps for backward.
    const at::Tensor xc = x.is_cuda() && cuda_autocast_enabled() ? x.to(at::kBFloat16) : x;  // [..., H]
    ctx->save_for_backward({xc, weight});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.scalar_type());
    return at::linear(xc, weight, has_bias ? bias : at::Tensor());  // [..., O]; autocast picks the dtype
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool need_x = ctx->needs_input_grad(0);
    const LinearGrads g =
        linear_backward(grads[0], saved[0], saved[1], static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()),
                        need_x, ctx->needs_input_grad(1), ctx->needs_input_grad(2));
    const at::Tensor dx =
        need_x ? g.input.to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt())) : at::Tensor();
    return {dx, g.weight, g.bias, at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_node(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!torch::autograd::GradMode::is_enabled() || !(x.is_cuda() || forced_product_form()))
    return at::linear(x, weight, bias);
  const bool has_bias = bias.defined();
  // An undefined input is not allowed: a bias-less layer passes an empty tensor and a flag.
  return LinearNode::apply(x, weight, has_bias ? bias : at::empty({0}, weight.options()), has_bias);
}

}  // namespace nt
