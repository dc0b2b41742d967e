// The project's CUDA kernels (models/fused_kernels_device.h) run on the CPU through
// cuda_emulation.h, against LibTorch's CPU ops as the reference: LayerNorm + adaLN modulate
// forward (y, mean, 1/std) and backward (grad x and shift by autograd through layer_norm and
// modulate, grad scale as sum_t grad * x_hat), the gated residual forward and backward, and the
// two together (residual, then the next norm) forward and backward, the MLP's GELU kernels, the
// transpose (models/transpose_kernels_device.h: whole and partial tiles, bit for bit);
// fp32 and bf16 operands; rows narrower than a
// warp, between the block sizes and wider than both; adaLN chunks with a row stride. The same
// code runs on the GPU (tests/models/test_fused_kernels.cpp compares it there).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <string>
#include <type_traits>

#include "cuda_emulation.h"
#include "max_rel_diff.h"
#include "models/fused_kernels_device.h"
#include "models/gelu_kernels_device.h"
#include "models/qkv_kernels_device.h"
#include "models/transpose_kernels_device.h"

namespace {

namespace dev = nt::cuda::device;

template <typename T>
at::ScalarType dtype() {
  return std::is_same_v<T, float> ? at::kFloat : at::kBFloat16;
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mut(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

constexpr auto* rel = &nt::test::max_rel_diff;  // max_rel_diff.h

// A copy of t whose data starts 2 elements into its storage: 2-element aligned, not 8 (the column
// kernels then take two columns a lane where they would take 8).
at::Tensor shifted(const at::Tensor& t) {
  auto out = at::empty({t.numel() + 2}, t.options()).narrow(0, 2, t.numel()).view(t.sizes());
  out.copy_(t);
  return out;
}

const char* name(at::ScalarType t) { return t == at::kFloat ? "fp32" : "bf16"; }

class Emulated : public ::testing::TestWithParam<int> {};

template <typename TM, typename TY>
void check_modulated_norm(int64_t D) {
  // 3 tiles of rows per sample, the last partial; the forward's blocks of kNormRows rows: one
  // with rows of both samples, the last partial; in the column kernels' warps (every 8th row,
  // kColumnRows at a time) a whole group of rows and a partial one.
  constexpr int64_t N = 2, T = 35, rows = N * T;
  static_assert(T % dev::kNormRows != 0 && rows % dev::kNormRows != 0);
  static_assert(T > dev::kColumnRows * dev::kColumnGroups && T < 2 * dev::kColumnRows * dev::kColumnGroups);
  const float eps = 1e-6f;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D));
  const at::Tensor x = at::randn({N, T, D}, gen) * 2 + at::randn({N, T, 1}, gen);  // fp32
  const at::Tensor mod = (at::randn({N, 2 * D}, gen) * 0.5).to(dtype<TM>());        // [N, 2D]
  const at::Tensor shift = mod.narrow(1, 0, D), scale = mod.narrow(1, D, D);         // row stride 2D
  const at::Tensor gy = at::randn({N, T, D}, gen).to(dtype<TY>());

  // Forward.
  auto y = at::empty({N, T, D}, at::TensorOptions().dtype(dtype<TY>()));
  auto mean = at::empty({rows}), rstd = at::empty({rows});
  dev::launch_modulated_norm_forward<TM, TY>(ptr<float>(x), ptr<TM>(mod), 2 * D, ptr<TM>(mod) + D, 2 * D, mut<TY>(y),
                                             mut<float>(mean), mut<float>(rstd), rows, T, static_cast<int>(D), eps,
                                             nullptr);
  // The reference: layer_norm, then x_hat * (1 + scale) + shift with 1 + scale in scale's dtype.
  auto xl = x.clone().requires_grad_(true);
  auto shift_l = shift.to(at::kFloat).requires_grad_(true), scale_l = scale.to(at::kFloat).requires_grad_(true);
  const at::Tensor x_hat = at::layer_norm(xl, {D}, {}, {}, eps);
  const at::Tensor s1 = (scale_l + 1).to(dtype<TM>()).to(at::kFloat);  // rounded as `1 + scale` is
  const at::Tensor ref = x_hat * s1.unsqueeze(1) + shift_l.unsqueeze(1);
  const auto var_mean = at::var_mean(x, {2}, /*unbiased=*/false);
  const double ey = rel(y.to(at::kFloat), ref.detach().to(dtype<TY>()).to(at::kFloat));
  const double em = rel(mean, std::get<1>(var_mean).reshape({rows}));
  const double er = rel(rstd, (std::get<0>(var_mean) + eps).rsqrt().reshape({rows}));

  // Backward.
  ref.backward(gy.to(at::kFloat));
  // The sums over tokens come back in the mod dtype (fp32 sums rounded once).
  const auto mod_dtype = at::TensorOptions().dtype(dtype<TM>());
  const double tol_mod = dtype<TM>() == at::kFloat ? 1e-5 : 1e-2;  // a bf16 result is rounded (2^-8)
  auto gx = at::empty({N, T, D}), g_scale = at::empty({N, D}, mod_dtype), g_shift = at::empty({N, D}, mod_dtype);
  auto workspace = at::empty({dev::norm_backward_workspace(rows, T, static_cast<int>(D))});
  dev::launch_modulated_norm_backward<TM, TY>(ptr<TY>(gy), ptr<float>(x), ptr<float>(mean), ptr<float>(rstd),
                                              ptr<TM>(mod) + D, 2 * D, static_cast<const float*>(nullptr),
                                              mut<float>(gx), mut<TM>(g_scale), mut<TM>(g_shift),
                                              mut<float>(workspace), rows, T, static_cast<int>(D), nullptr);
  // With x's gradient from elsewhere: added to the norm's, as autograd adds the two (one rounding).
  const at::Tensor other = at::randn({N, T, D}, gen);
  auto gx_sum = at::empty({N, T, D}), g_scale2 = at::empty({N, D}, mod_dtype), g_shift2 = at::empty({N, D}, mod_dtype);
  dev::launch_modulated_norm_backward<TM, TY>(ptr<TY>(gy), ptr<float>(x), ptr<float>(mean), ptr<float>(rstd),
                                              ptr<TM>(mod) + D, 2 * D, ptr<float>(other), mut<float>(gx_sum),
                                              mut<TM>(g_scale2), mut<TM>(g_shift2),
                                              static_cast<float*>(nullptr), rows, T, static_cast<int>(D), nullptr);
  EXPECT_TRUE(at::equal(gx_sum, other + gx)) << "grad x with another gradient added";
  // Its sums over tokens (another kernel, another order of the fp32 additions).
  EXPECT_LE(rel(g_scale2, g_scale), tol_mod);
  EXPECT_LE(rel(g_shift2, g_shift), tol_mod);
  // With gy 2 elements off 4-element alignment (one column a lane instead of four): the same bits.
  auto gx_sum3 = at::empty({N, T, D}), g_scale3 = at::empty({N, D}, mod_dtype), g_shift3 = at::empty({N, D}, mod_dtype);
  const at::Tensor gy_shifted = shifted(gy);
  dev::launch_modulated_norm_backward<TM, TY>(ptr<TY>(gy_shifted), ptr<float>(x), ptr<float>(mean), ptr<float>(rstd),
                                              ptr<TM>(mod) + D, 2 * D, ptr<float>(other), mut<float>(gx_sum3),
                                              mut<TM>(g_scale3), mut<TM>(g_shift3),
                                              static_cast<float*>(nullptr), rows, T, static_cast<int>(D), nullptr);
  EXPECT_TRUE(at::equal(gx_sum3, gx_sum));
  EXPECT_TRUE(at::equal(g_scale3, g_scale2)) << "D " << D;
  EXPECT_TRUE(at::equal(g_shift3, g_shift2)) << "D " << D;
  // d y / d scale = x_hat, whatever scale's dtype (autograd through the bf16 rounding of 1 + scale
  // would round this gradient to bf16 on the way; the kernel sums in fp32 and rounds once).
  const at::Tensor g_scale_ref = (gy.to(at::kFloat) * x_hat.detach()).sum(1);
  const double ex = rel(gx, xl.grad()), esc = rel(g_scale, g_scale_ref), esh = rel(g_shift, shift_l.grad());
  std::cout << "[ emulated ] modulated norm D " << D << " mod " << name(dtype<TM>()) << " y " << name(dtype<TY>())
            << ": y " << ey << ", mean " << em << ", rstd " << er << ", grad x " << ex << ", grad scale " << esc
            << ", grad shift " << esh << "\n";
  const double tol = dtype<TY>() == at::kFloat ? 1e-5 : 1e-2;  // a bf16 output is rounded (2^-8)
  EXPECT_LE(ey, tol);
  EXPECT_LE(em, 1e-6);
  EXPECT_LE(er, 1e-5);
  EXPECT_LE(ex, 1e-5);  // from the same gy: fp32 sums in other orders only
  EXPECT_LE(esc, tol_mod);
  EXPECT_LE(esh, tol_mod);
}

TEST_P(Emulated, ModulatedNormMatchesLibTorch) {
  const int64_t D = GetParam();
  check_modulated_norm<float, float>(D);
  check_modulated_norm<__nv_bfloat16, __nv_bfloat16>(D);  // as under autocast
  if (D == 200) {  // the mixed pairs once (each run costs seconds here)
    check_modulated_norm<float, __nv_bfloat16>(D);
    check_modulated_norm<__nv_bfloat16, float>(D);
  }
}

template <typename TB>
void check_gated_residual(int64_t D) {
  const int64_t N = 3, T = 35, rows = N * T;  // T: rows per column group 5 or 4 (8 groups)
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 1);
  const at::Tensor x = at::randn({N, T, D}, gen);
  const at::Tensor mod = at::randn({N, 3 * D}, gen).to(dtype<TB>());
  const at::Tensor gate = mod.narrow(1, D, D);  // row stride 3D
  const at::Tensor branch = at::randn({N, T, D}, gen).to(dtype<TB>()), grad = at::randn({N, T, D}, gen);

