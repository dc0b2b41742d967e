// LayerNorm + modulate + linear keeping the norm's inputs, not its output (see
// models/modulated_linear.h).
#include "models/modulated_linear.h"

#include <torch/torch.h>

#include "models/autocast.h"
#include "models/linear_backward.h"
#include "models/modulated_norm.h"

namespace nt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct ModulatedLinear : torch::autograd::Function<ModulatedLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& shift,
                            const at::Tensor& scale, const at::Tensor& weight, const at::Tensor& bias, bool fused) {
    ctx->save_for_backward({x, shift, scale, weight});
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.scalar_type());
    ctx->saved_data["fused"] = fused;
    ctx->saved_data["autocast"] = cuda_autocast_enabled();
    return at::linear(modulated_norm(x, shift, scale, fused), weight, bias);  // [N, T, O]
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& weight = saved[3];
    const bool need_norm = ctx->needs_input_grad(0) || ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    // The normalised input again, with its history over fresh leaves where gradients are needed,
    // under the forward's autocast state (the fused form writes bf16 under autocast).
    std::vector<at::Tensor> in;
    for (int i = 0; i < 3; ++i) in.push_back(saved[i].detach().requires_grad_(ctx->needs_input_grad(i)));
    at::Tensor n;  // [N, T, D]
    {
      torch::AutoGradMode grad_mode(need_norm);
      const AutocastAs forward_state(ctx->saved_data["autocast"].toBool());
      n = modulated_norm(in[0], in[1], in[2], ctx->saved_data["fused"].toBool());
    }
    const LinearGrads g =
        linear_backward(grads[0], n.detach(), weight, static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()),
                        need_norm, ctx->needs_input_grad(3), ctx->needs_input_grad(4));
    variable_list out{at::Tensor(), at::Tensor(), at::Tensor(), g.weight, g.bias, at::Tensor()};
    if (need_norm) {
      std::vector<at::Tensor> wrt;
      for (int i = 0; i < 3; ++i)
        if (ctx->needs_input_grad(i)) wrt.push_back(in[i]);
      const auto gn = torch::autograd::grad({n}, wrt, {g.input.to(n.scalar_type())});
      size_t k = 0;
      for (int i = 0; i < 3; ++i)
        if (ctx->needs_input_grad(i)) out[i] = gn[k++];
    }
    return out;
  }
};

}  // namespace

at::Tensor modulated_linear(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale,
                            const at::Tensor& weight, const at::Tensor& bias, bool fused) {
  if (!torch::autograd::GradMode::is_enabled())
    return at::linear(modulated_norm(x, shift, scale, fused), weight, bias);
  return ModulatedLinear::apply(x, shift, scale, weight, bias, fused);
}

}  // namespace nt
