// LayerNorm + modulate + linear keeping the norm's inputs only (models/modulated_linear.h): on
// the CPU the values and every gradient (x, the adaLN chunks, weight, bias) equal
// linear(modulated_norm(...))'s bit for bit, with and without a gradient for x, and a fused
// request falls back the same way; the normalised tensors are really not kept (the heap holds
// two [N, T, D] tensors less after the forward); with grad mode off nothing is recorded. On a
// GPU (skipped without one) the same under bf16 autocast, composite and fused.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <iostream>

#include "equal_or_both_undefined.h"
#include "heap_in_use.h"
#include "models/autocast.h"
#include "models/fused_kernels.h"
#include "models/modulated_linear.h"
#include "models/modulated_norm.h"

namespace {

using nt::test::equal_or_both_undefined;

struct Outcome {
  at::Tensor y, gx, gmod, gw, gb;
};

// y = linear(modulate(LayerNorm(x), shift, scale), w, b), shift and scale the chunks of one
// [N, 2D] leaf (as the adaLN output is chunked), through modulated_linear (`one_node`) or the
// two ops; then backward of sum(y * probe).
Outcome run(const at::Tensor& x0, const at::Tensor& mod0, const at::Tensor& w0, const at::Tensor& b0,
            const at::Tensor& probe, bool one_node, bool fused, bool x_grad, bool autocast = false) {
  auto x = x0.clone().requires_grad_(x_grad), mod = mod0.clone().requires_grad_(true);
  auto w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
  if (autocast) nt::set_cuda_autocast(true);
  auto chunks = (autocast ? mod.to(at::kBFloat16) : mod).chunk(2, 1);  // [N, D] each
  at::Tensor y = one_node ? nt::modulated_linear(x, chunks[0], chunks[1], w, b, fused)
                          : at::linear(nt::modulated_norm(x, chunks[0], chunks[1], fused), w, b);
  if (autocast) nt::set_cuda_autocast(false);
  (y.to(at::kFloat) * probe).sum().backward();
  return {y.detach().to(at::kFloat), x.grad(), mod.grad(), w.grad(), b.grad()};
}

TEST(ModulatedLinear, SameValuesAndGradientsAsTheTwoOpsBitForBit) {
  torch::manual_seed(1);
  const int64_t N = 3, T = 7, D = 24, O = 10;
  auto x = torch::randn({N, T, D}) * 2 + 1, mod = torch::randn({N, 2 * D}) * 0.3;
  auto w = torch::randn({O, D}) * 0.2, b = torch::randn({O}), probe = torch::randn({N, T, O});
  for (bool x_grad : {true, false})
    for (bool fused : {false, true}) {  // fused falls back to the composite on the CPU
      const Outcome plain = run(x, mod, w, b, probe, false, false, x_grad);
      const Outcome one = run(x, mod, w, b, probe, true, fused, x_grad);
      EXPECT_TRUE(torch::equal(one.y, plain.y));
      EXPECT_TRUE(equal_or_both_undefined(one.gx, plain.gx)) << "x_grad " << x_grad;
      EXPECT_EQ(one.gx.defined(), x_grad);
      EXPECT_TRUE(torch::equal(one.gmod, plain.gmod));
      EXPECT_TRUE(torch::equal(one.gw, plain.gw));
      EXPECT_TRUE(torch::equal(one.gb, plain.gb));
    }
}

TEST(ModulatedLinear, KeepsTheNormsInputsNotItsOutput) {
  torch::manual_seed(2);
  const int64_t N = 8, T = 256, D = 512, O = 16;  // an [N, T, D] tensor: 4 MiB
  auto x = torch::randn({N, T, D}, torch::requires_grad()), mod = torch::randn({N, 2 * D}, torch::requires_grad());
  auto w = torch::randn({O, D}, torch::requires_grad()), b = torch::zeros({O}, torch::requires_grad());
  auto kept_by_forward = [&](bool one_node) {
    return nt::test::heap_kept_by_forward([&] {
      auto chunks = mod.chunk(2, 1);
      return one_node ? nt::modulated_linear(x, chunks[0], chunks[1], w, b)
                      : at::linear(nt::modulated_norm(x, chunks[0], chunks[1]), w, b);
    });
  };
  const double stream = N * T * D * 4.0;
  kept_by_forward(true);  // warm up the allocator's own bookkeeping
  const double plain = kept_by_forward(false), one = kept_by_forward(true);
  std::cout << "[ memory   ] kept by the forward: two ops " << plain / 1e6 << " MB, modulated_linear " << one / 1e6
            << " MB\n";
  // The two ops keep the LayerNorm output (for the scale's gradient) and the modulated one (the
  // product's input); modulated_linear neither.
  EXPECT_GE(plain - one, 1.8 * stream);
  EXPECT_LE(one, 0.2 * stream);
}

TEST(ModulatedLinear, WithoutGradModeTheTwoOps) {
  torch::manual_seed(3);
  auto x = torch::randn({2, 3, 8}, torch::requires_grad()), mod = torch::randn({2, 16});
  auto w = torch::randn({4, 8}, torch::requires_grad()), b = torch::randn({4});
  torch::NoGradGuard no_grad;
  auto chunks = mod.chunk(2, 1);
  auto y = nt::modulated_linear(x, chunks[0], chunks[1], w, b);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(torch::equal(y, at::linear(nt::modulated_norm(x, chunks[0], chunks[1]), w, b)));
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// As DiT's qkv and fc1 products run on a GPU: fp32 stream and weights, bf16 autocast and adaLN.
TEST(ModulatedLinear, CudaAutocastAsTheTwoOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(4);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto x = torch::randn({4, 256, 1152}, cuda), mod = torch::randn({4, 2 * 1152}, cuda) * 0.3;
  auto w = torch::randn({384, 1152}, cuda) * 0.03, b = torch::randn({384}, cuda);
  auto probe = torch::randn({4, 256, 384}, cuda);
  for (bool fused : {false, true}) {
    if (fused && !nt::fused_kernels_built()) continue;
    const Outcome plain = run(x, mod, w, b, probe, false, fused, true, true);
    const Outcome one = run(x, mod, w, b, probe, true, fused, true, true);
    const bool bits = torch::equal(one.y, plain.y) && torch::equal(one.gx, plain.gx) &&
                      torch::equal(one.gmod, plain.gmod) && torch::equal(one.gw, plain.gw) &&
                      torch::equal(one.gb, plain.gb);
    std::cout << "[ gpu      ] modulated_linear" << (fused ? " fused" : "") << " under autocast: relative differences y "
              << rel(one.y, plain.y) << ", x " << rel(one.gx, plain.gx) << ", adaLN " << rel(one.gmod, plain.gmod)
              << ", w " << rel(one.gw, plain.gw) << ", b " << rel(one.gb, plain.gb) << (bits ? " (bit for bit)" : "")
              << "\n";
    EXPECT_EQ(one.gw.scalar_type(), at::kFloat);
    for (auto [got, ref] : {std::pair{one.y, plain.y}, std::pair{one.gx, plain.gx}, std::pair{one.gmod, plain.gmod},
                            std::pair{one.gw, plain.gw}, std::pair{one.gb, plain.gb}})
      EXPECT_LE(rel(got, ref), 1e-2);
  }
}

}  // namespace