  auto out = at::empty({N, T, D});
  dev::launch_gated_residual_forward<TB>(ptr<float>(x), ptr<TB>(mod) + D, 3 * D, ptr<TB>(branch), mut<float>(out), rows,
                                         T, static_cast<int>(D), nullptr);
  const at::Tensor gate_f = gate.to(at::kFloat).unsqueeze(1), branch_f = branch.to(at::kFloat);  // exact widenings
  const double eo = rel(out, x + gate_f * branch_f);
  // A branch one element off 4-element alignment takes the one-element kernel (D here is a
  // multiple of 4, so the run above took the four-element one): the same values.
  auto shifted = at::empty({rows * D + 1}, at::TensorOptions().dtype(dtype<TB>()));
  shifted.narrow(0, 1, rows * D).copy_(branch.reshape({-1}));
  auto out1 = at::empty({N, T, D});
  dev::launch_gated_residual_forward<TB>(ptr<float>(x), ptr<TB>(mod) + D, 3 * D, ptr<TB>(shifted) + 1, mut<float>(out1),
                                         rows, T, static_cast<int>(D), nullptr);
  EXPECT_TRUE(torch::equal(out1, out)) << D;

  auto grad_branch = at::empty({N, T, D}, at::TensorOptions().dtype(dtype<TB>())), grad_gate = at::empty({N, D}, at::TensorOptions().dtype(dtype<TB>()));
  dev::launch_gated_residual_backward<TB>(ptr<float>(grad), ptr<TB>(mod) + D, 3 * D, ptr<TB>(branch),
                                          mut<TB>(grad_branch), mut<TB>(grad_gate), nullptr, nullptr, rows, T,
                                          static_cast<int>(D), nullptr);
  const double eb = rel(grad_branch.to(at::kFloat), (grad * gate_f).to(dtype<TB>()).to(at::kFloat));
  const double eg = rel(grad_gate, (grad * branch_f).sum(1));
  // Again with the branch's bias gradient: the same grad branch and grad gate, and the bias
  // gradient = grad branch (as written) summed over all rows, rounded to TB.
  auto grad_branch2 = at::full({N, T, D}, NAN, at::TensorOptions().dtype(dtype<TB>()));
  auto grad_gate2 = at::full({N, D}, NAN, at::TensorOptions().dtype(dtype<TB>())), bias_part = at::full({N, D}, NAN);
  auto grad_bias = at::full({D}, NAN, at::TensorOptions().dtype(dtype<TB>()));
  dev::launch_gated_residual_backward<TB>(ptr<float>(grad), ptr<TB>(mod) + D, 3 * D, ptr<TB>(branch),
                                          mut<TB>(grad_branch2), mut<TB>(grad_gate2), mut<float>(bias_part),
                                          mut<TB>(grad_bias), rows, T, static_cast<int>(D), nullptr);
  EXPECT_TRUE(torch::equal(grad_branch2, grad_branch)) << D;
  EXPECT_TRUE(torch::equal(grad_gate2, grad_gate)) << D;
  // The branch one element off alignment: element-by-element accesses (the runs above, D even,
  // took the paired ones), the same values bit for bit.
  auto grad_branch3 = at::full({N, T, D}, NAN, at::TensorOptions().dtype(dtype<TB>()));
  auto grad_gate3 = at::full({N, D}, NAN, at::TensorOptions().dtype(dtype<TB>())), bias_part3 = at::full({N, D}, NAN);
  auto grad_bias3 = at::full({D}, NAN, at::TensorOptions().dtype(dtype<TB>()));
  dev::launch_gated_residual_backward<TB>(ptr<float>(grad), ptr<TB>(mod) + D, 3 * D, ptr<TB>(shifted) + 1,
                                          mut<TB>(grad_branch3), mut<TB>(grad_gate3), mut<float>(bias_part3),
                                          mut<TB>(grad_bias3), rows, T, static_cast<int>(D), nullptr);
  EXPECT_TRUE(torch::equal(grad_branch3, grad_branch)) << D;
  EXPECT_TRUE(torch::equal(grad_gate3, grad_gate)) << D;
  EXPECT_TRUE(torch::equal(grad_bias3, grad_bias)) << D;
  const double ebias =
      rel(grad_bias.to(at::kFloat), grad_branch.to(at::kFloat).sum(at::IntArrayRef{0, 1}).to(dtype<TB>()).to(at::kFloat));
  std::cout << "[ emulated ] gated residual D " << D << " " << name(dtype<TB>()) << ": out " << eo << ", grad branch "
            << eb << ", grad gate " << eg << ", grad bias " << ebias << "\n";
  EXPECT_LE(eo, 1e-6);
  EXPECT_LE(eb, dtype<TB>() == at::kFloat ? 1e-6 : 1e-2);
  EXPECT_LE(eg, dtype<TB>() == at::kFloat ? 1e-5 : 1e-2);  // summed in fp32, written in TB
  EXPECT_LE(ebias, dtype<TB>() == at::kFloat ? 1e-5 : 1e-2);
}

