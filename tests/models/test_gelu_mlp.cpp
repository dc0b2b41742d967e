// The MLP as one node (models/gelu_mlp.h): on the CPU its values and every gradient equal the
// plain fc1 -> GELU -> fc2 bit for bit (3-D and 2-D inputs, with and without an input gradient,
// keeping or recomputing the GELU output), recomputing really drops the GELU output, and without
// grad mode nothing is recorded; the same with the LayerNorm + modulate before fc1 taken into
// the node (its output and fc1's input then not kept). The column-major layouts the cuBLASLt
// products use give the row-major products (BLAS's definition, on the CPU), fc2's weight given
// transposed too. On a GPU with cuBLASLt (skipped elsewhere): the two epilogue products against
// fp64 with the tanh-GELU (bf16, and fp32 exact and TF32 where cuBLASLt offers them), the node
// under bf16 autocast against the plain ops under autocast, and the node in fp32 with TF32 on and
// off against fp64.
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <iostream>

#include "equal_or_both_undefined.h"
#include "heap_in_use.h"
#include "models/autocast.h"
#include "models/gelu_gemm_layout.h"
#include "models/gelu_mlp.h"
#include "models/modulated_norm.h"
#ifdef NT_HAVE_CUBLASLT
#include "models/gelu_gemm_cuda.h"
#endif

