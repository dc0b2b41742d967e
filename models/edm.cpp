// EDM preconditioning, loss and Heun sampler (see models/edm.h).
#include "models/edm.h"

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "core/rng.h"

namespace nt {

Guidance Guidance::cfg_scale(double s) {
  Guidance g;
  g.kind = s == 1.0 ? Kind::none : Kind::cfg;
  g.scale = s;
  return g;
}

Guidance Guidance::tread(double scale, double ratio, double delta) {
  if (!(scale > 1.0))
    throw std::invalid_argument("tread guidance needs a scale > 1 (as the reference's sample_tread asserts), got " +
                                std::to_string(scale));
  if (!(ratio >= 0.0) || !(delta >= 0.0) || !(ratio + delta < 1.0))
    throw std::invalid_argument("tread guidance needs ratio >= 0, delta >= 0 and ratio + delta < 1 (the weaker "
                                "branch routes ratio + delta of the tokens), got ratio " + std::to_string(ratio) +
                                ", delta " + std::to_string(delta));
  Guidance g;
  g.kind = Kind::tread;
  g.scale = scale;
  g.tread_ratio = ratio;
  g.tread_delta = delta;
  return g;
}

at::Tensor edm_precond(DiT& net, const at::Tensor& x, const at::Tensor& sigma_in, const at::Tensor& y,
                       double sigma_data, const Guidance& g, const ForwardOptions& opt) {
  const double sd = sigma_data;
  auto sigma = sigma_in.to(x.scalar_type()).reshape({-1, 1, 1, 1});  // [N|1,1,1,1]
  auto c_skip = sd * sd / (sigma.pow(2) + sd * sd);
  auto c_out = sigma * sd / (sigma.pow(2) + sd * sd).sqrt();
  auto c_in = 1 / (sd * sd + sigma.pow(2)).sqrt();
  auto c_noise = sigma.log() / 4;
  auto x_in = (c_in * x).to(x.scalar_type());
  auto t = c_noise.flatten();
  at::Tensor F_x;
  switch (g.kind) {
    case Guidance::Kind::none: F_x = net->forward(x_in, t, y, opt); break;
    case Guidance::Kind::cfg: F_x = net->forward_with_cfg(x_in, t, y, g.scale, opt); break;
    case Guidance::Kind::tread: {  // both branches unconditional and routed, as rf.py sample_tread
      ForwardOptions strong = opt, weak = opt;
      strong.class_drop_prob = weak.class_drop_prob = 1.0;
      strong.force_routing = weak.force_routing = true;
      strong.selection_ratio = g.tread_ratio;
      weak.selection_ratio = g.tread_ratio + g.tread_delta;
      auto F1 = net->forward(x_in, t, y, strong);
      auto F2 = net->forward(x_in, t, y, weak);
      F_x = F2 + g.scale * (F1 - F2);
      break;
    }
  }
  return c_skip * x + c_out * F_x.to(at::kFloat);
}

at::Tensor edm_loss(DiT& net, const at::Tensor& x, const at::Tensor& y, const EDMLossParams& p,
                    double class_drop_prob, at::Generator& gen, const BatchSlice& slice,
                    const ForwardOptions& hooks) {
  const double sd = p.sigma_data;
  const int64_t N = x.size(0), rows = slice.rows(N);
  // Drawn on the generator's device, then moved: a CPU generator gives a CUDA run the draws of a
  // CPU run.
  const auto on_gen = x.options().device(gen.device());
  auto rnd_normal = slice.take(to_device_async(at::randn({rows, 1, 1, 1}, gen, on_gen), x.device()), N);  // [N,1,1,1]
  auto sigma = (rnd_normal * p.P_std + p.P_mean).exp();
  auto weight = (sigma.pow(2) + sd * sd) / (sigma * sd).pow(2);
  auto noise_shape = x.sizes().vec();
  noise_shape[0] = rows;
  auto n = slice.take(to_device_async(at::randn(noise_shape, gen, on_gen), x.device()), N) * sigma;  // [N,C,H,W]
  ForwardOptions opt;
  opt.class_drop_prob = class_drop_prob;
  opt.gen = &gen;
  opt.slice = slice;
  opt.before_block = hooks.before_block;
  opt.after_block = hooks.after_block;
  opt.block = hooks.block;
  auto D_yn = edm_precond(net, x + n, sigma, y, sd, Guidance{}, opt);
  return weight * (D_yn - x).pow(2);
}

SeedBatch make_seed_batch(const std::vector<int64_t>& seeds, int channels, int size, int num_classes,
                          const c10::Device& device) {
  SeedBatch b;
  b.seeds = seeds;
  std::vector<at::Tensor> lat, lab;
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  auto i64 = at::TensorOptions().dtype(at::kLong).device(device);
  for (int64_t s : seeds) {
    const uint64_t seed = static_cast<uint64_t>(s) % (uint64_t(1) << 32);
    b.gens.push_back(make_generator(device, seed));
    b.router_gens.push_back(make_generator(device, mix_seed(seed, 0x726f757465ull)));
    lat.push_back(at::randn({channels, size, size}, b.gens.back(), f32));
    lab.push_back(num_classes > 0 ? at::randint(0, num_classes, {}, b.gens.back(), i64)
                                  : at::zeros({}, i64));
  }
  b.latents = at::stack(lat);  // [B,C,H,W]
  b.labels = at::stack(lab);   // [B]
  return b;
}

at::Tensor karras_steps(const SamplerOptions& o, const c10::Device& device) {
  const double smax_r = std::pow(o.sigma_max, 1 / o.rho), smin_r = std::pow(o.sigma_min, 1 / o.rho);
  auto idx = at::arange(o.num_steps, at::TensorOptions().dtype(at::kDouble).device(device));
  auto t = (smax_r + idx / (o.num_steps - 1) * (smin_r - smax_r)).pow(o.rho);
  return at::cat({t, at::zeros_like(t.narrow(0, 0, 1))});  // [N+1], t_N = 0
}

at::Tensor edm_sample(const Denoiser& D, SeedBatch& batch, const SamplerOptions& o) {
  TORCH_CHECK(o.num_steps >= 2, "the Heun sampler needs at least 2 steps, got ", o.num_steps);
  torch::NoGradGuard no_grad;
  const auto device = batch.latents.device();
  auto t_steps = karras_steps(o, device);
  auto randn_like = [&](const at::Tensor& x) {  // one draw per seed from its own generator
    std::vector<at::Tensor> rows;
    for (auto& g : batch.gens) rows.push_back(at::randn(x.sizes().slice(1), g, x.options()));
    return at::stack(rows);
  };
  at::Tensor x_next = batch.latents.to(at::kDouble) * t_steps[0];
  for (int i = 0; i < o.num_steps; ++i) {
    auto x_cur = x_next;
    auto t_cur = t_steps[i], t_next = t_steps[i + 1];
    const double tc = t_cur.item<double>();
    const double gamma = (o.S_min <= tc && tc <= o.S_max)
                             ? std::min(o.S_churn / o.num_steps, std::sqrt(2.0) - 1)
                             : 0.0;
    auto t_hat = t_cur + gamma * t_cur;
    auto x_hat = x_cur + (t_hat.pow(2) - t_cur.pow(2)).sqrt() * o.S_noise * randn_like(x_cur);
    // Euler step.
    auto denoised = D(x_hat.to(at::kFloat), t_hat).to(at::kDouble);
    auto d_cur = (x_hat - denoised) / t_hat;
    x_next = x_hat + (t_next - t_hat) * d_cur;
    // Second-order correction.
    if (i < o.num_steps - 1) {
      denoised = D(x_next.to(at::kFloat), t_next).to(at::kDouble);
      auto d_prime = (x_next - denoised) / t_next;
      x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime);
    }
  }
  return x_next;
}