TEST_P(Emulated, GatedResidualMatchesLibTorch) {
  check_gated_residual<float>(GetParam());
  check_gated_residual<__nv_bfloat16>(GetParam());
}

// An odd width: the last lane of the last column block has one column (element-by-element accesses).
TEST(EmulatedGatedResidual, OddWidthMatchesLibTorch) {
  check_gated_residual<float>(75);
  check_gated_residual<__nv_bfloat16>(75);
}

// h = x + gate * branch, then modulate(LayerNorm(h)), against LibTorch's ops and autograd: the
// gradients of x (h's own gradient gh plus the norm's), branch, gate, shift and scale. Backward
// takes x, not h, and forms h again.
template <typename TM, typename TY>
void check_residual_norm(int64_t D, bool with_gh) {
  const int64_t N = 2, T = 35, rows = N * T;  // as check_modulated_norm's
  const float eps = 1e-6f;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(D) + 2);
  const at::Tensor x = at::randn({N, T, D}, gen) * 2 + at::randn({N, T, 1}, gen);
  const at::Tensor mod = (at::randn({N, 3 * D}, gen) * 0.5).to(dtype<TM>());  // gate, shift, scale: stride 3D
  const at::Tensor branch = at::randn({N, T, D}, gen).to(dtype<TM>());
  const at::Tensor gy = at::randn({N, T, D}, gen).to(dtype<TY>()), gh = at::randn({N, T, D}, gen);

  auto h = at::empty({N, T, D}), y = at::empty({N, T, D}, at::TensorOptions().dtype(dtype<TY>()));
  auto mean = at::empty({rows}), rstd = at::empty({rows});
  const TM* m = ptr<TM>(mod);
  dev::launch_residual_norm_forward<TM, TY>(ptr<float>(x), m, ptr<TM>(branch), m + D, m + 2 * D, 3 * D, mut<float>(h),
                                            mut<TY>(y), mut<float>(mean), mut<float>(rstd), rows, T,
                                            static_cast<int>(D), eps, nullptr);
  // The reference, on fp32 leaves holding the same values.
  auto xl = x.clone().requires_grad_(true), bl = branch.to(at::kFloat).requires_grad_(true);
  auto ml = mod.to(at::kFloat).requires_grad_(true);
  const at::Tensor gate = ml.narrow(1, 0, D), shift = ml.narrow(1, D, D), scale = ml.narrow(1, 2 * D, D);
  const at::Tensor h_ref = xl + gate.unsqueeze(1) * bl;
  const at::Tensor x_hat = at::layer_norm(h_ref, {D}, {}, {}, eps);
  const at::Tensor s1 = (scale + 1).to(dtype<TM>()).to(at::kFloat);
  const at::Tensor y_ref = x_hat * s1.unsqueeze(1) + shift.unsqueeze(1);
  const double eh = rel(h, h_ref.detach());
  const double ey = rel(y.to(at::kFloat), y_ref.detach().to(dtype<TY>()).to(at::kFloat));

  auto gx = at::empty({N, T, D}), g_branch = at::empty({N, T, D}, at::TensorOptions().dtype(dtype<TM>()));
  // The sums over tokens come back in the mod dtype (fp32 sums rounded once).
  const auto mod_dtype = at::TensorOptions().dtype(dtype<TM>());
  const double tol_mod = dtype<TM>() == at::kFloat ? 1e-5 : 1e-2;
  auto g_gate = at::empty({N, D}, mod_dtype), g_scale = at::empty({N, D}, mod_dtype), g_shift = at::empty({N, D}, mod_dtype);
  dev::launch_residual_norm_backward<TM, TY>(with_gh ? ptr<float>(gh) : nullptr, ptr<TY>(gy), ptr<float>(x),
                                             ptr<float>(mean), ptr<float>(rstd), m, ptr<TM>(branch), m + 2 * D, 3 * D,
                                             mut<float>(gx), mut<TM>(g_branch), mut<TM>(g_gate), mut<TM>(g_scale),
                                             mut<TM>(g_shift), nullptr, nullptr, rows, T, static_cast<int>(D),
                                             nullptr);
  // Again with the branch's bias gradient: every other output the same, bit for bit.
  auto gx2 = at::full({N, T, D}, NAN), g_branch2 = at::full({N, T, D}, NAN, at::TensorOptions().dtype(dtype<TM>()));
  auto g_gate2 = at::full({N, D}, NAN, mod_dtype), g_scale2 = at::full({N, D}, NAN, mod_dtype),
       g_shift2 = at::full({N, D}, NAN, mod_dtype);
  auto bias_part = at::full({N, D}, NAN), g_bias = at::full({D}, NAN, at::TensorOptions().dtype(dtype<TM>()));
  dev::launch_residual_norm_backward<TM, TY>(with_gh ? ptr<float>(gh) : nullptr, ptr<TY>(gy), ptr<float>(x),
                                             ptr<float>(mean), ptr<float>(rstd), m, ptr<TM>(branch), m + 2 * D, 3 * D,
                                             mut<float>(gx2), mut<TM>(g_branch2), mut<TM>(g_gate2),
                                             mut<TM>(g_scale2), mut<TM>(g_shift2), mut<float>(bias_part),
                                             mut<TM>(g_bias), rows, T, static_cast<int>(D), nullptr);
  for (const auto& [a, b] : {std::pair{gx2, gx}, std::pair{g_branch2, g_branch}, std::pair{g_gate2, g_gate},
                             std::pair{g_scale2, g_scale}, std::pair{g_shift2, g_shift}})
    EXPECT_TRUE(torch::equal(a, b)) << "D " << D;
  // The branch 2 elements off 4-element alignment: the sums over tokens one column a lane instead
  // of four, the same bits.
  auto g_gate3 = at::full({N, D}, NAN, mod_dtype), g_scale3 = at::full({N, D}, NAN, mod_dtype),
       g_shift3 = at::full({N, D}, NAN, mod_dtype);
  auto bias_part3 = at::full({N, D}, NAN), g_bias3 = at::full({D}, NAN, at::TensorOptions().dtype(dtype<TM>()));
  const at::Tensor branch_shifted = shifted(branch);
  dev::launch_residual_norm_backward<TM, TY>(with_gh ? ptr<float>(gh) : nullptr, ptr<TY>(gy), ptr<float>(x),
                                             ptr<float>(mean), ptr<float>(rstd), m, ptr<TM>(branch_shifted), m + 2 * D,
                                             3 * D, mut<float>(at::empty({N, T, D})),
                                             mut<TM>(at::empty({N, T, D}, at::TensorOptions().dtype(dtype<TM>()))),
                                             mut<TM>(g_gate3), mut<TM>(g_scale3), mut<TM>(g_shift3),
                                             mut<float>(bias_part3), mut<TM>(g_bias3), rows, T, static_cast<int>(D),
                                             nullptr);
  for (const auto& [a, b] : {std::pair{g_gate3, g_gate}, std::pair{g_scale3, g_scale}, std::pair{g_shift3, g_shift},
                             std::pair{bias_part3, bias_part}, std::pair{g_bias3, g_bias}})
    EXPECT_TRUE(torch::equal(a, b)) << "shifted branch, D " << D;
  const double ebias =
      rel(g_bias.to(at::kFloat), g_branch.to(at::kFloat).sum(at::IntArrayRef{0, 1}).to(dtype<TM>()).to(at::kFloat));
  EXPECT_LE(ebias, dtype<TM>() == at::kFloat ? 1e-5 : 1e-2) << "grad bias, D " << D;
  // Reference gradients: h's own gradient and the norm's output gradient.
  if (with_gh)
    torch::autograd::backward({h_ref, y_ref}, {gh, gy.to(at::kFloat)});
  else
    y_ref.backward(gy.to(at::kFloat));
  const at::Tensor g_scale_ref = (gy.to(at::kFloat) * x_hat.detach()).sum(1);  // as in check_modulated_norm
  const at::Tensor gm = ml.grad();
  const double ex = rel(gx, xl.grad());
  const double eb = rel(g_branch.to(at::kFloat), (xl.grad() * gate.detach().unsqueeze(1)).to(dtype<TM>()).to(at::kFloat));
  const double eg = rel(g_gate, gm.narrow(1, 0, D)), esh = rel(g_shift, gm.narrow(1, D, D));
  const double esc = rel(g_scale, g_scale_ref);
  std::cout << "[ emulated ] residual norm D " << D << " " << name(dtype<TM>()) << "/" << name(dtype<TY>())
            << (with_gh ? " with" : " without") << " grad h: h " << eh << ", y " << ey << ", grad x " << ex
            << ", grad branch " << eb << ", grad gate " << eg << ", grad shift " << esh << ", grad scale " << esc
            << "\n";
  EXPECT_LE(eh, 1e-6);
  EXPECT_LE(ey, dtype<TY>() == at::kFloat ? 1e-5 : 1e-2);
  EXPECT_LE(ex, 1e-5);
  EXPECT_LE(eb, dtype<TM>() == at::kFloat ? 1e-5 : 1e-2);
  EXPECT_LE(eg, tol_mod);
  EXPECT_LE(esh, tol_mod);
  EXPECT_LE(esc, tol_mod);
}

