// One element of the fused optimizer step (dist/adamw.h: adamw_ema_fused): AdamW in the form of
// PyTorch's fused CUDA AdamW (at::_fused_adamw_) with the hyper-parameters in double and the state
// in float (LibTorch 2.11's kernel rounds β2 to float: dist/adamw.h), then the EMA as the
// reference updates it (update_ema: ema.mul_(decay).add_(θ, alpha=1 − decay), in float with float
// scalars, the add as one fused multiply-add), for the CUDA kernel (dist/adamw_cuda.cu) and its
// CPU form alike. No LibTorch, no CUDA headers: nvcc and the host compiler both include it.
//   g'    = g * grad_scale                                   (clipping: g.mul_(coef) in fp32)
//   θ    -= lr · λ · θ                                       (decoupled weight decay, double)
//   m     = β1 m + (1 − β1) g'                               (double, stored as float)
//   v     = β2 v + (1 − β2) g'²                              (double, stored as float)
//   θ    -= step_size · m / (√v / √(1 − β2^t) + ε)          (step_size = float(lr / (1 − β1^t)))
//   ema   = fma(w, θ, ema · d)                               (d = float(decay), w = float(1 − decay))
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define NT_HOST_DEVICE __host__ __device__
#else
#define NT_HOST_DEVICE
#endif

namespace nt {

struct AdamWEmaConsts {
  double lr, beta1, beta2, eps, weight_decay;
  float bias_correction1;       // float(1 − β1^t), as the fused kernel passes it on
  float bias_correction2_sqrt;  // float(√(1 − β2^t))
  float grad_scale;             // 1, or the clipping coefficient
  float ema_decay;              // float(decay)
  float ema_weight;             // float(1 − decay)
};

// t: the number of this update (1 for the first), as torch.optim passes its step count.
inline AdamWEmaConsts adamw_ema_consts(double lr, double beta1, double beta2, double eps, double weight_decay,
                                       int64_t t, double grad_scale, double ema_decay) {
  const float step = static_cast<float>(t);  // the fused kernel's state_steps are float tensors
  AdamWEmaConsts c{lr, beta1, beta2, eps, weight_decay, 0.f, 0.f, 0.f, 0.f, 0.f};
  c.bias_correction1 = static_cast<float>(1 - std::pow(beta1, static_cast<double>(step)));
  c.bias_correction2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(beta2, static_cast<double>(step))));
  c.grad_scale = static_cast<float>(grad_scale);
  c.ema_decay = static_cast<float>(ema_decay);
  c.ema_weight = static_cast<float>(1 - ema_decay);
  return c;
}

// theta, m, v, ema updated in place from the gradient g (already converted to float).
NT_HOST_DEVICE inline void adamw_ema_element(float& theta, float g, float& m, float& v, float& ema,
                                             const AdamWEmaConsts& c) {
  g = g * c.grad_scale;
  if (c.weight_decay != 0) theta -= c.lr * c.weight_decay * theta;
  m = c.beta1 * m + (1 - c.beta1) * g;
  v = c.beta2 * v + (1 - c.beta2) * g * g;
  const float step_size = c.lr / c.bias_correction1;
  const float denom = (std::sqrt(v) / c.bias_correction2_sqrt) + c.eps;
  theta -= step_size * m / denom;
  // mul_ rounds ema · d to float; add_ with alpha computes it + w · θ as one fused multiply-add (the
  // CUDA kernel and the CPU's vectorised kernel alike).
  const float decayed = ema * c.ema_decay;
  ema = std::fma(c.ema_weight, theta, decayed);
}

}  // namespace nt