namespace {

// On the CPU the denoiser runs the model on a multiple of kCpuRows samples (see dit_denoiser).
constexpr int64_t kCpuRows = 16;

// t [n, ...] followed by rows - n copies of its first row.
at::Tensor padded_rows(const at::Tensor& t, int64_t rows) {
  auto sizes = t.sizes().vec();
  sizes[0] = rows - t.size(0);
  return at::cat({t, t.narrow(0, 0, 1).expand(sizes)});
}

}  // namespace

Denoiser dit_denoiser(DiT& net, SeedBatch& batch, double sigma_data, const Guidance& g) {
  // Generators for the padding rows' router noise (their outputs are dropped; the seeds' own
  // generators draw only for their own rows, as without padding).
  auto padding_gens = std::make_shared<std::vector<at::Generator>>();
  return [&net, &batch, sigma_data, g, padding_gens](const at::Tensor& x, const at::Tensor& sigma) {
    ForwardOptions opt;
    const int64_t n = x.size(0), rows = x.is_cpu() ? (n + kCpuRows - 1) / kCpuRows * kCpuRows : n;
    if (rows == n) {
      opt.sample_gens = &batch.router_gens;
      return edm_precond(net, x, sigma, batch.labels, sigma_data, g, opt);
    }
    std::vector<at::Generator> gens;
    if (!batch.router_gens.empty()) {
      while (static_cast<int64_t>(padding_gens->size()) < rows - n)
        padding_gens->push_back(make_generator(c10::Device(c10::kCPU), padding_gens->size()));
      gens = batch.router_gens;
      gens.insert(gens.end(), padding_gens->begin(), padding_gens->begin() + (rows - n));
      opt.sample_gens = &gens;
    }
    const at::Tensor s = sigma.dim() > 0 && sigma.size(0) == n ? padded_rows(sigma, rows) : sigma;
    return edm_precond(net, padded_rows(x, rows), s, padded_rows(batch.labels, rows), sigma_data, g, opt)
        .narrow(0, 0, n);  // [n, C, H, W]
  };
}

}  // namespace nt