namespace {

using nt::test::equal_or_both_undefined;

struct Outcome {
  at::Tensor y, gx, gw1, gb1, gw2, gb2;
};

struct Weights {
  at::Tensor w1, b1, w2, b2;
};

Weights make_weights(int64_t D, int64_t H, int64_t O, const torch::TensorOptions& o = {}) {
  return {torch::randn({H, D}, o) * 0.3, torch::randn({H}, o) * 0.5, torch::randn({O, H}, o) * 0.1,
          torch::randn({O}, o)};
}

// y = fc2(gelu(fc1(x))) through gelu_mlp or the plain ops, then backward of sum(y * probe).
Outcome run(const at::Tensor& x0, const Weights& w0, const at::Tensor& probe, bool fused, bool recompute,
            bool x_grad, bool autocast = false) {
  auto x = x0.clone().requires_grad_(x_grad);
  auto w1 = w0.w1.clone().requires_grad_(true), b1 = w0.b1.clone().requires_grad_(true);
  auto w2 = w0.w2.clone().requires_grad_(true), b2 = w0.b2.clone().requires_grad_(true);
  if (autocast) nt::set_cuda_autocast(true);
  at::Tensor y = fused ? nt::gelu_mlp(x, w1, b1, w2, b2, recompute)
                       : at::linear(at::gelu(at::linear(x, w1, b1), "tanh"), w2, b2);
  if (autocast) nt::set_cuda_autocast(false);
  (y.to(at::kFloat) * probe).sum().backward();
  return {y.detach().to(at::kFloat), x.grad(), w1.grad(), b1.grad(), w2.grad(), b2.grad()};
}

TEST(GeluMlp, SameValuesAndGradientsAsThePlainOpsBitForBit) {
  torch::manual_seed(1);
  for (auto shape : {std::vector<int64_t>{3, 7, 24}, std::vector<int64_t>{10, 24}}) {
    const Weights w = make_weights(24, 40, 9);
    auto x = torch::randn(shape);
    auto out_shape = shape;
    out_shape.back() = 9;
    auto probe = torch::randn(out_shape);
    for (bool recompute : {false, true})
      for (bool x_grad : {true, false}) {
        const Outcome plain = run(x, w, probe, false, false, x_grad), fused = run(x, w, probe, true, recompute, x_grad);
        const std::string what = "recompute " + std::to_string(recompute) + ", x_grad " + std::to_string(x_grad);
        EXPECT_TRUE(torch::equal(fused.y, plain.y)) << what;
        EXPECT_TRUE(equal_or_both_undefined(fused.gx, plain.gx)) << what;
        EXPECT_EQ(fused.gx.defined(), x_grad) << what;
        EXPECT_TRUE(torch::equal(fused.gw1, plain.gw1)) << what;
        EXPECT_TRUE(torch::equal(fused.gb1, plain.gb1)) << what;
        EXPECT_TRUE(torch::equal(fused.gw2, plain.gw2)) << what;
        EXPECT_TRUE(torch::equal(fused.gb2, plain.gb2)) << what;
      }
  }
}

// The plain ops keep fc1's input, the GELU's input and its output; the node the same, or the
// first two only when it recomputes the GELU.
TEST(GeluMlp, RecomputingDropsTheGeluOutput) {
  torch::manual_seed(2);
  const int64_t M = 512, D = 16, H = 2048;  // the GELU output: 4 MiB
  auto w1 = torch::randn({H, D}, torch::requires_grad()), b1 = torch::zeros({H}, torch::requires_grad());
  auto w2 = torch::randn({D, H}, torch::requires_grad()), b2 = torch::zeros({D}, torch::requires_grad());
  auto kept_by_forward = [&](int mode) {  // 0 plain, 1 node keeping, 2 node recomputing
    const at::Tensor x = torch::randn({M, D});
    return nt::test::heap_kept_by_forward([&] {
      return mode == 0 ? at::linear(at::gelu(at::linear(x, w1, b1), "tanh"), w2, b2)
                       : nt::gelu_mlp(x, w1, b1, w2, b2, mode == 2);
    });
  };
  const double act = M * H * 4.0;
  kept_by_forward(2);  // warm up the allocator's own bookkeeping
  const double plain = kept_by_forward(0), keep = kept_by_forward(1), again = kept_by_forward(2);
  std::cout << "[ memory   ] kept by the forward: plain " << plain / 1e6 << " MB, gelu_mlp " << keep / 1e6
            << " MB, gelu_mlp recomputing " << again / 1e6 << " MB\n";
  EXPECT_NEAR(keep, plain, 0.1 * act);
  EXPECT_GE(plain - again, 0.9 * act);
  EXPECT_GE(again, 0.9 * act);  // the GELU's input is kept
}

// modulated_gelu_mlp: the norm inside the node; values and the gradients of h, shift, scale and
// every weight equal the plain ops' (modulate(LayerNorm(h)) -> fc1 -> GELU -> fc2) bit for bit.
TEST(GeluMlp, WithTheNormSameValuesAndGradientsAsThePlainOpsBitForBit) {
  torch::manual_seed(6);
  const int64_t N = 3, T = 7, D = 24;
  const Weights w = make_weights(D, 40, D);
  const auto h0 = torch::randn({N, T, D}), shift0 = torch::randn({N, D}), scale0 = torch::randn({N, D}) * 0.3;
  const auto probe = torch::randn({N, T, D});
  auto run_mod = [&](bool fused, bool recompute, bool h_grad) {
    auto h = h0.clone().requires_grad_(h_grad), shift = shift0.clone().requires_grad_(true);
    auto scale = scale0.clone().requires_grad_(true);
    auto w1 = w.w1.clone().requires_grad_(true), b1 = w.b1.clone().requires_grad_(true);
    auto w2 = w.w2.clone().requires_grad_(true), b2 = w.b2.clone().requires_grad_(true);
    at::Tensor y = fused ? nt::modulated_gelu_mlp(h, shift, scale, false, w1, b1, w2, b2, recompute)
                         : at::linear(at::gelu(at::linear(nt::modulated_norm(h, shift, scale), w1, b1), "tanh"), w2, b2);
    (y * probe).sum().backward();
    return std::vector<at::Tensor>{y.detach(), h.grad(), shift.grad(), scale.grad(), w1.grad(), b1.grad(), w2.grad(),
                                   b2.grad()};
  };
  for (bool h_grad : {true, false}) {
    const auto plain = run_mod(false, false, h_grad);
    for (bool recompute : {false, true}) {
      const auto fused = run_mod(true, recompute, h_grad);
      for (size_t i = 0; i < plain.size(); ++i)
        EXPECT_TRUE(equal_or_both_undefined(fused[i], plain[i]))
            << "tensor " << i << ", recompute " << recompute << ", h_grad " << h_grad;
    }
  }
}

// With the norm inside, the node keeps neither the normalised tensor nor fc1's input: the plain
// ops keep both ([M, D] fp32 each: the modulate's and fc1's inputs).
TEST(GeluMlp, WithTheNormKeepsTheNormsInputsOnly) {
  torch::manual_seed(7);
  const int64_t N = 2, T = 256, D = 256, H = 512;
  const Weights w = make_weights(D, H, D);
  auto w1 = w.w1.requires_grad_(true), b1 = w.b1.requires_grad_(true);
  auto w2 = w.w2.requires_grad_(true), b2 = w.b2.requires_grad_(true);
  auto shift = torch::randn({N, D}, torch::requires_grad()), scale = torch::randn({N, D}, torch::requires_grad());
  auto kept_by_forward = [&](bool fused) {
    const at::Tensor h = torch::randn({N, T, D}, torch::requires_grad());
    return nt::test::heap_kept_by_forward([&] {
      return fused ? nt::modulated_gelu_mlp(h, shift, scale, false, w1, b1, w2, b2, false)
                   : at::linear(at::gelu(at::linear(nt::modulated_norm(h, shift, scale), w1, b1), "tanh"), w2, b2);
    });
  };
  const double stream = N * T * D * 4.0;
  kept_by_forward(true);  // warm up the allocator's own bookkeeping
  const double plain = kept_by_forward(false), fused = kept_by_forward(true);
  std::cout << "[ memory   ] kept by the forward: norm + plain MLP " << plain / 1e6 << " MB, modulated_gelu_mlp "
            << fused / 1e6 << " MB\n";
  EXPECT_GE(plain - fused, 1.9 * stream);
}

TEST(GeluMlp, WithoutGradModeThePlainOps) {
  torch::manual_seed(3);
  Weights w = make_weights(8, 16, 3);
  auto x = torch::randn({4, 8}, torch::requires_grad());
  for (auto* t : {&w.w1, &w.b1, &w.w2, &w.b2}) t->requires_grad_(true);
  torch::NoGradGuard no_grad;
  auto y = nt::gelu_mlp(x, w.w1, w.b1, w.w2, w.b2, true);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(torch::equal(y, at::linear(at::gelu(at::linear(x, w.w1, w.b1), "tanh"), w.w2, w.b2)));
}

// ---- the cuBLASLt layouts (models/gelu_gemm_layout.h) against the BLAS definition ----------

// A column-major [rows, cols] matrix with leading dimension ld over a flat buffer: element (i, j)
// at i + j * ld.
at::Tensor column_major(const at::Tensor& flat, int64_t rows, int64_t cols, int64_t ld) {
  return flat.as_strided({rows, cols}, {1, ld});
}

// What cuBLASLt computes for a layout over flat row-major buffers: D = op(A) · B, with the bias
// (length m) along D's rows, or with the GELU's derivative from `aux` (laid out like D) and the
// bias gradient summed along D's rows. Writes D into `d_flat`; returns the bias gradient.
at::Tensor blas_product(const nt::cuda::ColumnMajorProduct& l, const at::Tensor& a_flat, const at::Tensor& b_flat,
                        const at::Tensor& d_flat, const at::Tensor& bias, const at::Tensor& aux_flat) {
  const at::Tensor A = column_major(a_flat, l.a_rows, l.a_cols, l.lda);
  const at::Tensor D = (l.transpose_a ? A.t() : A).mm(column_major(b_flat, l.k, l.n, l.ldb));  // [m, n]
  at::Tensor bias_grad;
  if (aux_flat.defined()) {  // DGELU_BGRAD
    const at::Tensor out = at::gelu_backward(D, column_major(aux_flat, l.m, l.n, l.ldd), "tanh");
    column_major(d_flat, l.m, l.n, l.ldd).copy_(out);
    bias_grad = out.sum(1);  // along the rows: [m]
  } else {  // BIAS (the GELU applies elementwise after it)
    column_major(d_flat, l.m, l.n, l.ldd).copy_(D + bias.view({l.m, 1}));
  }
  return bias_grad;
}

TEST(GeluGemmLayout, TheColumnMajorProductsAreTheRowMajorOnes) {
  torch::manual_seed(9);
  const int64_t M = 6, K = 5, N = 4, O = 3;
  const auto x = torch::randn({M, K}, torch::kDouble), w1 = torch::randn({N, K}, torch::kDouble);
  const auto b1 = torch::randn({N}, torch::kDouble);
  // Forward: pre = x · w1^T + b1, row-major [M, N].
  auto pre = torch::empty({M, N}, torch::kDouble);
  blas_product(nt::cuda::bias_gelu_layout(M, N, K), w1.view(-1), x.view(-1), pre.view(-1), b1, at::Tensor());
  EXPECT_TRUE(torch::allclose(pre, at::linear(x, w1, b1), 1e-12, 1e-12)) << pre << at::linear(x, w1, b1);
  // Backward: dpre = (dy · w2) * gelu'(pre), row-major [M, N], and the bias gradient [N].
  const auto dy = torch::randn({M, O}, torch::kDouble), w2 = torch::randn({O, N}, torch::kDouble);
  auto dpre = torch::empty({M, N}, torch::kDouble);
  const auto dbias =
      blas_product(nt::cuda::dgelu_layout(M, N, O), w2.view(-1), dy.view(-1), dpre.view(-1), at::Tensor(), pre.view(-1));
  const auto dpre_ref = at::gelu_backward(dy.mm(w2), pre, "tanh");
  EXPECT_TRUE(torch::allclose(dpre, dpre_ref, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(dbias, dpre_ref.sum(0), 1e-12, 1e-12));
  // The same with the weight given transposed, w2^T [N, O] contiguous (the staged input gradient).
  const auto w2t = w2.t().contiguous();  // [N, O]
  auto dpre_t = torch::empty({M, N}, torch::kDouble);
  const auto dbias_t = blas_product(nt::cuda::dgelu_transposed_layout(M, N, O), w2t.view(-1), dy.view(-1),
                                    dpre_t.view(-1), at::Tensor(), pre.view(-1));
  EXPECT_TRUE(torch::allclose(dpre_t, dpre_ref, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(dbias_t, dpre_ref.sum(0), 1e-12, 1e-12));
  // ... read as TF32's tensor cores take operands: k (= O) along A's stored columns, as in the forward.
  EXPECT_TRUE(nt::cuda::dgelu_transposed_layout(M, N, O).transpose_a);
  EXPECT_EQ(nt::cuda::dgelu_transposed_layout(M, N, O).lda, O);
  // The aux matrix's leading dimension cuBLASLt needs (>= D's rows, a multiple of 8 for N % 8 == 0).
  EXPECT_EQ(nt::cuda::bias_gelu_layout(M, N, K).ldd, N);
  EXPECT_EQ(nt::cuda::dgelu_layout(M, N, O).ldd, N);
  EXPECT_EQ(nt::cuda::dgelu_transposed_layout(M, N, O).ldd, N);
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kFloat) - b.to(at::kFloat)).abs().max() / b.to(at::kFloat).abs().max().clamp_min(1e-30))
      .item<double>();
}

