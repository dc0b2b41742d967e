// The fused CUDA ops (models/fused_kernels.h) and LayerNorm + modulate (models/modulated_norm.h).
// On the CPU: a fused request falls back to the composite bit for bit,
// and the fused ops refuse CPU tensors with a clear message. On a GPU (skipped without one): each
// fused op against LibTorch's ops as the reference — values and every gradient, fp32 and bf16
// (under autocast), row widths below, at and above the 128-thread block, strided adaLN chunks;
// rows wider than the kernels support take the composite; the residual and the next norm in one
// node against the two ops; the norm that hands its input on against the input used twice; the
// bias gradient of the product before a residual, taken by the residual's kernel, against the
// product's own; q, k, v split from the qkv product with its bias gradient, against unbind; the
// attention read in place from the qkv product (fused_attention) against LibTorch's
// scaled_dot_product_attention, run twice for the same bits.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <string>

#include "models/autocast.h"
#include "models/fused_kernels.h"
#include "models/modulated_norm.h"

namespace {

struct Result {
  at::Tensor y, gx, gshift, gscale;
};

// Runs modulated_norm on fresh leaves made from x0 and mod0 [N, 2D] (shift, scale = its two
// chunks, as the adaLN output is chunked), back-propagating sum(y * probe).
Result run(const at::Tensor& x0, const at::Tensor& mod0, const at::Tensor& probe, bool fused, bool autocast) {
  auto x = x0.clone().requires_grad_(true);
  auto mod = mod0.clone().requires_grad_(true);
  if (autocast) nt::set_cuda_autocast(true);
  auto chunks = (autocast ? mod.to(at::kBFloat16) : mod).chunk(2, 1);  // [N, D] each, row stride 2D
  auto y = nt::modulated_norm(x, chunks[0], chunks[1], fused);
  if (autocast) nt::set_cuda_autocast(false);
  (y.to(at::kFloat) * probe).sum().backward();
  const int64_t D = x0.size(2);
  return {y.detach().to(at::kFloat), x.grad(), mod.grad().narrow(1, 0, D), mod.grad().narrow(1, D, D)};
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

TEST(ModulatedNorm, CpuFallsBackToTheCompositeBitForBit) {
  torch::manual_seed(1);
  auto x = torch::randn({2, 5, 12}), mod = torch::randn({2, 24}) * 0.3, probe = torch::randn({2, 5, 12});
  const Result plain = run(x, mod, probe, false, false), fused = run(x, mod, probe, true, false);
  EXPECT_TRUE(torch::equal(fused.y, plain.y));
  EXPECT_TRUE(torch::equal(fused.gx, plain.gx));
  EXPECT_TRUE(torch::equal(fused.gshift, plain.gshift));
  EXPECT_TRUE(torch::equal(fused.gscale, plain.gscale));
}

TEST(FusedKernels, RefuseWhatTheyDoNotSupport) {
  auto x = torch::randn({2, 5, 12}), s = torch::randn({2, 12});
  EXPECT_FALSE(nt::fused_modulated_norm_supports(x, s, s));
  EXPECT_FALSE(nt::fused_gated_residual_supports(x, s, x));
  try {
    nt::fused_modulated_norm(x, s, s, 1e-6, false);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fused_modulated_norm: needs"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("CUDA tensors: fp32 x [N, T, D]"), std::string::npos) << e.what();
  }
  try {
    nt::fused_gated_residual(x, s, x);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fused_gated_residual: needs"), std::string::npos) << e.what();
  }
  try {
    nt::fused_modulated_norm_passing(x, s, s, 1e-6, false);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fused_modulated_norm_passing: needs"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(nt::fused_residual_norm_supports(x, s, x, s, s));
  try {
    nt::fused_residual_norm(x, s, x, s, s, 1e-6, false);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fused_residual_norm: needs"), std::string::npos) << e.what();
  }
  const auto qkv_out = torch::randn({2, 5, 36});
  EXPECT_FALSE(nt::fused_qkv_split_supports(qkv_out, 3));
  try {
    nt::fused_qkv_split(qkv_out, {}, 3);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fused_qkv_split: needs"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(nt::fused_attention_supports(qkv_out.to(at::kBFloat16), 3));
  // The shapes its kernels take (the trainer warns for others): T <= 16384, instantiated widths.
  EXPECT_EQ(nt::fused_attention_supports_shape(256, 72), nt::fused_kernels_built());
  EXPECT_EQ(nt::fused_attention_supports_shape(1024, 72), nt::fused_kernels_built());
  EXPECT_EQ(nt::fused_attention_supports_shape(16384, 128), nt::fused_kernels_built());
  EXPECT_EQ(nt::fused_attention_supports_shape(1, 16), nt::fused_kernels_built());
  EXPECT_FALSE(nt::fused_attention_supports_shape(16385, 72));
  EXPECT_FALSE(nt::fused_attention_supports_shape(256, 40));
  EXPECT_FALSE(nt::fused_attention_supports_shape(0, 64));
  try {
    nt::fused_attention(qkv_out.to(at::kBFloat16), {}, 3);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("fused_attention: needs"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(nt::fused_attention_limits()), std::string::npos) << e.what();
  }
  if (nt::fused_kernels_built())  // the widths the launcher dispatches, in words (docs/config.md lists them)
    EXPECT_EQ(nt::fused_attention_limits(), "at most 16384 tokens, head widths 16, 24, 32, 64, 72 or 128");
}

class FusedCuda : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    if (!nt::fused_kernels_built()) GTEST_SKIP() << "built without nvcc";
  }
};

TEST_P(FusedCuda, ModulatedNormMatchesLibTorchOps) {
  const int64_t D = GetParam();
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D));
  const int64_t N = 3, T = 37;
  // A residual stream with an offset and spread per token, as after some blocks.
  auto x = (at::randn({N, T, D}, gen) * 2 + at::randn({N, T, 1}, gen)).to(cuda.device());
  auto mod = (at::randn({N, 2 * D}, gen) * 0.5).to(cuda.device());
  auto probe = at::randn({N, T, D}, gen).to(cuda.device());
  ASSERT_TRUE(nt::fused_modulated_norm_supports(x, mod.chunk(2, 1)[0], mod.chunk(2, 1)[1]));
  for (bool autocast : {false, true}) {
    const Result ref = run(x, mod, probe, false, autocast), got = run(x, mod, probe, true, autocast);
    const double ey = rel(got.y, ref.y), ex = rel(got.gx, ref.gx), esh = rel(got.gshift, ref.gshift),
                 esc = rel(got.gscale, ref.gscale);
    std::cout << "[ fused    ] D " << D << (autocast ? " bf16" : " fp32") << ": y " << ey << ", grad x " << ex
              << ", grad shift " << esh << ", grad scale " << esc << " (max relative differences)\n";
    // fp32: other summation orders only. bf16: outputs and gradients rounded to bf16 (2^-8).
    const double tol = autocast ? 1e-2 : 1e-5;
    EXPECT_LE(ey, tol);
    EXPECT_LE(ex, autocast ? 2e-2 : 1e-4);
    EXPECT_LE(esh, tol);
    EXPECT_LE(esc, autocast ? 2e-2 : 1e-4);
    EXPECT_EQ(got.y.sizes(), ref.y.sizes());
  }
}