TEST_P(Emulated, ResidualNormMatchesLibTorch) {
  const int64_t D = GetParam();
  check_residual_norm<float, float>(D, true);
  check_residual_norm<__nv_bfloat16, __nv_bfloat16>(D, true);  // as under autocast
  if (D == 300) check_residual_norm<float, float>(D, false);
}

// The MLP's GELU kernels (models/gelu_kernels_device.h) for M = 150 rows (two row splits of 75,
// 9 or 10 per warp), g and dpre one matrix as gemm_dgelu_bgrad passes them: with the derivative,
// dpre = gelu_backward(g, pre) rounded as LibTorch rounds it, the bias gradient its column sums,
// act = gelu(pre); without, the column sums of dpre as given (and act); the GELU alone.
template <typename T>
void check_gelu_kernels(int64_t N) {
  const int64_t M = 150;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(N) + 3);
  const at::Tensor g = at::randn({M, N}, gen).to(dtype<T>()), pre = (at::randn({M, N}, gen) * 2).to(dtype<T>());
  ASSERT_EQ(dev::gelu_sum_splits(M), 2);
  auto workspace = at::empty({dev::gelu_bias_gradient_workspace(M, static_cast<int>(N))});
  const double tol = dtype<T>() == at::kFloat ? 1e-5 : 1e-2;  // bf16 outputs: an ulp is 2^-8
  const at::Tensor act_ref = at::gelu(pre.to(at::kFloat), "tanh").to(dtype<T>()).to(at::kFloat);
  const at::Tensor dpre_ref = at::gelu_backward(g.to(at::kFloat), pre.to(at::kFloat), "tanh").to(dtype<T>());
  for (bool derivative : {true, false}) {
    at::Tensor dpre = derivative ? g.clone() : dpre_ref.clone();  // the product's output, overwritten in place
    auto act = at::full({M, N}, std::nan(""), at::TensorOptions().dtype(dtype<T>()));
    auto dbias = at::full({N}, std::nan(""), at::TensorOptions().dtype(dtype<T>()));
    dev::launch_gelu_bias_gradient<T>(ptr<T>(dpre), ptr<T>(pre), mut<T>(dpre), mut<T>(act), mut<T>(dbias),
                                      mut<float>(workspace), M, static_cast<int>(N), derivative, nullptr);
    const at::Tensor bias_ref = dpre_ref.to(at::kFloat).sum(0).to(dtype<T>()).to(at::kFloat);
    const double ed = rel(dpre.to(at::kFloat), dpre_ref.to(at::kFloat)), eb = rel(dbias.to(at::kFloat), bias_ref),
                 ea = rel(act.to(at::kFloat), act_ref);
    std::cout << "[ emulated ] gelu bias gradient N " << N << " " << name(dtype<T>()) << " derivative " << derivative
              << ": dpre " << ed << ", bias gradient " << eb << ", act " << ea << "\n";
    EXPECT_LE(ed, tol);
    EXPECT_LE(eb, tol);
    EXPECT_LE(ea, tol);
    // The kernel's act and dpre are the plain GELU's and derivative's values element by element
    // (the kernel evaluates the tanh once for both): bit for bit.
    const at::Tensor pre_f = pre.to(at::kFloat).contiguous(), g_f = g.to(at::kFloat).contiguous();
    const at::Tensor act_f = act.to(at::kFloat), dpre_f = dpre.to(at::kFloat);
    int64_t act_differ = 0, dpre_differ = 0;
    for (int64_t i = 0; i < M * N; ++i) {
      const float p = pre_f.data_ptr<float>()[i];
      act_differ += act_f.data_ptr<float>()[i] != dev::round_to<T>(dev::gelu_tanh(p));
      const float gv = g_f.data_ptr<float>()[i];
      if (derivative) dpre_differ += dpre_f.data_ptr<float>()[i] != dev::round_to<T>(dev::gelu_tanh_backward(gv, p));
    }
    EXPECT_EQ(act_differ, 0);
    EXPECT_EQ(dpre_differ, 0);
  }
  // The column sums alone (dpre from the product's GELU' epilogue, no act: the kernel then reads
  // no pre and takes more rows at once): the same sums as with act.
  {
    at::Tensor dbias[2];
    for (int with_act = 0; with_act < 2; ++with_act) {
      const at::Tensor dpre = dpre_ref.clone();
      auto act = at::empty({M, N}, dpre.options());
      dbias[with_act] = at::full({N}, std::nan(""), dpre.options());
      dev::launch_gelu_bias_gradient<T>(ptr<T>(dpre), ptr<T>(pre), mut<T>(dpre), with_act ? mut<T>(act) : nullptr,
                                        mut<T>(dbias[with_act]), mut<float>(workspace), M, static_cast<int>(N),
                                        /*derivative=*/false, nullptr);
    }
    EXPECT_TRUE(dbias[0].equal(dbias[1])) << "N " << N;
    EXPECT_LE(rel(dbias[0].to(at::kFloat), dpre_ref.to(at::kFloat).sum(0).to(dtype<T>()).to(at::kFloat)), tol);
    // Added into fc1's bias gradient buffer (accumulate_bias): what it held plus the same sums,
    // within one rounding of the two roundings an add after them takes.
    const at::Tensor held = at::randn({N}, gen).to(dtype<T>());
    auto into = held.clone();
    const at::Tensor dpre = dpre_ref.clone();
    dev::launch_gelu_bias_gradient<T>(ptr<T>(dpre), ptr<T>(pre), mut<T>(dpre), static_cast<T*>(nullptr), mut<T>(into),
                                      mut<float>(workspace), M, static_cast<int>(N), /*derivative=*/false, nullptr,
                                      /*accumulate_bias=*/true);
    EXPECT_LE(rel(into.to(at::kFloat), (held.to(at::kFloat) + dbias[0].to(at::kFloat))), tol) << "N " << N;
    EXPECT_GT(rel(into.to(at::kFloat), held.to(at::kFloat)), 10 * tol) << "N " << N << ": nothing added";
  }
  // Eight columns a lane (N a multiple of 8) and two give the same bits: dpre, act and the sums.
  {
    at::Tensor out[2][3];  // [aligned, shifted][dpre, act, dbias]
    for (int k = 0; k < 2; ++k) {
      auto dpre = k == 0 ? g.clone() : shifted(g), pre_k = k == 0 ? pre.clone() : shifted(pre);
      auto act = k == 0 ? at::empty({M, N}, g.options()) : shifted(at::empty({M, N}, g.options()));
      auto dbias = at::empty({N}, g.options());
      dev::launch_gelu_bias_gradient<T>(ptr<T>(dpre), ptr<T>(pre_k), mut<T>(dpre), mut<T>(act), mut<T>(dbias),
                                        mut<float>(workspace), M, static_cast<int>(N), true, nullptr);
      out[k][0] = dpre, out[k][1] = act, out[k][2] = dbias;
    }
    for (int j = 0; j < 3; ++j) EXPECT_TRUE(out[0][j].equal(out[1][j])) << "N " << N << " output " << j;
  }
  // Without act: nothing written there.
  auto dpre = g.clone(), dbias = at::empty({N}, at::TensorOptions().dtype(dtype<T>()));
  dev::launch_gelu_bias_gradient<T>(ptr<T>(dpre), ptr<T>(pre), mut<T>(dpre), static_cast<T*>(nullptr), mut<T>(dbias),
                                    mut<float>(workspace), M, static_cast<int>(N), true, nullptr);
  EXPECT_LE(rel(dpre.to(at::kFloat), dpre_ref.to(at::kFloat)), tol);
  // The GELU alone, over an odd count too (the last pair has one element).
  for (int64_t n : {M * N, M * N - 1}) {
    auto act = at::full({M * N}, std::nan(""), at::TensorOptions().dtype(dtype<T>()));
    dev::launch_gelu<T>(ptr<T>(pre), mut<T>(act), n, nullptr);
    const double e = rel(act.narrow(0, 0, n).to(at::kFloat), act_ref.reshape({-1}).narrow(0, 0, n));
    EXPECT_LE(e, tol) << n;
    if (n < M * N) {
      EXPECT_TRUE(std::isnan(act[n].template item<float>())) << "wrote past the end";
    }
  }
}

