// EDM (Karras et al. 2022) as the reference uses it: preconditioning, training loss, and the
// deterministic/stochastic Heun sampler (Algorithm 2) with per-seed generators.
//   c_skip = sd^2/(s^2+sd^2), c_out = s*sd/sqrt(s^2+sd^2), c_in = 1/sqrt(sd^2+s^2),
//   c_noise = ln(s)/4;  D(x; s) = c_skip*x + c_out*F(c_in*x; c_noise)
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "models/dit.h"

namespace nt {

// How the network output is guided during sampling.
struct Guidance {
  enum class Kind { none, cfg, tread };
  Kind kind = Kind::none;
  double scale = 1.0;  // cfg: uncond + s*(cond - uncond); tread: F(r+delta) + s*(F(r) - F(r+delta))
  double tread_ratio = 0.0;  // tread: selection ratio of the guiding (stronger) branch
  double tread_delta = 0.2;  // tread: the weaker branch routes tread_ratio + tread_delta
  // Guidance from a scale: s == 1 is the plain conditional network (the reference's None).
  static Guidance cfg_scale(double s);
  // TREAD guidance (rf.py sample_tread: both branches unconditional, routing forced), checked:
  // scale > 1 (the reference asserts it), ratio >= 0, delta >= 0 and ratio + delta < 1 (a branch
  // keeps at least a token). Throws std::invalid_argument naming the bound.
  static Guidance tread(double scale, double ratio, double delta);
};

// D(x; sigma) in float32: x [N,C,H,W] float32, sigma [N] or [] (any float dtype).
at::Tensor edm_precond(DiT& net, const at::Tensor& x, const at::Tensor& sigma, const at::Tensor& y,
                       double sigma_data, const Guidance& guidance, const ForwardOptions& opt);

struct EDMLossParams {
  double P_mean = -1.2, P_std = 1.2, sigma_data = 0.5;
};
// Per-element weighted loss [N,C,H,W]: sigma = exp(P_mean + P_std*n), weight
// (s^2+sd^2)/(s*sd)^2, loss = weight*(D(x + sigma*eps; sigma) - x)^2. Draws n, then eps, from
// `gen`, then the network draws class dropout and routing from it.
// With `slice`, every draw is made for the global batch and this batch's rows are kept.
// `hooks`: only its before_block/after_block, and block are used (ForwardOptions).
at::Tensor edm_loss(DiT& net, const at::Tensor& x, const at::Tensor& y, const EDMLossParams& p,
                    double class_drop_prob, at::Generator& gen, const BatchSlice& slice = {},
                    const ForwardOptions& hooks = {});

// The seeds of a batch: one generator per seed (seed mod 2^32), each drawing its initial
// latent randn(C,H,W) first, then its class randint(0, num_classes, []).
struct SeedBatch {
  std::vector<int64_t> seeds;
  std::vector<at::Generator> gens;     // continue to serve S_churn noise
  std::vector<at::Generator> router_gens;  // per-seed routing noise (forced routing only)
  at::Tensor latents;  // [B,C,H,W] float32
  at::Tensor labels;   // [B] int64
};
SeedBatch make_seed_batch(const std::vector<int64_t>& seeds, int channels, int size, int num_classes,
                          const c10::Device& device);

struct SamplerOptions {
  int num_steps = 18;
  double sigma_min = 0.002, sigma_max = 80, rho = 7;
  double S_churn = 0, S_min = 0, S_max = std::numeric_limits<double>::infinity(), S_noise = 1;
};
// Karras et al. noise levels t_0 > ... > t_{N-1}, then t_N = 0: [N+1] float64.
at::Tensor karras_steps(const SamplerOptions& o, const c10::Device& device);

// A denoiser D(x float32, sigma 0-d float64) -> float32/float64 [B,C,H,W].
using Denoiser = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;
// EDM Algorithm 2, state in float64; noise for S_churn from each seed's generator (drawn at
// every step, as the reference does). Returns x_0 [B,C,H,W] float64.
at::Tensor edm_sample(const Denoiser& D, SeedBatch& batch, const SamplerOptions& o);
// The DiT denoiser for a seed batch (eval mode; routing only for TREAD guidance). On the CPU the
// model runs on a multiple of 16 samples, the batch padded with copies of its first sample (their
// outputs dropped, their router noise from generators of their own): the CPU BLAS's kernels
// round a product's rows in a partial tile otherwise than in full ones (OpenBLAS's Prescott
// kernels, which it takes on a CPU it does not recognise: one row, or the last of an odd count;
// its SkylakeX kernels: counts that are not multiples of 16; and a convolution over one sample),
// which made a seed's sample depend on how many seeds its batch held. With full tiles a sample is
// the same bits in any batch (kernels with 24-row tiles, OpenBLAS's Haswell ones, would need 48).
Denoiser dit_denoiser(DiT& net, SeedBatch& batch, double sigma_data, const Guidance& g);

}  // namespace nt