TEST_P(FusedCuda, GatedResidualMatchesLibTorchOps) {
  const int64_t D = GetParam();
  const auto dev = torch::Device(torch::kCUDA);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 7);
  const int64_t N = 3, T = 37;
  const auto x0 = at::randn({N, T, D}, gen).to(dev), mod0 = at::randn({N, 3 * D}, gen).to(dev),
             b0 = at::randn({N, T, D}, gen).to(dev), probe = at::randn({N, T, D}, gen).to(dev);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto run_one = [&](bool fused) {
      // Fresh leaves each run: for fp32, .to(dtype) would hand back mod0 and b0 themselves, which
      // would then require grad and share their .grad between the two runs.
      auto x = x0.clone().requires_grad_(true), mod = mod0.to(dtype).clone().requires_grad_(true),
           branch = b0.to(dtype).clone().requires_grad_(true);
      auto gate = mod.chunk(3, 1)[1];  // [N, D], row stride 3D
      auto out = fused ? nt::fused_gated_residual(x, gate, branch) : at::addcmul(x, gate.unsqueeze(1), branch);
      (out * probe).sum().backward();
      return std::vector<at::Tensor>{out.detach(), x.grad(), mod.grad().to(at::kFloat).clone(),
                                     branch.grad().to(at::kFloat).clone()};
    };
    const auto ref = run_one(false), got = run_one(true);
    const char* what[] = {"out", "grad x", "grad gate", "grad branch"};
    for (size_t i = 0; i < ref.size(); ++i) {
      const double e = rel(got[i], ref[i]);
      std::cout << "[ fused    ] gated residual D " << D << " " << c10::toString(dtype) << " " << what[i] << ": " << e
                << "\n";
      EXPECT_LE(e, dtype == at::kFloat ? 1e-5 : 1e-2) << what[i];
    }
    EXPECT_EQ(got[0].scalar_type(), at::kFloat);
  }
}