#ifdef NT_HAVE_CUBLASLT
// The two cuBLASLt products against LibTorch's ops in fp64, in `dtype` (fp32: with `math`); false
// when cuBLASLt offers no algorithm for them. Shapes as an MLP's: M tokens, width D, hidden H.
bool check_products(at::ScalarType dtype, nt::cuda::Fp32Math math, double tol) {
  torch::manual_seed(5);
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  const int64_t M = 512, D = 128, H = 256;
  auto x = torch::randn({M, D}, o), w1 = torch::randn({H, D}, o) * 0.15, b1 = torch::randn({H}, o);
  auto pre = torch::empty({M, H}, o), out = torch::empty({M, H}, o);
  auto ws = torch::empty({static_cast<int64_t>(nt::cuda::gelu_gemm_workspace_bytes())}, o.dtype(at::kByte));
  const auto dt = dtype == at::kBFloat16 ? nt::cuda::Dtype::bf16 : nt::cuda::Dtype::f32;
  if (!nt::cuda::gemm_bias_gelu(x.data_ptr(), w1.data_ptr(), b1.data_ptr(), out.data_ptr(), pre.data_ptr(), M, H, D,
                                dt, math, ws.data_ptr(), ws.numel(), 0, nullptr))
    return false;
  const auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const auto pre_ref = at::addmm(f64(b1), f64(x), f64(w1).t());  // [M, H]
  const auto out_ref = at::gelu(f64(pre), "tanh"), out_erf = at::gelu(f64(pre));
  std::cout << "[ gpu      ] cuBLASLt " << c10::toString(dtype)
            << (dtype == at::kFloat && math == nt::cuda::Fp32Math::tf32 ? " (TF32)" : "") << ": pre "
            << rel(pre, pre_ref) << ", gelu " << rel(out, out_ref) << " (erf-GELU: " << rel(out, out_erf) << ")";
  EXPECT_LE(rel(pre, pre_ref), tol);
  EXPECT_LE(rel(out, out_ref), tol);
  // (Printed, not asserted: the erf-GELU differs from tanh's by up to 5e-4, about what a fast
  // tanh in the epilogue could differ by; the training tests bound the effect.)

  const int64_t O = D;  // fc2: H -> D
  auto dy = torch::randn({M, O}, o), w2 = torch::randn({O, H}, o) * 0.1;
  const auto w2t = w2.t().contiguous();  // [H, O]: the staged input gradient's operand
  const auto dpre_ref = at::gelu_backward(f64(dy).mm(f64(w2)), f64(pre), "tanh");
  const auto act_ref = at::gelu(f64(pre), "tanh");
  // Each way of forming dpre and the bias gradient, and whichever is fastest; with the GELU's
  // output again and without; fc2's weight as it is and transposed. Outputs start as NaN: each
  // must be written.
  using nt::cuda::GeluBackward;
  for (bool transposed : {false, true}) {
    for (bool again : {false, true}) {
      for (GeluBackward how : {GeluBackward::epilogue, GeluBackward::epilogue_and_sums,
                               GeluBackward::product_and_kernel, GeluBackward::automatic}) {
        auto dpre = torch::full({M, H}, std::nan(""), o), dbias = torch::full({H}, std::nan(""), o);
        auto act = torch::full({M, H}, std::nan(""), o);
        const bool ran = nt::cuda::gemm_dgelu_bgrad(
            dy.data_ptr(), (transposed ? w2t : w2).data_ptr(), transposed, pre.data_ptr(), dpre.data_ptr(),
            dbias.data_ptr(), /*accumulate_bias=*/false, again ? act.data_ptr() : nullptr, M, H, O, dt, math,
            ws.data_ptr(), ws.numel(), 0, nullptr, how);
        const char* name = how == GeluBackward::epilogue            ? "epilogue"
                           : how == GeluBackward::epilogue_and_sums  ? "epilogue and sums"
                           : how == GeluBackward::product_and_kernel ? "product and kernel"
                                                                     : "automatic";
        // bf16 (DiT's MLPs) must take every way; fp32 the plain product and our kernel at least.
        if (!ran && dtype == at::kFloat && how != GeluBackward::product_and_kernel) {
          std::cout << ", dgelu (" << name << (transposed ? ", W^T" : "") << ") not offered";
          continue;
        }
        EXPECT_TRUE(ran) << name;
        torch::cuda::synchronize();
        std::cout << ", dgelu (" << name << (transposed ? ", W^T" : "") << (again ? ", GELU again" : "") << ") "
                  << rel(dpre, dpre_ref) << ", bias gradient " << rel(dbias, dpre_ref.sum(0));
        EXPECT_LE(rel(dpre, dpre_ref), tol) << name;
        EXPECT_LE(rel(dbias, dpre_ref.sum(0)), tol) << name;
        if (again) {
          EXPECT_LE(rel(act, act_ref), tol) << name;
        } else {
          EXPECT_TRUE(act.isnan().all().item<bool>()) << name << ": wrote the GELU's output unasked";
        }
      }
    }
  }
  // The bias gradient added into a buffer (fc1's bias gradient in place): what it held plus the
  // sums, once, also on the automatic choice's first call (its timing runs must not add); the
  // epilogue, which writes, refuses.
  for (GeluBackward how : {GeluBackward::automatic, GeluBackward::product_and_kernel, GeluBackward::epilogue}) {
    const auto held = torch::randn({H}, o);
    auto dpre = torch::empty({M, H}, o), dbias = held.clone();
    const bool ran = nt::cuda::gemm_dgelu_bgrad(dy.data_ptr(), w2.data_ptr(), false, pre.data_ptr(), dpre.data_ptr(),
                                                dbias.data_ptr(), /*accumulate_bias=*/true, nullptr, M, H, O, dt,
                                                math, ws.data_ptr(), ws.numel(), 0, nullptr, how);
    if (how == GeluBackward::epilogue) {
      EXPECT_FALSE(ran) << "the bias-gradient epilogue asked to add";
      EXPECT_TRUE(dbias.equal(held)) << "the refused call wrote";
      continue;
    }
    EXPECT_TRUE(ran);
    if (!ran) continue;
    const auto want = f64(held) + dpre_ref.sum(0);
    std::cout << ", bias gradient added (" << (how == GeluBackward::automatic ? "automatic" : "product and kernel")
              << ") " << rel(dbias, want);
    EXPECT_LE(rel(dbias, want), tol);
  }
  std::cout << "\n";
  return true;
}
#endif

