// EDM: golden values from the reference CompVis/tread `edm.py` (EDMPrecond and the Heun
// sampler fed by StackedRandomGenerator, see tests/golden/README.md), the preconditioning
// coefficients and Karras steps against their formulas, the sampler against the exact ODE of
// Gaussian data, seed semantics independent of batching, and the training loss against a
// recomputation from a cloned generator.
#include "models/edm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "golden_dit.h"
#include "models/router.h"

namespace {

const std::string kGolden = std::string(NT_SOURCE_DIR) + "/tests/golden/";

// Measured max errors are printed by each test.
constexpr double kPrecondTol = 1e-6;  // fp32 D(x; sigma) vs the reference
// Both are bit-exact with LibTorch 1.13.1 on CPU; the tolerances leave room for other fp32
// kernels (LibTorch 2.x attention, other BLAS), which move the sampler by ~2e-6 relative.
constexpr double kSamplerTol = 1e-5;  // float64 sampler output vs the reference (fp32 network)

using nt::test::golden_dit_config;

nt::DiT golden_model() {
  auto f = nt::load_safetensors(kGolden + "dit_small_weights.safetensors");
  nt::DiT net(golden_dit_config());
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters()) {
    auto it = f.tensors.find(p.key());
    if (it == f.tensors.end()) throw std::runtime_error("golden weights lack " + p.key());
    p.value().copy_(it->second);
  }
  return net;
}

// max|got - want| / max|want|, printed so the tolerance can be judged.
double rel_err(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = want.to(at::kDouble).abs().max().item<double>();
  std::cout << "[ golden   ] " << what << ": max abs err " << err << ", relative " << err / scale
            << "\n";
  return err / scale;
}

const std::vector<int64_t> kSeeds{0, 1, 7};

// ---------------------------------------------------------------------------------------
// Golden values from the reference

TEST(EdmGolden, PrecondMatchesReference) {
  auto net = golden_model();
  net->eval();
  torch::NoGradGuard no_grad;
  auto cases = nt::load_safetensors(kGolden + "dit_small_cases.safetensors");
  const auto &x = cases.tensors.at("x"), &y = cases.tensors.at("y");
  const auto& sigma = cases.tensors.at("sigma");  // [3] float32: 0.002, 0.7, 80
  auto D = nt::edm_precond(net, x, sigma, y, 0.5, nt::Guidance::cfg_scale(1.0), {});
  EXPECT_EQ(D.scalar_type(), at::kFloat);
  EXPECT_LE(rel_err(D, cases.tensors.at("precond_out"), "precond"), kPrecondTol);
  auto Dg = nt::edm_precond(net, x, sigma, y, 0.5, nt::Guidance::cfg_scale(1.5), {});
  EXPECT_LE(rel_err(Dg, cases.tensors.at("precond_cfg_out"), "precond cfg 1.5"), kPrecondTol);
  EXPECT_GT(rel_err(Dg, D, "cfg 1.5 vs plain"), 1e-4);
}

TEST(EdmGolden, SeedBatchLatentsAndLabelsAreExact) {
  auto ref = nt::load_safetensors(kGolden + "edm_sampler_cases.safetensors");
  EXPECT_TRUE(torch::equal(ref.tensors.at("seeds"), torch::tensor(kSeeds)));
  auto b = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  EXPECT_TRUE(torch::equal(b.latents, ref.tensors.at("latents")));
  EXPECT_TRUE(torch::equal(b.labels, ref.tensors.at("labels")));
  ASSERT_EQ(b.gens.size(), 3u);
}

struct SamplerCase {
  const char* key;
  double cfg_scale;
  double S_churn;
};

class EdmGoldenSampler : public ::testing::TestWithParam<SamplerCase> {};

TEST_P(EdmGoldenSampler, MatchesReference) {
  const auto c = GetParam();
  auto net = golden_model();
  net->eval();
  auto ref = nt::load_safetensors(kGolden + "edm_sampler_cases.safetensors");
  auto batch = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  nt::SamplerOptions o;
  o.num_steps = 6;
  o.S_churn = c.S_churn;
  auto out = nt::edm_sample(nt::dit_denoiser(net, batch, 0.5, nt::Guidance::cfg_scale(c.cfg_scale)),
                            batch, o);
  EXPECT_EQ(out.scalar_type(), at::kDouble);
  EXPECT_LE(rel_err(out, ref.tensors.at(std::string("sample_") + c.key),
                    std::string("sampler ") + c.key),
            kSamplerTol);
}