// The residual and the next norm in one node: h and n, and the gradients of x (h's own plus the
// norm's), of branch and of the adaLN chunks (gate, shift, scale), against the two ops.
TEST_P(FusedCuda, ResidualNormMatchesLibTorchOps) {
  const int64_t D = GetParam();
  const auto dev = torch::Device(torch::kCUDA);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 11);
  const int64_t N = 3, T = 37;
  const auto x0 = (at::randn({N, T, D}, gen) * 2 + at::randn({N, T, 1}, gen)).to(dev);
  const auto mod0 = (at::randn({N, 3 * D}, gen) * 0.5).to(dev), b0 = at::randn({N, T, D}, gen).to(dev);
  const auto ph = at::randn({N, T, D}, gen).to(dev), pn = at::randn({N, T, D}, gen).to(dev);
  for (bool autocast : {false, true}) {
    auto run_one = [&](bool fused) {
      auto x = x0.clone().requires_grad_(true), mod = mod0.clone().requires_grad_(true);
      auto branch = (autocast ? b0.to(at::kBFloat16) : b0.clone()).requires_grad_(true);
      if (autocast) nt::set_cuda_autocast(true);
      auto c = (autocast ? mod.to(at::kBFloat16) : mod).chunk(3, 1);  // gate, shift, scale [N, D]
      at::Tensor h, n;
      if (fused) {
        EXPECT_TRUE(nt::fused_residual_norm_supports(x, c[0], branch, c[1], c[2]));
        auto hn = nt::fused_residual_norm(x, c[0], branch, c[1], c[2], 1e-6, autocast);
        h = hn[0], n = hn[1];
      } else {
        h = at::addcmul(x, c[0].unsqueeze(1), branch);
        n = nt::modulated_norm(h, c[1], c[2], false);
      }
      if (autocast) nt::set_cuda_autocast(false);
      ((h * ph).sum() + (n.to(at::kFloat) * pn).sum()).backward();
      return std::vector<at::Tensor>{h.detach(), n.detach().to(at::kFloat), x.grad(), mod.grad(),
                                     branch.grad().to(at::kFloat)};
    };
    const auto ref = run_one(false), got = run_one(true);
    const char* what[] = {"h", "n", "grad x", "grad gate/shift/scale", "grad branch"};
    for (size_t i = 0; i < ref.size(); ++i) {
      const double e = rel(got[i], ref[i]);
      std::cout << "[ fused    ] residual norm D " << D << (autocast ? " bf16 " : " fp32 ") << what[i] << ": " << e
                << "\n";
      EXPECT_LE(e, autocast ? 2e-2 : 1e-4) << what[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, FusedCuda, ::testing::Values(36, 128, 200, 1152));

// The norm that hands x on, {y, x'}: x' is x's memory, and x's gradient is the norm's plus what
// reaches x', as with x used twice in LibTorch's ops; with y unused, x's gradient is x''s alone.
TEST_P(FusedCuda, NormPassingXMatchesLibTorchOps) {
  const int64_t D = GetParam(), N = 3, T = 37;
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 7);
  const auto x0 = (at::randn({N, T, D}, gen) * 2 + at::randn({N, T, 1}, gen)).to(cuda.device());
  const auto mod0 = (at::randn({N, 2 * D}, gen) * 0.5).to(cuda.device());
  const auto probe = at::randn({N, T, D}, gen).to(cuda.device()), probe2 = at::randn({N, T, D}, gen).to(cuda.device());
  for (bool autocast : {false, true}) {
    at::Tensor grads[2][2];  // [reference, fused][x, mod]
    for (int fused = 0; fused < 2; ++fused) {
      auto x = x0.clone().requires_grad_(true), mod = mod0.clone().requires_grad_(true);
      if (autocast) nt::set_cuda_autocast(true);
      auto chunks = (autocast ? mod.to(at::kBFloat16) : mod).chunk(2, 1);
      at::Tensor y, x_on = x;
      if (fused) {
        auto yx = nt::fused_modulated_norm_passing(x, chunks[0], chunks[1], nt::kModulatedNormEps, autocast);
        y = yx[0];
        x_on = yx[1];
        EXPECT_EQ(x_on.data_ptr(), x.data_ptr());
        EXPECT_TRUE(x_on.grad_fn() != nullptr);
      } else {
        y = nt::modulated_norm(x, chunks[0], chunks[1], false);
      }
      if (autocast) nt::set_cuda_autocast(false);
      ((y.to(at::kFloat) * probe).sum() + (x_on * probe2).sum()).backward();
      grads[fused][0] = x.grad();
      grads[fused][1] = mod.grad();
    }
    const double ex = rel(grads[1][0], grads[0][0]), em = rel(grads[1][1], grads[0][1]);
    std::cout << "[ fused    ] norm passing x, D " << D << (autocast ? " bf16" : " fp32") << ": grad x " << ex
              << ", grad shift and scale " << em << "\n";
    EXPECT_LE(ex, autocast ? 2e-2 : 1e-4);
    EXPECT_LE(em, autocast ? 2e-2 : 1e-4);
  }
  auto x = x0.clone().requires_grad_(true);
  auto chunks = mod0.chunk(2, 1);
  auto yx = nt::fused_modulated_norm_passing(x, chunks[0], chunks[1], nt::kModulatedNormEps, false);
  (yx[1] * probe2).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), probe2));
}