TEST(GeluMlp, CublasLtProductsAsLibTorch) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!nt::gelu_mlp_cublaslt_built()) GTEST_SKIP() << "built without cuBLASLt";
#ifdef NT_HAVE_CUBLASLT
  using nt::cuda::Fp32Math;
  EXPECT_TRUE(check_products(at::kBFloat16, Fp32Math::exact, 2e-2)) << "cuBLASLt offers no bf16 GELU product";
  if (!check_products(at::kFloat, Fp32Math::exact, 1e-3))
    std::cout << "[ gpu      ] cuBLASLt offers no fp32 GELU product\n";
  // TF32 (TREAD's block after a route): the products' operands rounded to 10 mantissa bits.
  if (!check_products(at::kFloat, Fp32Math::tf32, 5e-3))
    std::cout << "[ gpu      ] cuBLASLt offers no fp32 (TF32) GELU product\n";
#endif
}

// As DiT's MLP runs on a GPU: fp32 weights and input, bf16 autocast.
TEST(GeluMlp, CudaAutocastAsThePlainOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(4);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const Weights w = make_weights(384, 1536, 384, cuda);
  auto x = torch::randn({4, 256, 384}, cuda), probe = torch::randn({4, 256, 384}, cuda);
  const Outcome plain = run(x, w, probe, false, false, true, true);
  for (bool recompute : {false, true}) {
    const Outcome fused = run(x, w, probe, true, recompute, true, true);
    std::cout << "[ gpu      ] gelu_mlp (recompute " << recompute << ", cuBLASLt " << nt::gelu_mlp_cublaslt_built()
              << ") under autocast: relative differences y " << rel(fused.y, plain.y) << ", x "
              << rel(fused.gx, plain.gx) << ", w1 " << rel(fused.gw1, plain.gw1) << ", b1 "
              << rel(fused.gb1, plain.gb1) << ", w2 " << rel(fused.gw2, plain.gw2) << ", b2 "
              << rel(fused.gb2, plain.gb2) << "\n";
    EXPECT_EQ(fused.gx.scalar_type(), at::kFloat);
    for (const auto* g : {&fused.gw1, &fused.gb1, &fused.gw2, &fused.gb2}) EXPECT_EQ(g->scalar_type(), at::kFloat);
    EXPECT_LE(rel(fused.y, plain.y), 2e-2);
    EXPECT_LE(rel(fused.gx, plain.gx), 2e-2);
    EXPECT_LE(rel(fused.gw1, plain.gw1), 2e-2);
    EXPECT_LE(rel(fused.gb1, plain.gb1), 2e-2);
    EXPECT_LE(rel(fused.gw2, plain.gw2), 2e-2);
    EXPECT_LE(rel(fused.gb2, plain.gb2), 2e-2);
  }
}