// The sums over rows of per-sample (or per-split) parts: rows fewer than, equal to and more than
// the block's warps (each warp takes every 8th row), columns within one block and over several
// with the last partial; against the sum in double, in fp32 and rounded to bf16; and added into
// what the output holds (accumulate), rounded once.
TEST(EmulatedRowSum, AddsEveryRowOfEveryColumn) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int64_t N : {1, 8, 19, 128}) {
    for (int D : {5, 32, 75}) {
      const at::Tensor part = at::randn({N, D}, gen);
      const at::Tensor ref = part.to(at::kDouble).sum(0);
      auto out = at::full({D}, std::nan(""));
      dev::launch_sample_sum<float>(ptr<float>(part), mut<float>(out), N, D, nullptr);
      EXPECT_LE((out.to(at::kDouble) - ref).abs().max().item<double>(), 1e-5) << "N " << N << " D " << D;
      auto out_bf16 = at::empty({D}, at::TensorOptions().dtype(at::kBFloat16));
      dev::launch_sample_sum<__nv_bfloat16>(ptr<float>(part), mut<__nv_bfloat16>(out_bf16), N, D, nullptr);
      EXPECT_TRUE(out_bf16.to(at::kFloat).equal(out.to(at::kBFloat16).to(at::kFloat))) << "N " << N << " D " << D;
      // Added into what out holds (a gradient buffer): out + the same fp32 sum, rounded once.
      const at::Tensor held = at::randn({D}, gen);
      auto acc = held.clone();
      dev::launch_sample_sum<float>(ptr<float>(part), mut<float>(acc), N, D, nullptr, /*accumulate=*/true);
      EXPECT_TRUE(acc.equal(held + out)) << "N " << N << " D " << D;
      auto acc_bf16 = held.to(at::kBFloat16);
      dev::launch_sample_sum<__nv_bfloat16>(ptr<float>(part), mut<__nv_bfloat16>(acc_bf16), N, D, nullptr, true);
      const at::Tensor want = (held.to(at::kBFloat16).to(at::kFloat) + out).to(at::kBFloat16);
      EXPECT_TRUE(acc_bf16.equal(want)) << "N " << N << " D " << D;
    }
  }
}

