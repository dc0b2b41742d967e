// A linear layer's weight gradient in its two forms (models/product_forms.h) and the linear node
// whose backward uses it (models/linear_node.h). On the CPU, with the forms forced: the
// transposed form gives the direct one's values (to fp64 rounding), in its shape, contiguous; the
// direct form is autograd's bit for bit; the node's value and gradients (3-D and 2-D inputs, with,
// without and with a detached bias) are at::linear's bit for bit in the direct form and to fp32
// rounding in the transposed one; unforced on the CPU the node is at::linear itself; the MLP node
// (models/gelu_mlp.h) with the transposed form gives the plain ops' gradients. On a GPU (skipped
// elsewhere): both forced forms and the tall rule against the CPU in fp32 (the transpose kernel's
// whole and partial tiles), and the node under bf16 autocast against at::linear under autocast.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <optional>
#include <string>

#include "equal_or_both_undefined.h"
#include "forced_product_form.h"
#include "max_rel_diff.h"
#include "models/autocast.h"
#include "models/gelu_mlp.h"
#include "models/linear_node.h"
#include "models/product_forms.h"

namespace {

using nt::test::equal_or_both_undefined;

using nt::ProductForm;
using Forced = nt::test::ForcedProductForm;
using nt::test::max_rel_diff;

// The transposed and staged forms against the direct one; staged copies dy (O 12 < H 20) or a
// (O 20 > H 12) first.
TEST(ProductForms, TransposedAndStagedFormsGiveTheDirectOne) {
  torch::manual_seed(1);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  for (auto [O, H] : {std::pair<int64_t, int64_t>{12, 20}, {20, 12}}) {
    const auto dy = torch::randn({37, O}, f64), a = torch::randn({37, H}, f64);
    for (ProductForm form : {ProductForm::transposed, ProductForm::staged}) {
      const std::string which = std::string(form == ProductForm::staged ? "staged" : "transposed") + ", O " +
                                std::to_string(O);
      at::Tensor dw, added = torch::randn({O, H}, f64);
      const at::Tensor held = added.clone();
      {
        Forced t(form);
        dw = nt::weight_gradient(dy, a);
        nt::add_weight_gradient(dy, a, added);
      }
      ASSERT_EQ(dw.sizes(), (std::vector<int64_t>{O, H})) << which;
      EXPECT_LE(max_rel_diff(dw, dy.t().mm(a)), 1e-13) << which;
      EXPECT_LE(max_rel_diff(added, held + dy.t().mm(a)), 1e-13) << which;
    }
    Forced d(ProductForm::direct);
    EXPECT_TRUE(torch::equal(nt::weight_gradient(dy, a), dy.t().mm(a)));
  }
}

// The input gradient likewise: dy · (W^T)^T through W^T made contiguous (staged), from a weight of
// another dtype (cast to dy's, as the direct form casts it).
TEST(ProductForms, StagedInputGradientGivesTheDirectOne) {
  torch::manual_seed(4);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  const auto dy = torch::randn({37, 12}, f64), w = torch::randn({12, 20});
  at::Tensor dx;
  {
    Forced t(ProductForm::staged);
    dx = nt::input_gradient(dy, w);
  }
  ASSERT_EQ(dx.sizes(), (std::vector<int64_t>{37, 20}));
  EXPECT_EQ(dx.scalar_type(), torch::kDouble);
  EXPECT_LE(max_rel_diff(dx, dy.mm(w.to(torch::kDouble))), 1e-13);
  {
    // The weight as the staged product reads it (what models/gelu_mlp.h hands cuBLASLt): W^T
    // contiguous in dy's dtype.
    Forced t(ProductForm::staged);
    const auto iw = nt::input_gradient_weight(dy, w);
    EXPECT_TRUE(iw.transposed);
    EXPECT_TRUE(iw.w.is_contiguous());
    EXPECT_EQ(iw.w.scalar_type(), torch::kDouble);
    EXPECT_TRUE(torch::equal(iw.w, w.to(torch::kDouble).t()));
  }
  Forced d(ProductForm::direct);
  EXPECT_TRUE(torch::equal(nt::input_gradient(dy, w), dy.mm(w.to(torch::kDouble))));
  const auto iw = nt::input_gradient_weight(dy, w);
  EXPECT_FALSE(iw.transposed);
  EXPECT_TRUE(torch::equal(iw.w, w.to(torch::kDouble)));
}

struct Grads {
  at::Tensor y, gx, gw, gb;
};

// y = linear(x, w, b) through the node or at::linear, then backward of sum(y * probe).
Grads run_linear(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& probe, bool node,
                 bool bias_grad = true, bool autocast = false) {
  auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  at::Tensor b = b0.defined() ? b0.clone().requires_grad_(bias_grad) : at::Tensor();
  if (autocast) nt::set_cuda_autocast(true);
  auto y = node ? nt::linear_node(x, w, b) : at::linear(x, w, b);
  if (autocast) nt::set_cuda_autocast(false);
  (y.to(at::kFloat) * probe).sum().backward();
  return {y.detach().to(at::kFloat), x.grad(), w.grad(), b.defined() ? b.grad() : at::Tensor()};
}

TEST(LinearNode, DirectFormIsAtLinearBitForBitTransposedToRounding) {
  torch::manual_seed(2);
  const auto x3 = torch::randn({3, 7, 16}), w = torch::randn({24, 16}) * 0.2, b = torch::randn({24});
  const auto x2 = torch::randn({9, 16});
  for (const auto& x : {x3, x2}) {
    auto osz = x.sizes().vec();
    osz.back() = 24;
    const auto probe = torch::randn(osz);
    for (int bias_case = 0; bias_case < 3; ++bias_case) {  // with, without, detached
      const at::Tensor bias = bias_case == 1 ? at::Tensor() : b;
      const bool bias_grad = bias_case == 0;
      const Grads want = run_linear(x, w, bias, probe, false, bias_grad);
      Grads direct, transposed, staged;
      {
        Forced f(ProductForm::direct);
        direct = run_linear(x, w, bias, probe, true, bias_grad);
      }
      {
        Forced f(ProductForm::transposed);
        transposed = run_linear(x, w, bias, probe, true, bias_grad);
      }
      {
        Forced f(ProductForm::staged);
        staged = run_linear(x, w, bias, probe, true, bias_grad);
      }
      const std::string where = "x " + std::to_string(x.dim()) + "-D, bias case " + std::to_string(bias_case);
      EXPECT_TRUE(equal_or_both_undefined(direct.y, want.y)) << where;
      EXPECT_TRUE(equal_or_both_undefined(direct.gx, want.gx)) << where;
      EXPECT_TRUE(equal_or_both_undefined(direct.gw, want.gw)) << where;
      EXPECT_TRUE(equal_or_both_undefined(direct.gb, want.gb)) << where;
      EXPECT_TRUE(equal_or_both_undefined(transposed.y, want.y)) << where;
      EXPECT_LE(max_rel_diff(transposed.gx, want.gx), 1e-6) << where;
      EXPECT_LE(max_rel_diff(transposed.gw, want.gw), 1e-6) << where;
      EXPECT_TRUE(equal_or_both_undefined(transposed.gb, want.gb)) << where;
      EXPECT_TRUE(equal_or_both_undefined(staged.y, want.y)) << where;
      EXPECT_LE(max_rel_diff(staged.gx, want.gx), 1e-6) << where;
      EXPECT_LE(max_rel_diff(staged.gw, want.gw), 1e-6) << where;
      EXPECT_TRUE(equal_or_both_undefined(staged.gb, want.gb)) << where;
      EXPECT_EQ(direct.gb.defined(), bias_grad) << where;
    }
  }
}

TEST(LinearNode, UnforcedOnTheCpuItIsAtLinear) {
  auto x = torch::randn({4, 8}, torch::requires_grad()), w = torch::randn({6, 8}, torch::requires_grad());
  const auto y = nt::linear_node(x, w, torch::randn({6}));
  ASSERT_TRUE(y.grad_fn());
  EXPECT_EQ(y.grad_fn()->name().find("LinearNode"), std::string::npos) << y.grad_fn()->name();
  nt::force_product_form_for_tests(ProductForm::direct);
  const auto z = nt::linear_node(x, w, torch::randn({6}));
  nt::force_product_form_for_tests(std::nullopt);
  ASSERT_TRUE(z.grad_fn());
  EXPECT_NE(z.grad_fn()->name().find("LinearNode"), std::string::npos) << z.grad_fn()->name();
}

TEST(ProductForms, MlpNodeWithTheTransposedAndStagedFormsGivesThePlainOpsGradients) {
  torch::manual_seed(3);
  const int64_t D = 16, H = 40, O = 12;
  const auto x0 = torch::randn({2, 5, D}), probe = torch::randn({2, 5, O});
  const auto w10 = torch::randn({H, D}) * 0.3, b10 = torch::randn({H}) * 0.5;
  const auto w20 = torch::randn({O, H}) * 0.2, b20 = torch::randn({O});
  auto run = [&](bool node) {
    auto x = x0.clone().requires_grad_(true), w1 = w10.clone().requires_grad_(true);
    auto b1 = b10.clone().requires_grad_(true), w2 = w20.clone().requires_grad_(true);
    auto b2 = b20.clone().requires_grad_(true);
    auto y = node ? nt::gelu_mlp(x, w1, b1, w2, b2, /*recompute_gelu=*/true)
                  : at::linear(at::gelu(at::linear(x, w1, b1), "tanh"), w2, b2);
    (y * probe).sum().backward();
    return std::vector<at::Tensor>{x.grad(), w1.grad(), b1.grad(), w2.grad(), b2.grad()};
  };
  const auto want = run(false);
  for (ProductForm form : {ProductForm::transposed, ProductForm::staged}) {
    Forced f(form);
    const auto got = run(true);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LE(max_rel_diff(got[i], want[i]), 1e-6) << "gradient " << i << ", form " << static_cast<int>(form);
  }
}

// On the GPU in fp32 (LibTorch's default: no TF32 in products): each forced form and the tall
// rule against the CPU, through the node; weights of 160 x 96 and of 37 x 70 (the transpose
// kernel's partial tiles), and one the rule transposes (288 x 1000).
TEST(ProductForms, CudaFormsAsTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(5);
  const auto cuda = [](const at::Tensor& t) { return t.to(torch::kCUDA); };
  for (auto [O, H] : {std::pair<int64_t, int64_t>{160, 96}, {37, 70}, {288, 1000}}) {
    const auto x = torch::randn({4, 64, H}), w = torch::randn({O, H}) * 0.1, b = torch::randn({O});
    const auto probe = torch::randn({4, 64, O});
    const Grads want = run_linear(x, w, b, probe, false);
    for (std::optional<ProductForm> form :
         {std::optional<ProductForm>(ProductForm::direct), std::optional<ProductForm>(ProductForm::transposed),
          std::optional<ProductForm>(ProductForm::staged), std::optional<ProductForm>()}) {
      Forced f(form);
      const Grads got = run_linear(cuda(x), cuda(w), cuda(b), cuda(probe), true);
      const std::string which = (!form                              ? "tall rule"
                                 : *form == ProductForm::direct     ? "direct"
                                 : *form == ProductForm::transposed ? "transposed"
                                                                    : "staged") +
                                std::string(", O ") + std::to_string(O);
      EXPECT_LE(max_rel_diff(got.y.cpu(), want.y), 1e-5) << which;
      EXPECT_LE(max_rel_diff(got.gx.cpu(), want.gx), 1e-5) << which;
      EXPECT_LE(max_rel_diff(got.gw.cpu(), want.gw), 1e-5) << which;
      EXPECT_LE(max_rel_diff(got.gb.cpu(), want.gb), 1e-5) << which;
    }
  }
}

// As DiT's qkv runs on a GPU: fp32 weights and input, bf16 autocast, the bias detached.
TEST(ProductForms, CudaAutocastNodeAsAtLinear) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(6);
  const auto o = torch::TensorOptions().device(torch::kCUDA);
  const auto x = torch::randn({4, 256, 384}, o), w = torch::randn({1152, 384}, o) * 0.05;
  const auto b = torch::randn({1152}, o), probe = torch::randn({4, 256, 1152}, o);
  for (bool bias_grad : {true, false}) {
    const Grads want = run_linear(x, w, b, probe, false, bias_grad, true);
    const Grads got = run_linear(x, w, b, probe, true, bias_grad, true);
    EXPECT_EQ(got.gx.scalar_type(), at::kFloat);
    EXPECT_EQ(got.gw.scalar_type(), at::kFloat);
    EXPECT_LE(max_rel_diff(got.y, want.y), 1e-6);
    EXPECT_LE(max_rel_diff(got.gx, want.gx), 2e-2);
    EXPECT_LE(max_rel_diff(got.gw, want.gw), 2e-2);
    if (bias_grad) {
      EXPECT_LE(max_rel_diff(got.gb, want.gb), 2e-2);
    }
    EXPECT_EQ(got.gb.defined(), bias_grad);
  }
}

}  // namespace

