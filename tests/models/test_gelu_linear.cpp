// GELU + linear keeping the GELU's input only (models/gelu_linear.h): on the CPU the values and
// every gradient equal the plain ops' bit for bit (3-D and 2-D inputs, with and without a
// gradient for the input), and the GELU output is really not kept (the heap holds one [M, H]
// tensor less after the forward); with grad mode off nothing is recorded. On a GPU (skipped
// without one) the same under bf16 autocast with fp32 parameters, as DiT's MLP runs there.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <iostream>

#include "equal_or_both_undefined.h"
#include "models/autocast.h"
#include "models/gelu_linear.h"
#include "heap_in_use.h"

namespace {

using nt::test::equal_or_both_undefined;

struct Outcome {
  at::Tensor y, gh, gw, gb;
};

// y = linear(gelu(h), w, b) through gelu_linear or the plain ops, then backward of sum(y * probe).
Outcome run(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& probe, bool fused,
        bool h_grad, bool autocast = false) {
  auto h = h0.clone().requires_grad_(h_grad);
  auto w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
  if (autocast) nt::set_cuda_autocast(true);
  // Under autocast h comes from fc1 in bf16.
  const at::Tensor hin = autocast ? h.to(at::kBFloat16) : h;
  at::Tensor y = fused ? nt::gelu_linear(hin, w, b) : at::linear(at::gelu(hin, "tanh"), w, b);
  if (autocast) nt::set_cuda_autocast(false);
  (y.to(at::kFloat) * probe).sum().backward();
  return {y.detach().to(at::kFloat), h.grad(), w.grad(), b.grad()};
}

TEST(GeluLinear, SameValuesAndGradientsAsThePlainOpsBitForBit) {
  torch::manual_seed(1);
  for (auto shape : {std::vector<int64_t>{3, 7, 24}, std::vector<int64_t>{10, 24}}) {
    auto h = torch::randn(shape), w = torch::randn({9, 24}) * 0.2, b = torch::randn({9});
    auto out_shape = shape;
    out_shape.back() = 9;
    auto probe = torch::randn(out_shape);
    for (bool h_grad : {true, false}) {
      const Outcome plain = run(h, w, b, probe, false, h_grad), fused = run(h, w, b, probe, true, h_grad);
      EXPECT_TRUE(torch::equal(fused.y, plain.y));
      EXPECT_TRUE(equal_or_both_undefined(fused.gh, plain.gh)) << "h_grad " << h_grad;
      EXPECT_EQ(fused.gh.defined(), h_grad);
      EXPECT_TRUE(torch::equal(fused.gw, plain.gw));
      EXPECT_TRUE(torch::equal(fused.gb, plain.gb));
    }
  }
}

TEST(GeluLinear, KeepsTheGeluInputNotItsOutput) {
  torch::manual_seed(2);
  const int64_t M = 512, H = 2048;  // the GELU output: 4 MiB
  auto x = torch::randn({M, 16}), w1 = torch::randn({H, 16}, torch::requires_grad());
  auto w2 = torch::randn({16, H}, torch::requires_grad()), b2 = torch::zeros({16}, torch::requires_grad());
  auto kept_by_forward = [&](bool fused) {
    return nt::test::heap_kept_by_forward([&] {
      const at::Tensor h = at::linear(x, w1);  // [M, H], kept by GELU (plain) or by gelu_linear
      return fused ? nt::gelu_linear(h, w2, b2) : at::linear(at::gelu(h, "tanh"), w2, b2);
    });
  };
  const double gelu_out = M * H * 4.0;
  kept_by_forward(true);  // warm up the allocator's own bookkeeping
  const double plain = kept_by_forward(false), fused = kept_by_forward(true);
  std::cout << "[ memory   ] kept by the forward: plain " << plain / 1e6 << " MB, gelu_linear " << fused / 1e6
            << " MB\n";
  EXPECT_GE(plain - fused, 0.9 * gelu_out);
  EXPECT_GE(fused, 0.9 * gelu_out);  // h itself is kept
}

TEST(GeluLinear, WithoutGradModeThePlainOps) {
  torch::manual_seed(3);
  auto h = torch::randn({4, 8}, torch::requires_grad()), w = torch::randn({3, 8}, torch::requires_grad());
  auto b = torch::randn({3}, torch::requires_grad());
  torch::NoGradGuard no_grad;
  auto y = nt::gelu_linear(h, w, b);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(torch::equal(y, at::linear(at::gelu(h, "tanh"), w, b)));
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// As DiT's MLP runs on a GPU: fp32 weights, bf16 autocast, h from fc1 in bf16.
TEST(GeluLinear, CudaAutocastAsThePlainOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(4);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto h = torch::randn({4, 256, 1152}, cuda), w = torch::randn({288, 1152}, cuda) * 0.03;
  auto b = torch::randn({288}, cuda), probe = torch::randn({4, 256, 288}, cuda);
  const Outcome plain = run(h, w, b, probe, false, true, true), fused = run(h, w, b, probe, true, true, true);
  const bool bits = torch::equal(fused.y, plain.y) && torch::equal(fused.gh, plain.gh) &&
                    torch::equal(fused.gw, plain.gw) && torch::equal(fused.gb, plain.gb);
  std::cout << "[ gpu      ] gelu_linear under autocast: relative differences y " << rel(fused.y, plain.y) << ", h "
            << rel(fused.gh, plain.gh) << ", w " << rel(fused.gw, plain.gw) << ", b " << rel(fused.gb, plain.gb)
            << (bits ? " (bit for bit)" : "") << "\n";
  EXPECT_EQ(fused.gw.scalar_type(), at::kFloat);
  EXPECT_EQ(fused.gb.scalar_type(), at::kFloat);
  EXPECT_LE(rel(fused.y, plain.y), 1e-2);
  EXPECT_LE(rel(fused.gh, plain.gh), 1e-2);
  EXPECT_LE(rel(fused.gw, plain.gw), 1e-2);
  EXPECT_LE(rel(fused.gb, plain.gb), 1e-2);
}

}  // namespace
