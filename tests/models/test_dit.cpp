// DiT golden values: a small TREAD model (8x8x4 input, patch 2, width 64, depth 4, 4 heads,
// 10 classes, route 0.5 over blocks 1..2) whose weights and outputs come from the reference
// CompVis/tread `dit.py` (see tests/golden/README.md): parameter names and order, the sin-cos
// position embedding, the eval forward, and the training forward with routing and class
// dropout drawn from the same CPU generator stream as torch.manual_seed(123).
#include "models/dit.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "golden_dit.h"
#include "models/zoo.h"

namespace {

const std::string kGolden = std::string(NT_SOURCE_DIR) + "/tests/golden/";

// Measured max errors are printed by each test. With LibTorch 1.13.1 on CPU the forwards are
// bit-exact (error 0); the tolerance leaves room for other fp32 kernels (LibTorch 2.x attention,
// another BLAS), which move these outputs by ~2e-7 relative (e.g. batch 1 vs batch 3 here).
constexpr double kForwardTol = 1e-6;  // max|got - want| / max|want| for fp32 forwards

using nt::test::golden_dit_config;

// Copies every parameter of `net` from the reference state_dict by name.
void load_reference(nt::DiT& net, const nt::SafetensorsFile& f) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters()) {
    auto it = f.tensors.find(p.key());
    ASSERT_NE(it, f.tensors.end()) << "golden weights lack " << p.key();
    ASSERT_EQ(it->second.sizes(), p.value().sizes()) << p.key();
    p.value().copy_(it->second);
  }
}

// max|got - want| / max|want|, printed so the tolerance can be judged.
double rel_err(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << what;
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = want.to(at::kDouble).abs().max().item<double>();
  std::cout << "[ golden   ] " << what << ": max abs err " << err << ", relative " << err / scale
            << "\n";
  return err / scale;
}

class DiTGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    weights = nt::load_safetensors(kGolden + "dit_small_weights.safetensors");
    cases = nt::load_safetensors(kGolden + "dit_small_cases.safetensors");
    net = nt::DiT(golden_dit_config());
    load_reference(net, weights);
    x = cases.tensors.at("x");
    t = cases.tensors.at("t");
    y = cases.tensors.at("y");
  }
  nt::SafetensorsFile weights, cases;
  nt::DiT net{nullptr};
  at::Tensor x, t, y;
};

TEST_F(DiTGolden, ParameterNamesAreTheReferenceStateDictInOrder) {
  std::vector<std::string> ours;
  for (auto& p : net->named_parameters()) ours.push_back(p.key());
  EXPECT_EQ(ours, weights.order);  // pos_embed first, then the modules in registration order
  EXPECT_TRUE(net->named_buffers().is_empty()) << "the reference state_dict has no buffers";
  EXPECT_FALSE(net->pos_embed.requires_grad());
}

TEST_F(DiTGolden, PosEmbedEqualsReference) {
  nt::DiT fresh(golden_dit_config());  // pos_embed from our own initialisation, not loaded
  const auto& want = weights.tensors.at("pos_embed");
  ASSERT_EQ(fresh->pos_embed.sizes(), want.sizes());
  // float64 maths rounded to float32 on both sides: equal up to the last float32 bit.
  EXPECT_LE((fresh->pos_embed - want).abs().max().item<double>(), 1.2e-7);
  rel_err(fresh->pos_embed, want, "pos_embed");
}

TEST_F(DiTGolden, EvalForward) {
  torch::NoGradGuard no_grad;
  net->eval();
  auto out = net->forward(x, t, y);
  EXPECT_LE(rel_err(out, cases.tensors.at("eval_out"), "eval forward"), kForwardTol);
}

TEST_F(DiTGolden, TrainForwardWithRouting) {
  torch::NoGradGuard no_grad;
  net->train();
  auto g = at::detail::createCPUGenerator(123);
  nt::ForwardOptions opt;
  opt.gen = &g;
  auto out = net->forward(x, t, y, opt);
  EXPECT_LE(rel_err(out, cases.tensors.at("train_out"), "train forward (routing)"), kForwardTol);
  // Routing must matter here, or this case would not test it.
  EXPECT_GT(rel_err(out, cases.tensors.at("eval_out"), "train vs eval"), 1e-3);
}

