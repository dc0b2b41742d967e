// GELU + linear keeping the GELU's input, not its output (see models/gelu_linear.h).
#include "models/gelu_linear.h"

#include <torch/torch.h>

#include "models/linear_backward.h"

namespace nt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GeluLinear : torch::autograd::Function<GeluLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& bias) {
    ctx->save_for_backward({h, weight});
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.scalar_type());
    return at::linear(at::gelu(h, "tanh"), weight, bias);  // autocast (if on) picks the product's dtype
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &weight = saved[1];
    const bool need_h = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const at::Tensor a = need_w ? at::gelu(h, "tanh") : at::Tensor();  // [..., H], again
    const LinearGrads g =
        linear_backward(grads[0], a, weight, static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()),
                        need_h, need_w, ctx->needs_input_grad(2));
    const at::Tensor dh = need_h ? at::gelu_backward(g.input.to(h.scalar_type()), h, "tanh") : at::Tensor();
    return {dh, g.weight, g.bias};
  }
};

}  // namespace

at::Tensor gelu_linear(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias) {
  if (!torch::autograd::GradMode::is_enabled()) return at::linear(at::gelu(h, "tanh"), weight, bias);
  return GeluLinear::apply(h, weight, bias);
}

}  // namespace nt