// The qkv gradient: q's gradient laid out [N, H, T, hd] (contiguous), k's [N, T, H, hd] (the
// views' own layout, as a transposed tensor), v's missing (zeros) or contiguous; hd a multiple of
// 8 (a lane's eight columns in one head), even (two) and odd (they may straddle heads and parts);
// 150 rows in two splits of 75, more rows than a warp's 4 x 8 per pass. Against the stack, bit
// for bit, and the column sums in double.
template <typename T>
void check_qkv_grad(int64_t hd, bool with_v) {
  const int64_t N = 3, Tn = 50, H = 3, D = H * hd, M = N * Tn;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(hd) + (with_v ? 100 : 0));
  const auto opt = at::TensorOptions().dtype(dtype<T>());
  const at::Tensor gq = at::randn({N, H, Tn, hd}, gen).to(dtype<T>());                   // contiguous
  const at::Tensor gk = at::randn({N, Tn, H, hd}, gen).to(dtype<T>()).transpose(1, 2);  // [N, H, T, hd] view
  const at::Tensor gv = with_v ? at::randn({N, H, Tn, hd}, gen).to(dtype<T>()) : at::zeros({N, H, Tn, hd}, opt);
  dev::QkvGrads<T> in{};
  const at::Tensor parts[3] = {gq, gk, gv};
  for (int p = 0; p < 3; ++p) {
    in.part[p] = p == 2 && !with_v ? nullptr : ptr<T>(parts[p]);
    in.stride_n[p] = parts[p].stride(0);
    in.stride_h[p] = parts[p].stride(1);
    in.stride_t[p] = parts[p].stride(2);
  }
  ASSERT_EQ(dev::gelu_sum_splits(M), 2);
  auto g = at::full({N, Tn, 3 * D}, std::nan(""), opt), bias = at::full({3 * D}, std::nan(""), opt);
  auto workspace = at::empty({dev::qkv_grad_workspace(M, static_cast<int>(D))});
  dev::launch_qkv_grad<T>(in, mut<T>(g), mut<T>(bias), mut<float>(workspace), M, Tn, static_cast<int>(D),
                          static_cast<int>(hd), nullptr);
  const at::Tensor ref = at::stack({gq.transpose(1, 2), gk.transpose(1, 2), gv.transpose(1, 2)}, 2)  // [N, T, 3, H, hd]
                             .reshape({N, Tn, 3 * D});
  EXPECT_TRUE(g.equal(ref)) << "hd " << hd << " v " << with_v;
  const at::Tensor bias_ref = ref.to(at::kDouble).sum(at::IntArrayRef{0, 1});
  const double tol = dtype<T>() == at::kFloat ? 1e-5 : 4e-2;  // bf16: the sum rounded to 2^-8 relative
  const double err = (bias.to(at::kDouble) - bias_ref).abs().max().template item<double>();
  EXPECT_LE(err, tol * (1 + bias_ref.abs().max().template item<double>())) << "hd " << hd << " v " << with_v;
  // Into a gradient 2 elements off 8-element alignment (two columns a lane where hd allows 8): the
  // same bits, the sums too.
  auto g_shifted = shifted(at::full({N, Tn, 3 * D}, std::nan(""), opt)), bias2 = at::empty({3 * D}, opt);
  dev::launch_qkv_grad<T>(in, mut<T>(g_shifted), mut<T>(bias2), mut<float>(workspace), M, Tn, static_cast<int>(D),
                          static_cast<int>(hd), nullptr);
  EXPECT_TRUE(g_shifted.equal(g)) << "hd " << hd;
  EXPECT_TRUE(bias2.equal(bias)) << "hd " << hd;
  // Without the sums: the same gradient, nothing summed.
  auto g2 = at::full({N, Tn, 3 * D}, std::nan(""), opt);
  dev::launch_qkv_grad<T>(in, mut<T>(g2), static_cast<T*>(nullptr), static_cast<float*>(nullptr), M, Tn,
                          static_cast<int>(D), static_cast<int>(hd), nullptr);
  EXPECT_TRUE(g2.equal(ref));
}

