// Weight gradients added in place (models/linear_backward.h: WeightGradsInPlace). On the CPU, with
// the scope's any_device and a product form forced (so that the linear node runs here): the
// weight's .grad() keeps its memory and ends as what it held plus autograd's gradient (exactly
// where it held zeros, in the direct form); the node hands autograd no gradient for the weight
// inside the scope and one outside it; a weight without a .grad() tensor gets autograd's as
// before; a whole routed DiT loss, in every recomputation mode (models/recompute.h's
// autograd::grad() included), gives the same gradients in place as through autograd's adds. On a
// GPU (skipped elsewhere): bf16 weights under autocast, both forms (the transpose kernel adding),
// against the adds autograd does.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>

#include "core/rng.h"
#include "forced_product_form.h"
#include "golden_dit.h"
#include "max_rel_diff.h"
#include "models/autocast.h"
#include "models/edm.h"
#include "models/linear_backward.h"
#include "models/linear_node.h"
#include "models/product_forms.h"

namespace {

using nt::ProductForm;
using Forced = nt::test::ForcedProductForm;
using nt::test::max_rel_diff;

struct Linear {
  at::Tensor w, b;
};

// A linear layer's parameters, w's .grad() set to `grad0` (undefined: none).
Linear make_linear(const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& grad0) {
  Linear l{w0.clone().requires_grad_(true), b0.clone().requires_grad_(true)};
  if (grad0.defined()) l.w.mutable_grad() = grad0.clone();
  return l;
}

// backward of sum(linear_node(x, w, b) * probe) (`autocast`: under CUDA autocast); returns w.grad().
at::Tensor backward_of(const Linear& l, const at::Tensor& x, const at::Tensor& probe, bool autocast = false) {
  if (autocast) nt::set_cuda_autocast(true);
  auto y = nt::linear_node(x, l.w, l.b);
  if (autocast) nt::set_cuda_autocast(false);
  (y.to(at::kFloat) * probe).sum().backward();
  return l.w.grad();
}

TEST(WeightGradsInPlace, AddedIntoTheGradKeepingItsMemory) {
  torch::manual_seed(1);
  const auto x = torch::randn({3, 7, 16}), w0 = torch::randn({24, 16}) * 0.2, b0 = torch::randn({24});
  const auto probe = torch::randn({3, 7, 24}), held = torch::randn({24, 16});
  for (ProductForm form : {ProductForm::direct, ProductForm::transposed, ProductForm::staged}) {
    Forced f(form);
    const std::string which = form == ProductForm::direct       ? "direct"
                              : form == ProductForm::transposed ? "transposed"
                                                                : "staged";
    const Linear ref = make_linear(w0, b0, at::Tensor());
    const at::Tensor want = backward_of(ref, x, probe);  // autograd's own
    for (bool zeros : {true, false}) {
      const Linear l = make_linear(w0, b0, zeros ? torch::zeros_like(w0) : held);
      const void* memory = l.w.grad().data_ptr();
      at::Tensor got;
      {
        nt::WeightGradsInPlace in_place(true, /*any_device=*/true);
        got = backward_of(l, x, probe);
      }
      EXPECT_EQ(got.data_ptr(), memory) << which;
      if (zeros && form == ProductForm::direct)
        EXPECT_TRUE(torch::equal(got, want)) << which;
      else
        EXPECT_LE(max_rel_diff(got, (zeros ? torch::zeros_like(w0) : held) + want), 1e-6) << which;
      EXPECT_TRUE(torch::equal(l.b.grad(), ref.b.grad())) << which;  // the bias through autograd, as before
    }
  }
}

TEST(WeightGradsInPlace, AutogradGetsNoGradientForTheWeightInsideTheScope) {
  Forced f(ProductForm::direct);
  const auto x = torch::randn({5, 8}), dy = torch::randn({5, 6});
  const Linear l = make_linear(torch::randn({6, 8}), torch::randn({6}), torch::zeros({6, 8}));
  for (bool on : {true, false}) {
    auto xr = x.clone().requires_grad_(true);
    const auto y = nt::linear_node(xr, l.w, l.b);
    ASSERT_NE(y.grad_fn()->name().find("LinearNode"), std::string::npos) << y.grad_fn()->name();
    nt::WeightGradsInPlace in_place(on, /*any_device=*/true);
    const auto out = (*y.grad_fn())({dy});  // x, weight, bias, the bias flag
    ASSERT_GE(out.size(), 3u);
    EXPECT_TRUE(out[0].defined()) << on;
    EXPECT_EQ(out[1].defined(), !on);
    EXPECT_TRUE(out[2].defined()) << on;
  }
  // Inside the scope the product added dy^T x; the call outside left .grad() as it was.
  EXPECT_LE(max_rel_diff(l.w.grad(), dy.t().mm(x)), 1e-6);
}

TEST(WeightGradsInPlace, AWeightWithoutAGradTensorGetsAutogradsGradient) {
  Forced f(ProductForm::direct);
  torch::manual_seed(2);
  const auto x = torch::randn({4, 9}), w0 = torch::randn({5, 9}), b0 = torch::randn({5}), probe = torch::randn({4, 5});
  const at::Tensor want = backward_of(make_linear(w0, b0, at::Tensor()), x, probe);
  const Linear l = make_linear(w0, b0, at::Tensor());
  nt::WeightGradsInPlace in_place(true, /*any_device=*/true);
  const at::Tensor got = backward_of(l, x, probe);
  ASSERT_TRUE(got.defined());
  EXPECT_TRUE(torch::equal(got, want));
}

// Every parameter's gradient after backward of a routed DiT's EDM loss, the gradients starting
// as zero tensors of their own (as ShardedParams binds them).
std::map<std::string, at::Tensor> dit_grads(nt::DiT& net, nt::Recompute mode, bool fused_mlp, bool in_place) {
  for (auto& p : net->parameters()) p.mutable_grad() = torch::zeros_like(p);
  torch::manual_seed(4);
  const auto x = torch::randn({3, 4, 8, 8});
  const auto y = torch::tensor({1, 7, 3}, torch::kLong);
  auto gen = nt::make_generator(c10::Device(c10::kCPU), 9);
  nt::ForwardOptions opt;
  opt.block.recompute = mode;
  opt.block.fused_mlp = fused_mlp;
  auto loss = nt::edm_loss(net, x, y, nt::EDMLossParams{}, 0.1, gen, {}, opt).mean();
  {
    nt::WeightGradsInPlace scope(in_place, /*any_device=*/true);
    loss.backward();
  }
  std::map<std::string, at::Tensor> g;
  for (const auto& p : net->named_parameters()) g[p.key()] = p.value().grad().clone();
  return g;
}

TEST(WeightGradsInPlace, RoutedDiTLossSameGradientsInEveryRecomputeMode) {
  nt::DiT net(nt::test::golden_dit_config());
  nt::test::perturb(*net);
  net->train();
  for (ProductForm form : {ProductForm::direct, ProductForm::transposed, ProductForm::staged}) {
    Forced f(form);
    for (nt::Recompute mode : {nt::Recompute::none, nt::Recompute::norm_mlp, nt::Recompute::blocks})
      for (bool fused_mlp : {false, true}) {
        const auto want = dit_grads(net, mode, fused_mlp, false);
        const auto got = dit_grads(net, mode, fused_mlp, true);
        ASSERT_EQ(got.size(), want.size());
        int nonzero = 0;
        for (const auto& [name, grad] : want) {
          nonzero += grad.abs().sum().item<double>() > 0;
          EXPECT_LE(max_rel_diff(got.at(name), grad), 1e-6)
              << name << ", form " << static_cast<int>(form) << ", mode " << static_cast<int>(mode)
              << ", fused_mlp " << fused_mlp;
        }
        EXPECT_GT(nonzero, 40);
      }
  }
}

// On a GPU: bf16 parameters and gradients as the bf16 runs bind them, under bf16 autocast; the
// three forms and the tall rule (288 x 1000 is transposed: the transpose kernel adds), against .grad()
// plus the gradient autograd hands on.
TEST(WeightGradsInPlace, CudaBf16AsAutogradsAdd) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(5);
  const auto bf16 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  for (auto [O, H] : {std::pair<int64_t, int64_t>{160, 96}, {37, 70}, {288, 1000}}) {
    const auto x = torch::randn({4, 64, H}, bf16), w0 = torch::randn({O, H}, bf16) * 0.1;
    const auto b0 = torch::randn({O}, bf16), probe = torch::randn({4, 64, O}, bf16.dtype(torch::kFloat));
    const auto held = torch::randn({O, H}, bf16);
    for (std::optional<ProductForm> form :
         {std::optional<ProductForm>(ProductForm::direct), std::optional<ProductForm>(ProductForm::transposed),
          std::optional<ProductForm>(ProductForm::staged), std::optional<ProductForm>()}) {
      Forced f(form);
      const std::string which = (!form                              ? "tall rule"
                                 : *form == ProductForm::direct     ? "direct"
                                 : *form == ProductForm::transposed ? "transposed"
                                                                    : "staged") +
                                std::string(", O ") + std::to_string(O);
      const at::Tensor want = backward_of(make_linear(w0, b0, held), x, probe, true);  // held + autograd's, added
      const Linear l = make_linear(w0, b0, held);
      const void* memory = l.w.grad().data_ptr();
      at::Tensor got;
      {
        nt::WeightGradsInPlace in_place(true);
        got = backward_of(l, x, probe, true);
      }
      EXPECT_EQ(got.data_ptr(), memory) << which;
      EXPECT_EQ(got.scalar_type(), at::kBFloat16) << which;
      EXPECT_LE(max_rel_diff(got.to(at::kFloat).cpu(), want.to(at::kFloat).cpu()), 1e-2) << which;
    }
  }
}

}  // namespace
