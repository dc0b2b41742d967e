#include "dist/adamw.h"

#include <torch/torch.h>

#include <cmath>

namespace nt {

AdamWState adamw_init(const std::vector<at::Tensor>& params) {
  AdamWState s;
  for (const auto& p : params) {
    s.exp_avg.push_back(torch::zeros_like(p));
    s.exp_avg_sq.push_back(torch::zeros_like(p));
  }
  return s;
}

void adamw_step(std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads, AdamWState& s,
                const AdamWParams& p) {
  torch::NoGradGuard no_grad;
  s.step += 1;
  const double bias_correction1 = 1 - std::pow(p.beta1, static_cast<double>(s.step));
  const double bias_correction2 = 1 - std::pow(p.beta2, static_cast<double>(s.step));
  const double step_size = p.lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  for (size_t i = 0; i < params.size(); ++i) {
    auto& param = params[i];
    const auto& grad = grads[i];
    param.mul_(1 - p.lr * p.weight_decay);
    s.exp_avg[i].mul_(p.beta1).add_(grad, 1 - p.beta1);
    s.exp_avg_sq[i].mul_(p.beta2).addcmul_(grad, grad, 1 - p.beta2);
    auto denom = (s.exp_avg_sq[i].sqrt() / bias_correction2_sqrt).add_(p.eps);
    param.addcdiv_(s.exp_avg[i], denom, -step_size);
  }
}

void ema_update(std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& params, double decay) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < ema.size(); ++i) ema[i].mul_(decay).add_(params[i], 1 - decay);
}

double sum_of_squares(const std::vector<at::Tensor>& bufs) {
  double s = 0;
  for (const auto& b : bufs) s += b.to(at::kDouble).pow(2).sum().item<double>();
  return s;
}

void clip_by_norm(std::vector<at::Tensor>& grads, double norm, double max_norm) {
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));
  if (coef < 1.0)
    for (auto& g : grads) g.mul_(coef);
}

}  // namespace nt