// The branch's bias gradient from the residual's kernel (the product took the bias detached)
// against the product's own (at::linear with the bias), for the gated residual and for the
// residual + norm node: the bias, weight and input gradients, fp32 and bf16 (under autocast).
TEST_P(FusedCuda, BranchBiasGradientAsTheProductsOwn) {
  const int64_t D = GetParam(), N = 3, T = 37, K = 24;
  const auto dev = torch::Device(torch::kCUDA);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 13);
  const auto x0 = at::randn({N, T, D}, gen).to(dev), mod0 = (at::randn({N, 3 * D}, gen) * 0.5).to(dev);
  const auto a0 = at::randn({N, T, K}, gen).to(dev), w0 = (at::randn({D, K}, gen) * 0.2).to(dev),
             bias0 = at::randn({D}, gen).to(dev);
  const auto ph = at::randn({N, T, D}, gen).to(dev), pn = at::randn({N, T, D}, gen).to(dev);
  for (const bool with_norm : {false, true})
    for (const bool autocast : {false, true}) {
      auto run_one = [&](bool from_residual) {
        auto x = x0.clone().requires_grad_(true), mod = mod0.clone().requires_grad_(true);
        auto a = a0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true),
             bias = bias0.clone().requires_grad_(true);
        if (autocast) nt::set_cuda_autocast(true);
        auto c = (autocast ? mod.to(at::kBFloat16) : mod).chunk(3, 1);  // gate, shift, scale [N, D]
        const auto branch = at::linear(a, w, from_residual ? bias.detach() : bias);
        const at::Tensor b = from_residual ? bias : at::Tensor();
        at::Tensor loss;
        if (with_norm) {
          auto hn = nt::fused_residual_norm(x, c[0], branch, c[1], c[2], 1e-6, autocast, b);
          loss = (hn[0] * ph).sum() + (hn[1].to(at::kFloat) * pn).sum();
        } else {
          loss = (nt::fused_gated_residual(x, c[0], branch, b) * ph).sum();
        }
        if (autocast) nt::set_cuda_autocast(false);
        loss.backward();
        return std::vector<at::Tensor>{bias.grad(), w.grad(), a.grad(), x.grad(), mod.grad()};
      };
      const auto ref = run_one(false), got = run_one(true);
      const char* what[] = {"grad bias", "grad weight", "grad input", "grad x", "grad gate/shift/scale"};
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_TRUE(got[i].defined()) << what[i];
        const double e = rel(got[i], ref[i]);
        std::cout << "[ fused    ] branch bias, " << (with_norm ? "residual norm" : "gated residual") << " D " << D
                  << (autocast ? " bf16 " : " fp32 ") << what[i] << ": " << e << "\n";
        // bf16: the bias gradient is a bf16 sum in both (one rounding apart at most).
        EXPECT_LE(e, autocast ? 2e-2 : 1e-5) << what[i];
      }
      EXPECT_EQ(got[0].scalar_type(), at::kFloat);
    }
}

