// AdamW, EMA and global-norm clipping on flat fp32 buffers (one per unit, or a rank's shards).
// AdamW follows torch.optim.AdamW (decoupled weight decay, bias correction, eps outside sqrt):
// on the CPU bit for bit (its single-tensor algorithm); on CUDA (LibTorch 2.1+) through the fused
// multi-tensor kernel, EMA through foreach lerp and norms through foreach norm (fp32 per buffer),
// the same updates up to rounding.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace nt {

struct AdamWParams {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

struct AdamWState {
  std::vector<at::Tensor> exp_avg, exp_avg_sq;  // like the parameter buffers
  int64_t step = 0;                             // number of updates applied
};

AdamWState adamw_init(const std::vector<at::Tensor>& params);
// One update of every buffer with its gradient (in place); increments state.step.
void adamw_step(std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads, AdamWState& state,
                const AdamWParams& p);
// ema = decay * ema + (1 - decay) * param, in place.
void ema_update(std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& params, double decay);
// Sum of squares of all buffers, in float64 (all-reduced across ranks by the caller): as a 0-dim
// float64 tensor on the buffers' device (no host synchronisation), or read back.
at::Tensor sum_of_squares_tensor(const std::vector<at::Tensor>& bufs);
double sum_of_squares(const std::vector<at::Tensor>& bufs);
// Scales gradients in place by min(1, max_norm / (norm + 1e-6)), as clip_grad_norm_.
void clip_by_norm(std::vector<at::Tensor>& grads, double norm, double max_norm);

}  // namespace nt
