// AdamW, EMA and global-norm clipping on flat fp32 buffers (one per unit, or a rank's shards).
// AdamW follows torch.optim.AdamW (decoupled weight decay, bias correction, eps outside sqrt):
// on the CPU bit for bit (its single-tensor algorithm); on CUDA (LibTorch 2.1+) through the fused
// multi-tensor kernel, the EMA's two ops through foreach ops and norms through foreach norm (fp32
// per buffer), the same updates up to rounding. adamw_ema_fused does AdamW, EMA and the bf16
// compute copies in one pass per buffer instead (the trainer's optimizer on CUDA where it is built:
// the same arithmetic whatever the number of ranks).
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
// ema = decay * ema + (1 - decay) * param, in place, as the reference's update_ema:
// ema.mul_(decay).add_(param, alpha=1 - decay).
void ema_update(std::vector<at::Tensor>& ema, const std::vector<at::Tensor>& params, double decay);
// Sum of squares of all buffers, in float64 (all-reduced across ranks by the caller): as a 0-dim
// float64 tensor on the buffers' device (no host synchronisation), or read back.
at::Tensor sum_of_squares_tensor(const std::vector<at::Tensor>& bufs);
double sum_of_squares(const std::vector<at::Tensor>& bufs);
// min(1, max_norm / (norm + 1e-6)): the factor clip_grad_norm_ scales the gradients by.
double clip_coefficient(double norm, double max_norm);
// Scales gradients in place by clip_coefficient(norm, max_norm), as clip_grad_norm_.
void clip_by_norm(const std::vector<at::Tensor>& grads, double norm, double max_norm);

// adamw_step, then ema_update, then the parameters' compute copies, in one pass over each buffer
// (dist/adamw_math.h): AdamW with the hyper-parameters in double and the state in float (within
// 5e-7 of torch.optim.AdamW's algorithm; LibTorch 2.11's fused CUDA kernel differs in v by 1.29e-5
// of it on an H200, as (1 − float(β2)) differs from (1 − β2) for 0.999), the EMA as ema_update's
// mul_ and add_.
// grads[i]: fp32 or bf16, [numel of params[i]], multiplied by grad_scale first (1, or
// clip_coefficient: as clip_by_norm would scale fp32 gradients). copies: empty, or per buffer
// undefined or a bf16 tensor of params[i]'s size that receives bf16(θ) (round to nearest even).
// On CUDA one kernel per buffer (needs a build with nvcc: adamw_ema_fused_available); on the CPU
// the same per-element arithmetic in a loop (for tests: adamw_step is the CPU's optimizer).
// Increments state.step.
void adamw_ema_fused(std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads, AdamWState& state,
                     const AdamWParams& p, std::vector<at::Tensor>& ema, double decay, double grad_scale,
                     const std::vector<at::Tensor>& copies);
// Whether adamw_ema_fused runs on buffers of this device type (CUDA: a build with nvcc).
bool adamw_ema_fused_available(bool cuda);

}  // namespace nt