TEST_F(DiTGolden, TrainForwardWithClassDropAndRouting) {
  torch::NoGradGuard no_grad;
  net->train();
  auto g = at::detail::createCPUGenerator(123);
  nt::ForwardOptions opt;
  opt.gen = &g;
  opt.class_drop_prob = 0.5;  // draws rand(N) first, then the router draws rand(N, T)
  auto out = net->forward(x, t, y, opt);
  EXPECT_LE(rel_err(out, cases.tensors.at("train_drop_out"), "train forward (drop 0.5)"),
            kForwardTol);
  EXPECT_GT(rel_err(out, cases.tensors.at("train_out"), "drop vs no drop"), 1e-3);
}

// class_drop_prob = 1 in training: every label is the null class, and the reference's token_drop
// still draws rand(N) before the router's draws, so the stream goes on as with any other
// probability (the same output as null labels after a discarded rand(N), the same next draw).
TEST_F(DiTGolden, TrainingDropOfEveryLabelStillDrawsAsTheReference) {
  torch::NoGradGuard no_grad;
  net->train();
  auto g1 = at::detail::createCPUGenerator(123), g2 = at::detail::createCPUGenerator(123);
  nt::ForwardOptions all;
  all.gen = &g1;
  all.class_drop_prob = 1.0;
  const auto out = net->forward(x, t, y, all);
  at::rand({x.size(0)}, g2);  // token_drop's draw
  nt::ForwardOptions none;
  none.gen = &g2;
  none.class_drop_prob = 0.0;
  const auto want = net->forward(x, t, at::full_like(y, 10), none);  // 10 classes: 10 is the null class
  EXPECT_TRUE(torch::equal(out, want));
  EXPECT_TRUE(torch::equal(at::rand({4}, g1), at::rand({4}, g2))) << "the streams go on alike";
}

TEST_F(DiTGolden, ForwardIsBatchIndependentInEval) {
  torch::NoGradGuard no_grad;
  net->eval();
  auto all = net->forward(x, t, y);
  for (int64_t i = 0; i < x.size(0); ++i) {
    auto one = net->forward(x.narrow(0, i, 1), t.narrow(0, i, 1), y.narrow(0, i, 1));
    EXPECT_LE(rel_err(one, all.narrow(0, i, 1), "sample " + std::to_string(i) + " alone"), 1e-6);
  }
}

TEST_F(DiTGolden, ForwardWithCfgMixesCondAndNullClass) {
  torch::NoGradGuard no_grad;
  net->eval();
  const auto null = at::full_like(y, 10);
  auto cond = net->forward(x, t, y);
  auto uncond = net->forward(x, t, null);
  auto guided = net->forward_with_cfg(x, t, y, 1.5);
  EXPECT_LE(rel_err(guided, uncond + 1.5 * (cond - uncond), "forward_with_cfg"), 1e-6);
  EXPECT_GT(rel_err(cond, uncond, "cond vs uncond"), 1e-3);
}

}  // namespace

