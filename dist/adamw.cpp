#include "dist/adamw.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>

// LibTorch 2.1+ has the fused multi-tensor AdamW kernel and foreach lerp/norm for CUDA buffers.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define NT_HAVE_FUSED_ADAMW 1
#endif

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
#ifdef NT_HAVE_FUSED_ADAMW
  if (!params.empty() && params[0].is_cuda()) {
    // CUDA: one fused pass over (param, grad, m, v) per buffer instead of nine elementwise
    // passes; the same update as below up to rounding. state_steps hold the number of this
    // update (1 for the first), which the bias corrections use, as torch.optim's fused path
    // passes them after incrementing.
    s.step += 1;
    std::vector<at::Tensor> steps;
    for (const auto& q : params) steps.push_back(at::full({}, static_cast<double>(s.step), q.options()));
    at::_fused_adamw_(params, grads, s.exp_avg, s.exp_avg_sq, /*max_exp_avg_sqs=*/{}, steps, p.lr, p.beta1,
                      p.beta2, p.weight_decay, p.eps, /*amsgrad=*/false, /*maximize=*/false);
    return;
  }
#endif
  // CPU (and older LibTorch): torch.optim.AdamW's single-tensor algorithm, bit for bit.
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
#ifdef NT_HAVE_FUSED_ADAMW
  if (!ema.empty() && ema[0].is_cuda()) {  // one multi-tensor pass: ema += (1 - decay) (param - ema)
    at::_foreach_lerp_(ema, params, 1 - decay);
    return;
  }
#endif
  for (size_t i = 0; i < ema.size(); ++i) ema[i].mul_(decay).add_(params[i], 1 - decay);
}

at::Tensor sum_of_squares_tensor(const std::vector<at::Tensor>& bufs) {
#ifdef NT_HAVE_FUSED_ADAMW
  if (!bufs.empty() && bufs[0].is_cuda())  // per-buffer fp32 norms
    return at::stack(at::_foreach_norm(bufs, 2)).to(at::kDouble).pow(2).sum();
#endif
  at::Tensor s = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(bufs.empty() ? at::kCPU : bufs[0].device()));
  for (const auto& b : bufs) s = s + b.to(at::kDouble).pow(2).sum();  // in order, as float64 additions
  return s;
}

double sum_of_squares(const std::vector<at::Tensor>& bufs) { return sum_of_squares_tensor(bufs).item<double>(); }

void clip_by_norm(std::vector<at::Tensor>& grads, double norm, double max_norm) {
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));
  if (coef < 1.0)
    for (auto& g : grads) g.mul_(coef);
}

}  // namespace nt