INSTANTIATE_TEST_SUITE_P(Reference, EdmGoldenSampler,
                         ::testing::Values(SamplerCase{"plain", 1.0, 0.0},
                                           SamplerCase{"cfg", 1.5, 0.0},
                                           SamplerCase{"churn", 1.0, 5.0}),
                         [](const auto& info) { return std::string(info.param.key); });

// A seed's latent, label and later draws do not depend on the seeds beside it.
TEST(EdmSeeds, SeedBatchRowsIndependentOfBatching) {
  auto all = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  for (size_t i = 0; i < kSeeds.size(); ++i) {
    auto one = nt::make_seed_batch({kSeeds[i]}, 4, 8, 10, torch::kCPU);
    const auto r = static_cast<int64_t>(i);
    EXPECT_TRUE(torch::equal(one.latents, all.latents.narrow(0, r, 1))) << "seed " << kSeeds[i];
    EXPECT_TRUE(torch::equal(one.labels, all.labels.narrow(0, r, 1))) << "seed " << kSeeds[i];
    EXPECT_TRUE(torch::equal(torch::randn({5}, one.gens[0]), torch::randn({5}, all.gens[i])));
  }
  EXPECT_FALSE(torch::equal(all.latents[0], all.latents[1]));
}

// Gaussian data's exact denoiser D(x; sigma) = x*s^2/(s^2+sigma^2), element by element.
nt::Denoiser gaussian_denoiser(double s) {
  return [s](const at::Tensor& x, const at::Tensor& sigma) {
    EXPECT_EQ(x.scalar_type(), at::kFloat);  // the network side sees float32
    const double sg = sigma.item<double>();
    return x.to(at::kDouble) * (s * s / (s * s + sg * sg));
  };
}

// With a denoiser that acts element by element, sampling seeds {0, 1, 7} together or one at a
// time is identical bit for bit, S_churn noise included (each seed draws its own).
TEST(EdmSeeds, SamplerIndependentOfBatchingBitForBit) {
  for (double churn : {0.0, 5.0}) {
    nt::SamplerOptions o;
    o.num_steps = 6;
    o.S_churn = churn;
    auto batch = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
    auto all = nt::edm_sample(gaussian_denoiser(0.5), batch, o);
    for (size_t i = 0; i < kSeeds.size(); ++i) {
      auto one_batch = nt::make_seed_batch({kSeeds[i]}, 4, 8, 10, torch::kCPU);
      auto one = nt::edm_sample(gaussian_denoiser(0.5), one_batch, o);
      EXPECT_TRUE(torch::equal(one, all.narrow(0, static_cast<int64_t>(i), 1)))
          << "seed " << kSeeds[i] << " churn " << churn;
    }
  }
  // The churn noise does reach the samples (so the check above covers it).
  nt::SamplerOptions o;
  o.num_steps = 6;
  auto b0 = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  auto b5 = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  auto plain = nt::edm_sample(gaussian_denoiser(0.5), b0, o);
  o.S_churn = 5;
  EXPECT_GT((nt::edm_sample(gaussian_denoiser(0.5), b5, o) - plain).abs().max().item<double>(), 0.1);
}

// With the DiT too, bit for bit: the CPU's matrix products are not batch-invariant (OpenBLAS's
// Prescott kernels round the last row of an odd count, or a lone row, otherwise than rows in full
// tiles; a convolution over one sample otherwise than over several), so the denoiser runs the
// model on a multiple of 16 samples (models/edm.h: dit_denoiser), and a seed alone gives the bits
// it gives among the others.
TEST(EdmSeeds, DiTSamplesIndependentOfBatching) {
  auto net = golden_model();
  net->eval();
  for (double churn : {0.0, 5.0}) {
    for (double cfg : {1.0, 1.5}) {
      nt::SamplerOptions o;
      o.num_steps = 6;
      o.S_churn = churn;
      auto batch = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
      auto all = nt::edm_sample(nt::dit_denoiser(net, batch, 0.5, nt::Guidance::cfg_scale(cfg)),
                                batch, o);
      for (size_t i = 0; i < kSeeds.size(); ++i) {
        auto one_batch = nt::make_seed_batch({kSeeds[i]}, 4, 8, 10, torch::kCPU);
        auto one = nt::edm_sample(
            nt::dit_denoiser(net, one_batch, 0.5, nt::Guidance::cfg_scale(cfg)), one_batch, o);
        EXPECT_TRUE(torch::equal(one, all.narrow(0, static_cast<int64_t>(i), 1)))
            << "seed " << kSeeds[i] << " alone, churn " << churn << " cfg " << cfg << ": "
            << (one - all.narrow(0, static_cast<int64_t>(i), 1)).abs().max().item<double>();
      }
    }
  }
}