// q, k, v split from qkv's output by the fused op (the product's bias detached, its gradient
// from the split) against the output's own unbind (the bias through the product), through
// LibTorch's attention (on LibTorch 2: scaled_dot_product_attention, whose kernels hand back the
// gradients in layouts of their own), fp32 and under autocast.
TEST_P(FusedCuda, QkvSplitThroughAttentionAsUnbind) {
  const int64_t D = GetParam(), N = 3, T = 37, K = 24;
  const int64_t H = D == 36 ? 3 : D == 200 ? 5 : D == 128 ? 4 : 16, hd = D / H;
  const auto dev = torch::Device(torch::kCUDA);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 17);
  const auto a0 = at::randn({N, T, K}, gen).to(dev), w0 = (at::randn({3 * D, K}, gen) * 0.2).to(dev),
             bias0 = at::randn({3 * D}, gen).to(dev), po = at::randn({N, H, T, hd}, gen).to(dev);
  for (const bool autocast : {false, true}) {
    auto run_one = [&](bool fused) {
      auto a = a0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true),
           bias = bias0.clone().requires_grad_(true);
      if (autocast) nt::set_cuda_autocast(true);
      const auto out = at::linear(a, w, fused ? bias.detach() : bias);  // [N, T, 3D]
      std::vector<at::Tensor> qkv;
      if (fused) {
        EXPECT_TRUE(nt::fused_qkv_split_supports(out, H));
        qkv = nt::fused_qkv_split(out, bias, H);
      } else {
        for (const auto& part : out.view({N, T, 3, H, hd}).unbind(2)) qkv.push_back(part.transpose(1, 2));
      }
#if TORCH_VERSION_MAJOR >= 2
      const auto o = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
#else
      const auto o = at::matmul(at::softmax(at::matmul(qkv[0], qkv[1].transpose(-2, -1)), -1), qkv[2]);
#endif
      if (autocast) nt::set_cuda_autocast(false);
      (o.to(at::kFloat) * po).sum().backward();
      return std::vector<at::Tensor>{o.detach().to(at::kFloat), bias.grad(), w.grad(), a.grad()};
    };
    const auto ref = run_one(false), got = run_one(true);
    const char* what[] = {"attention output", "grad bias", "grad weight", "grad input"};
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_TRUE(got[i].defined()) << what[i];
      const double e = rel(got[i], ref[i]);
      std::cout << "[ fused    ] qkv split D " << D << (autocast ? " bf16 " : " fp32 ") << what[i] << ": " << e << "\n";
      // The attention's backward may add in no fixed order; bf16: the bias gradient is a bf16 sum in both.
      EXPECT_LE(e, autocast ? 2e-2 : 1e-5) << what[i];
    }
    EXPECT_EQ(got[1].scalar_type(), at::kFloat);
  }
}

