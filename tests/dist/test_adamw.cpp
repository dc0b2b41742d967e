// AdamW, EMA and clipping on flat buffers (dist/adamw.h) against LibTorch's own
// torch::optim::AdamW and torch::nn::utils::clip_grad_norm_.
#include "dist/adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

#include "core/rng.h"

namespace {

at::Generator gen(uint64_t seed) { return nt::make_generator(c10::Device(c10::kCPU), seed); }

// Buffers of awkward sizes, as a rank's shards would be.
std::vector<at::Tensor> random_buffers(at::Generator& g, double scale = 1.0) {
  std::vector<at::Tensor> out;
  for (int64_t n : {7, 33, 1000}) out.push_back(at::randn({n}, g, at::TensorOptions().dtype(at::kFloat)) * scale);
  return out;
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  auto da = a.to(at::kDouble), db = b.to(at::kDouble);
  return ((da - db).abs() / db.abs().clamp_min(1e-12)).max().item<double>();
}

struct AdamCase {
  double lr, beta1, beta2, eps, weight_decay;
};

TEST(AdamW, MatchesTorchOptimAdamW) {
  for (const AdamCase& c : {AdamCase{1e-3, 0.9, 0.999, 1e-8, 0.0}, AdamCase{3e-3, 0.8, 0.95, 1e-6, 0.1},
                            AdamCase{1e-2, 0.9, 0.99, 1e-8, 0.01}}) {
    auto g = gen(1);
    auto init = random_buffers(g);
    // Ours: plain buffers.
    std::vector<at::Tensor> flat;
    for (const auto& t : init) flat.push_back(t.clone());
    nt::AdamWState state = nt::adamw_init(flat);
    ASSERT_EQ(state.exp_avg.size(), flat.size());
    EXPECT_EQ(state.step, 0);
    const nt::AdamWParams p{c.lr, c.beta1, c.beta2, c.eps, c.weight_decay};
    // LibTorch's: leaf tensors with gradients.
    std::vector<at::Tensor> ref;
    for (const auto& t : init) ref.push_back(t.clone().set_requires_grad(true));
    torch::optim::AdamW opt(ref, torch::optim::AdamWOptions(c.lr)
                                     .betas(std::make_tuple(c.beta1, c.beta2))
                                     .eps(c.eps)
                                     .weight_decay(c.weight_decay));
    double worst = 0;
    bool exact = true;
    for (int step = 1; step <= 10; ++step) {
      auto grads = random_buffers(g, step % 3 == 0 ? 10.0 : 0.1);  // changing magnitudes
      for (size_t i = 0; i < ref.size(); ++i) ref[i].mutable_grad() = grads[i].clone();
      opt.step();
      nt::adamw_step(flat, grads, state, p);
      EXPECT_EQ(state.step, step);
      for (size_t i = 0; i < flat.size(); ++i) {
        worst = std::max(worst, max_rel_diff(flat[i], ref[i].detach()));
        exact = exact && torch::equal(flat[i], ref[i].detach());
      }
      // The moments follow Adam's recurrences too: exp_avg is a convex mix of the gradients.
      EXPECT_TRUE(std::isfinite(state.exp_avg_sq[2].sum().item<double>()));
    }
    EXPECT_LE(worst, 1e-6) << "lr " << c.lr << " wd " << c.weight_decay;
    // Not a requirement (LibTorch may fuse differently across versions), but worth knowing.
    std::cout << "[ AdamW    ] lr " << c.lr << " betas (" << c.beta1 << ", " << c.beta2 << ") wd " << c.weight_decay
              << ": " << (exact ? "bit-identical" : "max relative difference " + std::to_string(worst))
              << " to torch::optim::AdamW after 10 steps\n";
    // The parameters did move.
    EXPECT_GT((flat[2] - init[2]).abs().max().item<float>(), 1e-4f);
  }
}

TEST(AdamW, FirstStepMovesEachEntryByAboutLr) {
  // With bias correction, step 1 is lr * g / (|g| + eps') = lr * sign(g) for |g| >> eps.
  std::vector<at::Tensor> p = {torch::zeros({4})};
  std::vector<at::Tensor> g = {torch::tensor({2.f, -0.5f, 1e-2f, -30.f})};
  auto state = nt::adamw_init(p);
  nt::adamw_step(p, g, state, nt::AdamWParams{0.1, 0.9, 0.999, 1e-8, 0.0});
  EXPECT_TRUE(torch::allclose(p[0], torch::tensor({-0.1f, 0.1f, -0.1f, 0.1f}), 1e-5, 0));
  EXPECT_TRUE(torch::allclose(state.exp_avg[0], g[0] * 0.1, 1e-6, 0));
  EXPECT_TRUE(torch::allclose(state.exp_avg_sq[0], g[0] * g[0] * 0.001, 1e-6, 0));
  // Decoupled weight decay: a zero gradient still shrinks the parameter by lr * wd.
  std::vector<at::Tensor> q = {torch::full({3}, 2.f)};
  std::vector<at::Tensor> zero = {torch::zeros({3})};
  auto s2 = nt::adamw_init(q);
  nt::adamw_step(q, zero, s2, nt::AdamWParams{0.1, 0.9, 0.999, 1e-8, 0.5});
  EXPECT_TRUE(torch::allclose(q[0], torch::full({3}, 2.f * (1 - 0.1 * 0.5)), 1e-6, 0));
}

TEST(Ema, UpdateFormula) {
  auto g = gen(2);
  auto ema = random_buffers(g);
  auto params = random_buffers(g);
  std::vector<at::Tensor> ema0, params0;
  for (const auto& t : ema) ema0.push_back(t.clone());
  for (const auto& t : params) params0.push_back(t.clone());
  const double decay = 0.9;
  nt::ema_update(ema, params, decay);
  for (size_t i = 0; i < ema.size(); ++i) {
    auto expected = ema0[i].to(at::kDouble) * decay + params0[i].to(at::kDouble) * (1 - decay);
    EXPECT_TRUE(torch::allclose(ema[i].to(at::kDouble), expected, 1e-6, 1e-7)) << i;
    EXPECT_TRUE(torch::equal(params[i], params0[i])) << "the parameters must not change";
  }
  // decay 1 keeps the EMA, decay 0 copies the parameters.
  auto kept = ema[1].clone();
  nt::ema_update(ema, params, 1.0);
  EXPECT_TRUE(torch::equal(ema[1], kept));
  nt::ema_update(ema, params, 0.0);
  for (size_t i = 0; i < ema.size(); ++i) EXPECT_TRUE(torch::equal(ema[i], params[i])) << i;
  // Repeated updates toward a constant converge geometrically: e_n = c + (e_0 - c) d^n.
  std::vector<at::Tensor> e = {torch::zeros({2})}, c = {torch::full({2}, 1.f)};
  for (int i = 0; i < 10; ++i) nt::ema_update(e, c, 0.5);
  EXPECT_NEAR(e[0][0].item<double>(), 1.0 - std::pow(0.5, 10), 1e-6);
}

TEST(SumOfSquares, AccumulatesInFloat64) {
  // 1e4^2 + 1 = 100000001 is not a float32 (its neighbours are 1e8 and 1e8 + 8).
  std::vector<at::Tensor> bufs = {torch::tensor({1e4f, 1.f})};
  EXPECT_EQ(nt::sum_of_squares(bufs), 100000001.0);
  EXPECT_NE(static_cast<double>(torch::tensor({1e4f, 1.f}).pow(2).sum().item<float>()), 100000001.0)
      << "the float32 sum should have lost the 1 (else this test shows nothing)";
  // Several buffers add up; exact for these values.
  bufs.push_back(torch::tensor({3.f, 4.f}));
  bufs.push_back(torch::zeros({0}));
  EXPECT_EQ(nt::sum_of_squares(bufs), 100000001.0 + 25.0);
  EXPECT_EQ(nt::sum_of_squares({}), 0.0);
  // Random values against a float64 reference.
  auto g = gen(3);
  auto r = random_buffers(g);
  double expected = 0;
  for (const auto& t : r) expected += t.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_DOUBLE_EQ(nt::sum_of_squares(r), expected);
}

TEST(ClipByNorm, MatchesClipGradNorm) {
  for (double max_norm : {0.5, 3.0, 1e6}) {
    auto g = gen(4);
    auto grads = random_buffers(g, 0.1);  // norm ~ 3.2
    std::vector<at::Tensor> ref;
    for (const auto& t : grads) {
      auto p = torch::zeros_like(t).set_requires_grad(true);
      p.mutable_grad() = t.clone();
      ref.push_back(p);
    }
    std::vector<at::Tensor> original;
    for (const auto& t : grads) original.push_back(t.clone());
    const double norm = std::sqrt(nt::sum_of_squares(grads));
    const double torch_norm = torch::nn::utils::clip_grad_norm_(ref, max_norm);
    EXPECT_NEAR(norm, torch_norm, 1e-5 * norm);
    nt::clip_by_norm(grads, norm, max_norm);
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_TRUE(torch::allclose(grads[i], ref[i].grad(), 1e-6, 1e-9)) << "max_norm " << max_norm << " buffer " << i;
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1) {
      EXPECT_NEAR(std::sqrt(nt::sum_of_squares(grads)), max_norm, 1e-5 * max_norm);
      EXPECT_TRUE(torch::allclose(grads[2], original[2] * coef, 1e-6, 0));
    } else {
      for (size_t i = 0; i < grads.size(); ++i)
        EXPECT_TRUE(torch::equal(grads[i], original[i])) << "a norm below max_norm leaves gradients untouched";
    }
  }
  // Exactly at the limit: coef = max/(max + 1e-6) < 1, a (tiny) scaling, as clip_grad_norm_.
  std::vector<at::Tensor> at_limit = {torch::tensor({3.f, 4.f})};
  nt::clip_by_norm(at_limit, 5.0, 5.0);
  EXPECT_LT(at_limit[0][1].item<float>(), 4.f);
  EXPECT_NEAR(at_limit[0][1].item<float>(), 4.f, 1e-5);
}

}  // namespace