TEST(EmulatedQkvGrad, StacksTheThreeGradientsAndSumsTheColumns) {
  for (int64_t hd : {4, 5, 8})
    for (bool with_v : {true, false}) {
      check_qkv_grad<float>(hd, with_v);
      check_qkv_grad<__nv_bfloat16>(hd, with_v);
    }
}

class EmulatedGelu : public ::testing::TestWithParam<int> {};

TEST_P(EmulatedGelu, MatchesLibTorch) {
  check_gelu_kernels<float>(GetParam());
  check_gelu_kernels<__nv_bfloat16>(GetParam());
}

// Within a block of 64 columns, odd (no paired access), several blocks with the last partial; a
// multiple of 8 (eight columns a lane) over two blocks of 256, the last partial.
INSTANTIATE_TEST_SUITE_P(Widths, EmulatedGelu, ::testing::Values(20, 75, 300, 264));

// Below a warp, between the 128- and 256-thread blocks, above both.
INSTANTIATE_TEST_SUITE_P(Widths, Emulated, ::testing::Values(20, 300, 1100));  // 2, 4 and 9 columns per thread

template <typename T>
void check_transpose(int64_t rows, int64_t cols) {
  const at::Tensor in = at::randn({rows, cols}).to(dtype<T>());
  const at::Tensor out = at::full({cols, rows}, -7.0, in.options());
  dev::launch_transpose(ptr<T>(in), mut<T>(out), rows, cols, /*accumulate=*/false, nullptr);
  EXPECT_TRUE(torch::equal(out, in.t())) << name(dtype<T>()) << " [" << rows << ", " << cols << "]";
  // Adding into out: the sum in fp32, rounded once to T, as LibTorch's add.
  const at::Tensor held = at::randn({cols, rows}).to(dtype<T>());
  const at::Tensor sum = held.clone();
  dev::launch_transpose(ptr<T>(in), mut<T>(sum), rows, cols, /*accumulate=*/true, nullptr);
  EXPECT_TRUE(torch::equal(sum, held + in.t())) << name(dtype<T>()) << " [" << rows << ", " << cols << "], adding";
}

// Whole tiles, partial ones on either side, a single row and a single column; both sizes even
// (pairs in one access) and odd; written and added.
TEST(EmulatedTranspose, EveryElementToItsPlace) {
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{64, 32}, {130, 72}, {37, 70}, {70, 37}, {1, 45}, {45, 1}, {2, 2}}) {
    check_transpose<float>(rows, cols);
    check_transpose<__nv_bfloat16>(rows, cols);
  }
}

}  // namespace