// fused_attention against LibTorch's attention on the unbind of the same bf16 qkv output (under
// autocast, as the trainer runs it: cuDNN's or flash's kernel on LibTorch 2.x): the output and the
// gradients of the qkv product's input, weight and bias, whose gradient the attention forms. Shapes:
// DiT-XL/2's heads and tokens (hd 72, T 256: a k8 step, two blocks of queries), TREAD-XL/2's routed
// blocks (T 128), B/2's head width (64), a small odd one (hd 24, T 37), and DiT-XL/2 at 512 x 512
// pixels (T 1024: keys and values streamed through shared memory). Its backward has no atomics:
// a second run gives the same bits. Unsupported shapes (T above 16384, a width not instantiated)
// are refused by fused_attention_supports.
TEST(FusedCudaAttention, MatchesLibTorchsAttention) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!nt::fused_kernels_built()) GTEST_SKIP() << "built without nvcc";
  struct Shape {
    int64_t N, T, H, hd;
  };
  const auto dev = torch::Device(torch::kCUDA);
  for (const Shape sh : {Shape{4, 256, 16, 72}, Shape{4, 128, 16, 72}, Shape{3, 200, 6, 64}, Shape{3, 37, 2, 24},
                         Shape{2, 1024, 4, 72}}) {
    const int64_t N = sh.N, T = sh.T, H = sh.H, hd = sh.hd, D = H * hd, K = 48;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(T * 1000 + hd));
    const auto a0 = at::randn({N, T, K}, gen).to(dev), w0 = (at::randn({3 * D, K}, gen) * 0.3).to(dev),
               bias0 = at::randn({3 * D}, gen).to(dev), po = at::randn({N, T, D}, gen).to(dev);
    auto run_one = [&](bool fused) {
      auto a = a0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true),
           bias = bias0.clone().requires_grad_(true);
      nt::set_cuda_autocast(true);
      const auto out = at::linear(a, w, fused ? bias.detach() : bias);  // [N, T, 3D] bf16
      at::Tensor o;                                                      // [N, T, D]
      if (fused) {
        EXPECT_TRUE(nt::fused_attention_supports(out, H));
        o = nt::fused_attention(out, bias, H);
      } else {
        auto parts = out.view({N, T, 3, H, hd}).unbind(2);
#if TORCH_VERSION_MAJOR >= 2
        o = at::scaled_dot_product_attention(parts[0].transpose(1, 2), parts[1].transpose(1, 2),
                                             parts[2].transpose(1, 2));
#else
        const auto s = at::matmul(parts[0].transpose(1, 2), parts[1].permute({0, 2, 3, 1})) / std::sqrt(double(hd));
        o = at::matmul(at::softmax(s.to(at::kFloat), -1).to(at::kBFloat16), parts[2].transpose(1, 2));
#endif
        o = o.transpose(1, 2).reshape({N, T, D});
      }
      nt::set_cuda_autocast(false);
      (o.to(at::kFloat) * po).sum().backward();
      return std::vector<at::Tensor>{o.detach().to(at::kFloat), bias.grad(), w.grad(), a.grad()};
    };
    const auto ref = run_one(false), got = run_one(true), again = run_one(true);
    const char* what[] = {"output", "grad bias", "grad weight", "grad input"};
    const std::string shape = "N " + std::to_string(N) + " T " + std::to_string(T) + " H " + std::to_string(H) +
                              " hd " + std::to_string(hd);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_TRUE(got[i].defined()) << shape << ": " << what[i];
      const double e = rel(got[i], ref[i]);
      std::cout << "[ fused    ] attention " << shape << " " << what[i] << ": " << e << "\n";
      EXPECT_LE(e, 2e-2) << shape << ": " << what[i];
      EXPECT_TRUE(torch::equal(got[i], again[i])) << shape << ": " << what[i] << " differs between two runs";
    }
  }
  const auto opts = torch::TensorOptions().device(dev).dtype(at::kBFloat16);
  EXPECT_FALSE(nt::fused_attention_supports(torch::zeros({1, 16385, 3 * 72}, opts), 1));  // T above 16384
  EXPECT_FALSE(nt::fused_attention_supports(torch::zeros({2, 16, 3 * 40}, opts), 1));   // width 40
  EXPECT_FALSE(nt::fused_attention_supports(torch::zeros({2, 16, 3 * 72}, opts.dtype(at::kHalf)), 1));  // fp16
  EXPECT_TRUE(nt::fused_attention_supports(torch::zeros({2, 16, 3 * 72}, opts.dtype(at::kFloat)), 1));  // fp32
}

// Rows wider than the norm's backward keeps in registers (2048) take LibTorch's ops.
TEST(FusedCudaLimits, WideRowsFallBackToTheComposite) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!nt::fused_kernels_built()) GTEST_SKIP() << "built without nvcc";
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  auto x = torch::randn({2, 3, 2049}, cuda), mod = torch::randn({2, 2 * 2049}, cuda) * 0.3;
  auto probe = torch::randn({2, 3, 2049}, cuda);
  auto chunks = mod.chunk(2, 1);
  EXPECT_FALSE(nt::fused_modulated_norm_supports(x, chunks[0], chunks[1]));
  const Result ref = run(x, mod, probe, false, false), got = run(x, mod, probe, true, false);
  EXPECT_TRUE(torch::equal(got.y, ref.y));
  EXPECT_TRUE(torch::equal(got.gx, ref.gx));
}

}  // namespace