namespace {

// The attention with qkv's bias handed to attend (its product took it detached, as a block does
// with the fused kernels on CUDA): on the CPU the fused split does not apply and the bias gets its
// gradient through the product's output instead. Against the product with its own bias: the same
// output bit for bit, the same gradients (the bias's summed in another order: to fp32 rounding).
TEST(Attention, QkvBiasHandedToAttendGetsTheProductsGradient) {
  torch::manual_seed(5);
  nt::Attention attn(24, 3);
  const auto x0 = torch::randn({2, 7, 24}), probe = torch::randn({2, 7, 24});
  auto run = [&](bool bias_elsewhere) {
    for (auto& p : attn->parameters()) p.mutable_grad() = at::Tensor();
    const auto x = x0.clone().requires_grad_(true);
    auto& qkv = attn->qkv;
    const auto out = at::linear(x, qkv->weight, bias_elsewhere ? qkv->bias.detach() : qkv->bias);
    const auto y = attn->attend(out, false, bias_elsewhere ? qkv->bias : at::Tensor());
    (y * probe).sum().backward();
    return std::vector<at::Tensor>{y.detach(), qkv->bias.grad().clone(), qkv->weight.grad().clone(), x.grad()};
  };
  const auto ref = run(false), got = run(true);
  EXPECT_TRUE(got[0].equal(ref[0]));
  ASSERT_TRUE(got[1].defined()) << "the bias got no gradient";
  EXPECT_TRUE(torch::allclose(got[1], ref[1], 1e-6, 1e-6)) << (got[1] - ref[1]).abs().max().item<double>();
  EXPECT_TRUE(got[2].equal(ref[2]));
  EXPECT_TRUE(got[3].equal(ref[3]));
}

// The patch embedding as one product (CUDA's form) against the convolution (the CPU's): the same
// tokens, and the same weight and bias gradients, to fp32 rounding; laid out contiguous.
TEST(PatchEmbed, ProductIsTheConvolution) {
  torch::manual_seed(6);
  nt::PatchEmbed embed(3, 20, 2);
  const auto x = torch::randn({2, 3, 6, 8}), probe = torch::randn({2, 12, 20});
  auto run = [&](bool product) {
    for (auto& p : embed->parameters()) p.mutable_grad() = at::Tensor();
    const auto y = product ? embed->as_product(x) : embed->as_convolution(x);  // [N, T, D]
    (y * probe).sum().backward();
    return std::vector<at::Tensor>{y.detach(), embed->proj->weight.grad().clone(), embed->proj->bias.grad().clone()};
  };
  const auto conv = run(false), product = run(true);
  ASSERT_EQ(product[0].sizes(), (std::vector<int64_t>{2, 12, 20}));
  EXPECT_TRUE(embed->as_product(x).is_contiguous());
  for (size_t i = 0; i < conv.size(); ++i)
    EXPECT_TRUE(torch::allclose(product[i], conv[i], 1e-5, 1e-6)) << i << ": "
                                                                  << (product[i] - conv[i]).abs().max().item<double>();
  EXPECT_THROW(embed->as_product(torch::randn({1, 3, 5, 8})), c10::Error);
}

}  // namespace

namespace {

// A fresh model's initialisation in both model.init modes: the same draws for every parameter,
// the adaLN and final linears zero ("adaln_zero") or left xavier-uniform with zero biases as the
// reference's initialize_weights leaves them ("reference": bounds sqrt(6 / (fan_in + fan_out))).
TEST(DiTInit, AdaLnZeroOrTheReferencesXavier) {
  nt::ModelConfig mc;
  mc.name = "DiT-S/2";
  mc.input_size = 8;
  mc.num_classes = 10;
  mc.depth = 2;
  mc.hidden_size = 64;
  mc.num_heads = 4;
  auto fresh = [&](const std::string& init) {
    mc.init = init;
    nt::DiT net(nt::resolve_model(mc));
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    net->initialize_weights(&gen);
    return net;
  };
  nt::DiT zero = fresh("adaln_zero"), ref = fresh("reference");
  const auto zp = zero->named_parameters(), rp = ref->named_parameters();
  ASSERT_EQ(zp.size(), rp.size());
  int weights = 0;
  for (const auto& item : rp) {
    const std::string& name = item.key();
    const at::Tensor& r = item.value();
    const at::Tensor& z = zp[name];
    const bool adaln_or_final = name.find("adaLN_modulation") != std::string::npos ||
                                name.rfind("final_layer.linear", 0) == 0;
    if (!adaln_or_final) {
      EXPECT_TRUE(torch::equal(r, z)) << name << ": the same draws in both modes";
      continue;
    }
    EXPECT_EQ(z.abs().max().item<float>(), 0.f) << name << " (adaln_zero)";
    if (name.find(".bias") != std::string::npos) {
      EXPECT_EQ(r.abs().max().item<float>(), 0.f) << name << " (reference: zero biases)";
      continue;
    }
    ++weights;
    const double bound = std::sqrt(6.0 / static_cast<double>(r.size(0) + r.size(1)));
    EXPECT_LE(r.abs().max().item<double>(), bound) << name;
    EXPECT_GT(r.abs().max().item<double>(), 0.9 * bound) << name << ": xavier-uniform draws, not zeros";
    EXPECT_NEAR(r.std().item<double>(), bound / std::sqrt(3.0), 0.1 * bound) << name;
  }
  EXPECT_EQ(weights, 2 + 2);  // the two blocks' adaLN linears, the final layer's adaLN and linear
  EXPECT_EQ(nt::resolve_model(mc).adaln_zero, false);
}

}  // namespace