// As TREAD's block after a route runs on a GPU: fp32 outside autocast. With TF32 allowed (the
// reference's setting) the node's products are cuBLASLt's TF32 ones where built (fc2's weight
// transposed for the backward's product), within TF32's rounding of fp64; with TF32 off the node
// keeps LibTorch's exact fp32 ops, within fp32's rounding.
TEST(GeluMlp, CudaFp32AsThePlainOpsWithAndWithoutTF32) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(6);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const Weights w = make_weights(384, 1536, 384, cuda);
  auto x = torch::randn({4, 256, 384}, cuda), probe = torch::randn({4, 256, 384}, cuda);
  const auto f64 = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const Weights w64{f64(w.w1), f64(w.b1), f64(w.w2), f64(w.b2)};
  const Outcome exact = run(f64(x), w64, f64(probe), false, false, true);
  const bool was = at::globalContext().allowTF32CuBLAS();
  for (bool tf32 : {true, false}) {
    at::globalContext().setAllowTF32CuBLAS(tf32);
    for (bool recompute : {false, true}) {
      const Outcome fused = run(x, w, probe, true, recompute, true);
      const std::vector<std::pair<const char*, double>> d = {
          {"y", rel(fused.y, exact.y)},     {"x", rel(fused.gx, exact.gx)},   {"w1", rel(fused.gw1, exact.gw1)},
          {"b1", rel(fused.gb1, exact.gb1)}, {"w2", rel(fused.gw2, exact.gw2)}, {"b2", rel(fused.gb2, exact.gb2)}};
      std::cout << "[ gpu      ] gelu_mlp fp32 (TF32 " << tf32 << ", recompute " << recompute << ", cuBLASLt "
                << nt::gelu_mlp_cublaslt_built() << ") against fp64:";
      for (const auto& [name, v] : d) {
        std::cout << " " << name << " " << v;
        EXPECT_LE(v, tf32 ? 5e-3 : 2e-5) << name << ", TF32 " << tf32 << ", recompute " << recompute;
      }
      std::cout << "\n";
      EXPECT_EQ(fused.gx.scalar_type(), at::kFloat);
    }
  }
  at::globalContext().setAllowTF32CuBLAS(was);
}

