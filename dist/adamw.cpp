#include "dist/adamw.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>

#include "dist/adamw_math.h"
#ifdef NT_HAVE_CUDA_KERNELS
#include "dist/adamw_cuda.h"
#endif

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
  if (!ema.empty() && ema[0].is_cuda()) {  // the same two ops, each one multi-tensor pass
    at::_foreach_mul_(ema, decay);
    at::_foreach_add_(ema, params, 1 - decay);
    return;
  }
#endif
  for (size_t i = 0; i < ema.size(); ++i) ema[i].mul_(decay).add_(params[i], 1 - decay);
}

at::Tensor sum_of_squares_tensor(const std::vector<at::Tensor>& bufs) {
#ifdef NT_HAVE_FUSED_ADAMW
  if (!bufs.empty() && bufs[0].is_cuda()) {  // per-buffer fp32 norms
    bool fp32 = true;
    for (const auto& b : bufs) fp32 = fp32 && b.scalar_type() == at::kFloat;
    if (fp32) return at::stack(at::_foreach_norm(bufs, 2)).to(at::kDouble).pow(2).sum();
    std::vector<at::Tensor> norms;  // bf16 gradients (adamw_ema_fused's): summed in fp32 as well
    for (const auto& b : bufs) norms.push_back(at::linalg_vector_norm(b, 2, at::OptionalIntArrayRef{}, false, at::kFloat));
    return at::stack(norms).to(at::kDouble).pow(2).sum();
  }
#endif
  at::Tensor s = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(bufs.empty() ? at::kCPU : bufs[0].device()));
  for (const auto& b : bufs) s = s + b.to(at::kDouble).pow(2).sum();  // in order, as float64 additions
  return s;
}

double sum_of_squares(const std::vector<at::Tensor>& bufs) { return sum_of_squares_tensor(bufs).item<double>(); }

double clip_coefficient(double norm, double max_norm) { return std::min(1.0, max_norm / (norm + 1e-6)); }

void clip_by_norm(const std::vector<at::Tensor>& grads, double norm, double max_norm) {
  const double coef = clip_coefficient(norm, max_norm);
  if (coef < 1.0)
    for (const auto& g : grads) g.mul_(coef);
}

bool adamw_ema_fused_available(bool cuda) {
#ifdef NT_HAVE_CUDA_KERNELS
  return true;
#else
  return !cuda;
#endif
}

namespace {

// t: a contiguous `dtype` buffer of param's size on its device.
void check_fused_buffer(const char* what, const at::Tensor& t, const at::Tensor& param, size_t i,
                        at::ScalarType dtype) {
  TORCH_CHECK(t.defined() && t.is_contiguous() && t.numel() == param.numel() && t.device() == param.device() &&
                  t.scalar_type() == dtype,
              "adamw_ema_fused: ", what, " ", i, " is not a contiguous ", c10::toString(dtype),
              " buffer of parameter buffer ", i, "'s size on its device");
}

// The CPU form: the kernel's per-element arithmetic in a loop.
template <typename G>
void adamw_ema_cpu(float* theta, const G* grad, float* m, float* v, float* ema, c10::BFloat16* copy, int64_t n,
                   const AdamWEmaConsts& c) {
  for (int64_t i = 0; i < n; ++i) {
    adamw_ema_element(theta[i], static_cast<float>(grad[i]), m[i], v[i], ema[i], c);
    if (copy) copy[i] = c10::BFloat16(theta[i]);  // round to nearest even
  }
}

}  // namespace

void adamw_ema_fused(std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads, AdamWState& s,
                     const AdamWParams& p, std::vector<at::Tensor>& ema, double decay, double grad_scale,
                     const std::vector<at::Tensor>& copies) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && ema.size() == n && s.exp_avg.size() == n && s.exp_avg_sq.size() == n &&
                  (copies.empty() || copies.size() == n),
              "adamw_ema_fused: ", n, " parameter buffers but ", grads.size(), " gradients, ", ema.size(), " EMA, ",
              s.exp_avg.size(), " moment and ", copies.size(), " copy buffers");
  for (size_t i = 0; i < n; ++i) {
    check_fused_buffer("parameter", params[i], params[i], i, at::kFloat);
    TORCH_CHECK(adamw_ema_fused_available(params[i].is_cuda()),
                "adamw_ema_fused: CUDA buffers need a build with nvcc (NT_HAVE_CUDA_KERNELS)");
    const bool bf16_grad = grads[i].defined() && grads[i].scalar_type() == at::kBFloat16;
    check_fused_buffer("gradient", grads[i], params[i], i, bf16_grad ? at::kBFloat16 : at::kFloat);
    check_fused_buffer("EMA", ema[i], params[i], i, at::kFloat);
    check_fused_buffer("first moment", s.exp_avg[i], params[i], i, at::kFloat);
    check_fused_buffer("second moment", s.exp_avg_sq[i], params[i], i, at::kFloat);
    if (!copies.empty() && copies[i].defined()) check_fused_buffer("copy", copies[i], params[i], i, at::kBFloat16);
  }
  s.step += 1;
  const AdamWEmaConsts c =
      adamw_ema_consts(p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, s.step, grad_scale, decay);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& g = grads[i];
    const bool bf16 = g.scalar_type() == at::kBFloat16;
    const at::Tensor copy = copies.empty() ? at::Tensor() : copies[i];
    float *theta = params[i].data_ptr<float>(), *m = s.exp_avg[i].data_ptr<float>(),
          *v = s.exp_avg_sq[i].data_ptr<float>(), *e = ema[i].data_ptr<float>();
    const int64_t numel = params[i].numel();
    if (params[i].is_cuda()) {
#ifdef NT_HAVE_CUDA_KERNELS
      cuda::adamw_ema_update(theta, g.data_ptr(), bf16, m, v, e, copy.defined() ? copy.data_ptr() : nullptr, numel, c,
                             params[i].get_device(), nullptr);
#endif
      continue;
    }
    c10::BFloat16* out = copy.defined() ? copy.data_ptr<c10::BFloat16>() : nullptr;
    if (bf16)
      adamw_ema_cpu(theta, g.data_ptr<c10::BFloat16>(), m, v, e, out, numel, c);
    else
      adamw_ema_cpu(theta, g.data_ptr<float>(), m, v, e, out, numel, c);
  }
}

}  // namespace nt
