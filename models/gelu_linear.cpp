// GELU + linear keeping the GELU's input, not its output (see models/gelu_linear.h).
#include "models/gelu_linear.h"

#include <torch/torch.h>

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

  // The ops autograd runs for linear on a contiguous input (addmm on the flattened rows, the
  // weight transposed, i.e. column-major): with a = gelu(h) and y2 = a2 W^T + b over the rows,
  // dW = dy2^T a2, db = sum_rows dy2, da = dy2 W.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &weight = saved[1];
    const at::Tensor& dy = grads[0];  // [..., O], the product's dtype
    const auto dtype = dy.scalar_type();
    const int64_t H = h.size(-1), O = weight.size(0);
    const at::Tensor dy2 = dy.reshape({-1, O});  // [M, O]
    variable_list out(3);
    if (ctx->needs_input_grad(1)) {
      const at::Tensor a2 = at::gelu(h, "tanh").to(dtype).reshape({-1, H});  // [M, H], again
      out[1] = dy2.t().mm(a2).to(weight.scalar_type());                         // [O, H]
    }
    if (ctx->needs_input_grad(2))
      out[2] = dy2.sum(0).to(static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()));  // [O]
    if (ctx->needs_input_grad(0)) {
      const at::Tensor da = dy2.mm(weight.to(dtype));                                           // [M, H]
      out[0] = at::gelu_backward(da.to(h.scalar_type()).view(h.sizes()), h, "tanh");  // [..., H]
    }
    return out;
  }
};

}  // namespace

at::Tensor gelu_linear(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias) {
  if (!torch::autograd::GradMode::is_enabled()) return at::linear(at::gelu(h, "tanh"), weight, bias);
  return GeluLinear::apply(h, weight, bias);
}

}  // namespace nt