// The norm inside the node, fused kernels and cuBLASLt where built, under bf16 autocast, against
// the composite norm and the plain MLP under autocast.
TEST(GeluMlp, CudaAutocastWithTheNormAsThePlainOps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(8);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t N = 4, T = 256, D = 384;
  const Weights w = make_weights(D, 4 * D, D, cuda);
  const auto h0 = torch::randn({N, T, D}, cuda), shift0 = torch::randn({N, D}, cuda) * 0.3;
  const auto scale0 = torch::randn({N, D}, cuda) * 0.3, probe = torch::randn({N, T, D}, cuda);
  auto run_mod = [&](bool node, bool recompute) {
    auto h = h0.clone().requires_grad_(true), shift = shift0.clone().requires_grad_(true);
    auto scale = scale0.clone().requires_grad_(true);
    auto w1 = w.w1.clone().requires_grad_(true), b1 = w.b1.clone().requires_grad_(true);
    auto w2 = w.w2.clone().requires_grad_(true), b2 = w.b2.clone().requires_grad_(true);
    nt::set_cuda_autocast(true);
    at::Tensor y = node ? nt::modulated_gelu_mlp(h, shift, scale, true, w1, b1, w2, b2, recompute)
                        : at::linear(at::gelu(at::linear(nt::modulated_norm(h, shift, scale), w1, b1), "tanh"), w2, b2);
    nt::set_cuda_autocast(false);
    (y.to(at::kFloat) * probe).sum().backward();
    return std::vector<at::Tensor>{y.detach(), h.grad(), shift.grad(), scale.grad(), w1.grad(), b1.grad(), w2.grad(),
                                   b2.grad()};
  };
  const auto plain = run_mod(false, false);
  const char* names[] = {"y", "h", "shift", "scale", "w1", "b1", "w2", "b2"};
  for (bool recompute : {false, true}) {
    const auto node = run_mod(true, recompute);
    std::cout << "[ gpu      ] modulated_gelu_mlp (fused norm, recompute " << recompute << ") under autocast:";
    for (size_t i = 0; i < plain.size(); ++i) {
      const double d = rel(node[i], plain[i]);
      std::cout << " " << names[i] << " " << d;
      EXPECT_LE(d, 2e-2) << names[i] << ", recompute " << recompute;
    }
    std::cout << "\n";
  }
}

}  // namespace