// TREAD-guided sampling (rf.py sample_tread's guidance, in the EDM sampler): each seed's routing
// draws come from its own generator (the padding rows' from generators of their own), so a
// seed's sample does not depend on its batch, bit for bit; the
// guided samples differ from the plain ones and from a scale of 1 (the strong branch alone);
// Guidance::tread refuses what the reference refuses (scale <= 1) and ratios that keep no token.
TEST(EdmSeeds, TreadGuidedSamplesIndependentOfBatching) {
  auto net = golden_model();
  net->eval();
  nt::SamplerOptions o;
  o.num_steps = 4;
  const nt::Guidance g = nt::Guidance::tread(1.5, 0.25, 0.25);
  auto batch = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  auto all = nt::edm_sample(nt::dit_denoiser(net, batch, 0.5, g), batch, o);
  EXPECT_TRUE(all.isfinite().all().item<bool>());
  for (size_t i = 0; i < kSeeds.size(); ++i) {
    auto one_batch = nt::make_seed_batch({kSeeds[i]}, 4, 8, 10, torch::kCPU);
    auto one = nt::edm_sample(nt::dit_denoiser(net, one_batch, 0.5, g), one_batch, o);
    const at::Tensor row = all.narrow(0, static_cast<int64_t>(i), 1);
    EXPECT_TRUE(torch::equal(one, row))
        << "tread-guided seed " << kSeeds[i] << ": " << (one - row).abs().max().item<double>();
  }
  auto plain_batch = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  auto plain = nt::edm_sample(nt::dit_denoiser(net, plain_batch, 0.5, nt::Guidance{}), plain_batch, o);
  EXPECT_GT((plain - all).abs().max().item<double>(), 1e-3) << "the guidance changes the samples";
  nt::Guidance strong_only = g;
  strong_only.scale = 1.0;  // F(r+delta) + 1 * (F(r) - F(r+delta)) = F(r)
  auto again = nt::make_seed_batch(kSeeds, 4, 8, 10, torch::kCPU);
  auto strong = nt::edm_sample(nt::dit_denoiser(net, again, 0.5, strong_only), again, o);
  EXPECT_GT((strong - all).abs().max().item<double>(), 1e-3) << "the scale acts";

  EXPECT_THROW(nt::Guidance::tread(1.0, 0.25, 0.25), std::invalid_argument);  // rf.py: cfg_scale > 1
  EXPECT_THROW(nt::Guidance::tread(1.5, 0.5, 0.5), std::invalid_argument);    // the weaker branch keeps no token
  EXPECT_THROW(nt::Guidance::tread(1.5, -0.1, 0.2), std::invalid_argument);
  EXPECT_THROW(nt::Guidance::tread(1.5, 0.2, -0.1), std::invalid_argument);
  try {
    nt::Guidance::tread(1.5, 0.6, 0.5);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ratio + delta < 1"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------
// Formulas

// With the final linear zeroed and its bias 1, F(x) = 1 everywhere: D(x; s) = c_skip*x + c_out.
TEST(EdmPrecond, SkipAndOutCoefficients) {
  nt::DiTConfig cfg = golden_dit_config();
  cfg.routes.clear();
  nt::DiT net(cfg);
  net->eval();
  torch::NoGradGuard no_grad;
  net->final_layer->linear->weight.zero_();
  net->final_layer->linear->bias.fill_(1.0);
  const double sd = 0.5;
  auto x = torch::randn({1, 4, 8, 8}, at::detail::createCPUGenerator(3), torch::kFloat);
  auto y = torch::tensor({int64_t{4}});
  for (double s : {0.002, 0.05, 0.5, 1.0, 7.0, 80.0}) {
    for (bool zero_d : {true, false}) {
      auto sigma = zero_d ? torch::tensor(s, torch::kDouble) : torch::tensor({s}, torch::kDouble);
      auto D = nt::edm_precond(net, x, sigma, y, sd, nt::Guidance::cfg_scale(1.0), {});
      const double c_skip = sd * sd / (s * s + sd * sd);
      const double c_out = s * sd / std::sqrt(s * s + sd * sd);
      auto want = x.to(torch::kDouble) * c_skip + c_out;
      EXPECT_LE(rel_err(D, want, "c_skip, c_out at sigma " + std::to_string(s) +
                                     (zero_d ? " (0-d)" : " ([1])")),
                1e-6);
    }
  }
}

// c_in and c_noise through the network: D = c_skip*x + c_out*F(c_in*x; ln(s)/4), with the
// coefficients computed in double here.
TEST(EdmPrecond, InputAndNoiseCoefficients) {
  auto net = golden_model();
  net->eval();
  torch::NoGradGuard no_grad;
  const double sd = 0.5;
  auto x = torch::randn({3, 4, 8, 8}, at::detail::createCPUGenerator(5), torch::kFloat);
  auto y = torch::tensor({int64_t{1}, int64_t{2}, int64_t{3}});
  const std::vector<double> sig{0.01, 0.9, 40.0};
  auto D = nt::edm_precond(net, x, torch::tensor(sig, torch::kDouble), y, sd,
                           nt::Guidance::cfg_scale(1.0), {});
  for (int i = 0; i < 3; ++i) {
    const double s = sig[i];
    const double c_skip = sd * sd / (s * s + sd * sd), c_out = s * sd / std::sqrt(s * s + sd * sd);
    const double c_in = 1 / std::sqrt(sd * sd + s * s), c_noise = std::log(s) / 4;
    auto xi = x.narrow(0, i, 1);
    auto F = net->forward((xi.to(torch::kDouble) * c_in).to(torch::kFloat),
                          torch::tensor({c_noise}, torch::kFloat), y.narrow(0, i, 1));
    auto want = xi.to(torch::kDouble) * c_skip + F.to(torch::kDouble) * c_out;
    EXPECT_LE(rel_err(D.narrow(0, i, 1), want, "precond sigma " + std::to_string(s)), 1e-6);
  }
}

TEST(EdmSampler, KarrasStepsClosedForm) {
  for (int n : {2, 6, 18, 40}) {
    nt::SamplerOptions o;
    o.num_steps = n;
    auto t = nt::karras_steps(o, torch::kCPU);
    ASSERT_EQ(t.scalar_type(), at::kDouble);
    ASSERT_EQ(t.numel(), n + 1);
    auto a = t.accessor<double, 1>();
    const double hi = std::pow(80.0, 1 / 7.0), lo = std::pow(0.002, 1 / 7.0);
    for (int i = 0; i < n; ++i) {
      const double want = std::pow(hi + i / double(n - 1) * (lo - hi), 7.0);
      EXPECT_NEAR(a[i], want, 1e-12 * want) << "step " << i << " of " << n;
      if (i > 0) {
        EXPECT_LT(a[i], a[i - 1]);
      }
    }
    EXPECT_NEAR(a[0], 80.0, 1e-12);
    EXPECT_NEAR(a[n - 1], 0.002, 1e-15);
    EXPECT_EQ(a[n], 0.0);
  }
}

// Data ~ N(0, s^2 I): the probability flow ODE dx/dsigma = x*sigma/(s^2+sigma^2) maps
// x(sigma_max) to x(sigma_max)*s/sqrt(s^2+sigma_max^2). Returns the relative error of Heun.
double heun_gaussian_error(int steps) {
  const double s = 0.5;
  auto batch = nt::make_seed_batch(kSeeds, 4, 8, 0, torch::kCPU);
  nt::SamplerOptions o;
  o.num_steps = steps;
  auto got = nt::edm_sample(gaussian_denoiser(s), batch, o);
  auto want = batch.latents.to(at::kDouble) * 80.0 * (s / std::sqrt(s * s + 80.0 * 80.0));
  return rel_err(got, want, "Heun " + std::to_string(steps) + " steps on Gaussian data");
}

// The discretisation error of Heun with Karras steps: the reference edm_sampler, run on the
// same latents with the same denoiser, gives 0.0552700 (18 steps) and 0.00977344 (40 steps);
// about (40/18)^2 apart, as a second-order method should be.
TEST(EdmSampler, HeunFollowsExactOdeOfGaussianData) {
  const double e18 = heun_gaussian_error(18);
  const double e40 = heun_gaussian_error(40);
  EXPECT_NEAR(e18, 0.0552700, 1e-6);
  EXPECT_NEAR(e40, 0.00977344, 1e-7);
  EXPECT_LT(e40, e18 / 4);
}

// The loss draws n, then eps, then class dropout and routing from one generator; recompute it
// by hand from a clone of that generator.
TEST(EdmLoss, EqualsManualRecomputation) {
  auto net = golden_model();
  net->train();
  const double sd = 0.5, P_mean = -1.2, P_std = 1.2, drop = 0.5;
  auto x = torch::randn({3, 4, 8, 8}, at::detail::createCPUGenerator(11), torch::kFloat);
  auto y = torch::tensor({int64_t{0}, int64_t{5}, int64_t{9}});
  auto gen = at::detail::createCPUGenerator(77);
  auto gen2 = gen.clone();

  at::Tensor loss;
  {
    torch::NoGradGuard no_grad;
    loss = nt::edm_loss(net, x, y, nt::EDMLossParams{}, drop, gen);
  }
  EXPECT_EQ(loss.sizes(), x.sizes());
  EXPECT_EQ(loss.scalar_type(), at::kFloat);

  torch::NoGradGuard no_grad;
  auto rnd = torch::randn({3, 1, 1, 1}, gen2, torch::kFloat);
  auto sigma = (rnd * P_std + P_mean).exp();                        // [N,1,1,1]
  auto weight = (sigma.pow(2) + sd * sd) / (sigma * sd).pow(2);
  auto xn = x + torch::randn(x.sizes(), gen2, torch::kFloat) * sigma;
  auto c_skip = sd * sd / (sigma.pow(2) + sd * sd);
  auto c_out = sigma * sd / (sigma.pow(2) + sd * sd).sqrt();
  auto c_in = 1 / (sigma.pow(2) + sd * sd).sqrt();
  nt::ForwardOptions opt;
  opt.gen = &gen2;
  opt.class_drop_prob = drop;
  auto F = net->forward(c_in * xn, sigma.log().flatten() / 4, y, opt);
  auto want = weight * (c_skip * xn + c_out * F - x).pow(2);
  EXPECT_LE(rel_err(loss, want, "edm_loss"), 1e-6);
  // Both generators consumed the same draws.
  EXPECT_TRUE(torch::equal(torch::rand({4}, gen), torch::rand({4}, gen2)));
  // And a different stream gives a different loss (the check above can fail).
  auto gen3 = at::detail::createCPUGenerator(78);
  auto other = nt::edm_loss(net, x, y, nt::EDMLossParams{}, drop, gen3);
  EXPECT_GT(rel_err(other, want, "edm_loss other seed"), 1e-2);
}

// Rank slices: each part of a global batch, drawing for the global batch and keeping its rows,
// gets exactly the noise, sigma, class dropout and routing the whole batch gets (W ranks train
// what one rank trains).
TEST(EdmLoss, RankSlicesOfTheGlobalBatchDrawTheSameRandomness) {
  auto net = golden_model();
  net->train();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({6, 4, 8, 8}, at::detail::createCPUGenerator(11), torch::kFloat);
  auto y = torch::tensor({int64_t{0}, int64_t{5}, int64_t{9}, int64_t{2}, int64_t{3}, int64_t{4}});
  auto gen = at::detail::createCPUGenerator(77);
  auto whole = nt::edm_loss(net, x, y, nt::EDMLossParams{}, 0.5, gen);  // [6,4,8,8]
  for (int W : {2, 3}) {
    const int64_t part = 6 / W;
    std::vector<at::Tensor> parts;
    for (int r = 0; r < W; ++r) {
      auto g = at::detail::createCPUGenerator(77);
      nt::BatchSlice slice{r * part, 6};
      parts.push_back(nt::edm_loss(net, x.narrow(0, r * part, part), y.narrow(0, r * part, part),
                                   nt::EDMLossParams{}, 0.5, g, slice));
    }
    // Only the network's batch size differs (BLAS rounding): far below any change of noise.
    EXPECT_LE(rel_err(at::cat(parts), whole, "edm_loss W=" + std::to_string(W)), 1e-5);
  }
  // Without slicing, a half batch draws other noise: the check above can fail.
  auto g = at::detail::createCPUGenerator(77);
  auto unsliced = nt::edm_loss(net, x.narrow(0, 3, 3), y.narrow(0, 3, 3), nt::EDMLossParams{}, 0.5, g);
  EXPECT_GT(rel_err(unsliced, whole.narrow(0, 3, 3), "edm_loss unsliced half"), 1e-2);
}

}  // namespace
