// The fused ops' autograd nodes (models/fused_kernels.cpp) on the CPU. This program links the
// kernels' launchers (models/fused_kernels_cuda.cu) compiled for the host over cuda_emulation.h,
// in place of the CUDA ones in nt_models_cuda, and lets the ops take CPU tensors
// (fused_kernels_take_cpu_tensors_for_tests): so what wraps the kernels runs in CI too — the
// arguments Function::apply records, the indices needs_input_grad takes, the gradients' count,
// order and dtypes, the bias gradient taken from the residuals' kernels. Against LibTorch's ops on
// the same values: the outputs and every gradient, fp32 and bf16 operands, with and without the
// branch's bias, the norm that hands x on. (The kernels' arithmetic itself is checked in
// test_fused_kernels_emulated, and on a GPU in test_fused_kernels.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "cuda_emulation.h"
#include "heap_in_use.h"
#include "max_rel_diff.h"
#include "models/fused_kernels.h"
#include "models/linear_backward.h"
#include "models/attention_cuda.cu"      // the attention's launchers, compiled for the CPU
#include "models/fused_kernels_cuda.cu"  // the launchers, compiled for the CPU
#include "models/modulated_norm.h"

// The CUDA runtime calls of the launchers (core/cuda_check.h), answered on the CPU: the device of
// a CPU tensor (-1) is current, and nothing fails.
cudaError_t cudaGetDevice(int* device) {
  *device = -1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t) { return "cudaSuccess"; }
const char* cudaGetErrorString(cudaError_t) { return "no error"; }

namespace {

// A fresh leaf that requires grad, in dtype dt (never t itself: .to(t's own dtype) returns t).
at::Tensor leaf(const at::Tensor& t, at::ScalarType dt) { return t.to(dt).detach().clone().requires_grad_(true); }

constexpr auto* rel = &nt::test::max_rel_diff;  // max_rel_diff.h

class FusedAutograd : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nt::fused_kernels_built()) GTEST_SKIP() << "built without nvcc: the ops refuse before any node";
    // This program's stand-ins for the CUDA runtime would answer LibTorch's own calls as well; on a
    // machine with a GPU, test_fused_kernels runs the same nodes there.
    if (torch::cuda::is_available()) GTEST_SKIP() << "a CUDA device: see test_fused_kernels";
    nt::fused_kernels_take_cpu_tensors_for_tests(true);
  }
  void TearDown() override { nt::fused_kernels_take_cpu_tensors_for_tests(false); }
};

// Outputs and gradients of one run, with their names, against the reference run's.
void expect_close(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& ref,
                  const std::vector<std::string>& what, bool bf16, const std::string& op) {
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_TRUE(got[i].defined()) << op << ": " << what[i] << " missing";
    EXPECT_EQ(got[i].scalar_type(), ref[i].scalar_type()) << op << ": " << what[i];
    const double e = rel(got[i], ref[i]);
    std::cout << "[ autograd ] " << op << (bf16 ? " bf16 " : " fp32 ") << what[i] << ": " << e << "\n";
    EXPECT_LE(e, bf16 ? 2e-2 : 1e-4) << op << (bf16 ? " bf16 " : " fp32 ") << what[i];
  }
}

constexpr int64_t N = 2, T = 5, D = 36;  // rows narrower than a block: every lane path runs

// The block's first norm: y = modulate(LayerNorm(x)), alone and handing x on (x used twice).
TEST_F(FusedAutograd, ModulatedNormAndPassingMatchLibTorchOps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{3});
  const auto x0 = at::randn({N, T, D}, gen) * 2, mod0 = at::randn({N, 2 * D}, gen) * 0.5;
  const auto py = at::randn({N, T, D}, gen), px = at::randn({N, T, D}, gen);
  for (const bool bf16 : {false, true})
    for (const bool passing : {false, true}) {
      auto run_one = [&](bool fused) {
        auto x = leaf(x0, at::kFloat), mod = leaf(mod0, bf16 ? at::kBFloat16 : at::kFloat);
        auto c = mod.chunk(2, 1);  // shift, scale [N, D]: row stride 2D
        at::Tensor y, x_on = x;
        if (!fused) {
          y = nt::modulated_norm(x, c[0], c[1], false);
        } else if (passing) {
          auto yx = nt::fused_modulated_norm_passing(x, c[0], c[1], nt::kModulatedNormEps, bf16);
          y = yx[0], x_on = yx[1];
        } else {
          y = nt::fused_modulated_norm(x, c[0], c[1], nt::kModulatedNormEps, bf16);
        }
        at::Tensor loss = (y.to(at::kFloat) * py).sum();
        if (passing) loss = loss + (x_on * px).sum();
        loss.backward();
        return std::vector<at::Tensor>{y.detach().to(at::kFloat), x.grad(), mod.grad()};
      };
      expect_close(run_one(true), run_one(false), {"y", "grad x", "grad shift/scale"}, bf16,
                   passing ? "norm passing x" : "norm");
    }
}

// The gated residual h = x + gate * branch and the residual + next norm {h, n}, with the
// branch's product taking its bias detached and the op giving the bias its gradient, or without.
TEST_F(FusedAutograd, ResidualsMatchLibTorchOpsWithAndWithoutTheBranchBias) {
  constexpr int64_t K = 24;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{5});
  const auto x0 = at::randn({N, T, D}, gen), mod0 = at::randn({N, 3 * D}, gen) * 0.5;
  const auto a0 = at::randn({N, T, K}, gen), w0 = at::randn({D, K}, gen) * 0.2, bias0 = at::randn({D}, gen);
  const auto ph = at::randn({N, T, D}, gen), pn = at::randn({N, T, D}, gen);
  for (const bool with_norm : {false, true})
    for (const bool bf16 : {false, true})
      for (const bool with_bias : {false, true}) {
        const auto dt = bf16 ? at::kBFloat16 : at::kFloat;
        auto run_one = [&](bool fused) {
          auto x = leaf(x0, at::kFloat), mod = leaf(mod0, dt), a = leaf(a0, dt), w = leaf(w0, dt),
               bias = leaf(bias0, dt);
          auto c = mod.chunk(3, 1);  // gate, shift, scale [N, D]
          const bool bias_here = fused && with_bias;  // the op, not the product, gives its gradient
          const auto branch = at::linear(a, w, bias_here ? bias.detach() : bias);  // [N, T, D]
          const at::Tensor b = bias_here ? bias : at::Tensor();
          at::Tensor loss;
          if (with_norm) {
            std::vector<at::Tensor> hn;
            if (fused) {
              hn = nt::fused_residual_norm(x, c[0], branch, c[1], c[2], nt::kModulatedNormEps, bf16, b);
            } else {
              const auto h = at::addcmul(x, c[0].unsqueeze(1), branch);
              hn = {h, nt::modulated_norm(h, c[1], c[2], false)};
            }
            loss = (hn[0] * ph).sum() + (hn[1].to(at::kFloat) * pn).sum();
          } else {
            const auto h = fused ? nt::fused_gated_residual(x, c[0], branch, b)
                                 : at::addcmul(x, c[0].unsqueeze(1), branch);
            loss = (h * ph).sum();
          }
          loss.backward();
          return std::vector<at::Tensor>{loss.detach().reshape({1}), bias.grad(), w.grad(), a.grad(), x.grad(),
                                         mod.grad()};
        };
        expect_close(run_one(true), run_one(false),
                     {"loss", "grad bias", "grad weight", "grad input", "grad x", "grad gate/shift/scale"}, bf16,
                     std::string(with_norm ? "residual norm" : "gated residual") +
                         (with_bias ? " with the bias" : " without the bias"));
      }
}

// q, k, v split from qkv's output, against the output's own unbind: through the composite
// attention (gradients with the strides of its products' backward) or with v unused (its
// gradient missing: zeros), with the product's bias detached and the split giving it its gradient
// (in the output's dtype, or an fp32 bias that the product used in bf16, as under autocast) or
// without a bias gradient from the split.
TEST_F(FusedAutograd, QkvSplitMatchesUnbindWithAndWithoutTheBias) {
  constexpr int64_t K = 24, H = 3, hd = 4, C = 3 * H * hd;  // C: qkv's output width
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{7});
  const auto a0 = at::randn({N, T, K}, gen), w0 = at::randn({C, K}, gen) * 0.2, bias0 = at::randn({C}, gen);
  const auto po = at::randn({N, H, T, hd}, gen), pq = at::randn({N, H, T, hd}, gen);
  for (const bool bf16 : {false, true})
    for (const bool fp32_bias : {false, true})
      for (const bool with_bias : {false, true})
        for (const bool use_v : {false, true}) {
          if (fp32_bias && !bf16) continue;
          const auto dt = bf16 ? at::kBFloat16 : at::kFloat;
          auto run_one = [&](bool fused) {
            auto a = leaf(a0, dt), w = leaf(w0, dt), bias = leaf(bias0, fp32_bias ? at::kFloat : dt);
            const bool bias_here = fused && with_bias;  // the split, not the product, gives its gradient
            const auto b = bias.to(dt);                 // the bias as the product takes it
            const auto out = at::linear(a, w, bias_here ? b.detach() : b);  // [N, T, C]
            std::vector<at::Tensor> qkv;
            if (fused) {
              qkv = nt::fused_qkv_split(out, with_bias ? bias : at::Tensor(), H);
            } else {
              for (const auto& part : out.view({N, T, 3, H, hd}).unbind(2)) qkv.push_back(part.transpose(1, 2));
            }
            at::Tensor loss = (qkv[0].to(at::kFloat) * pq).sum();
            if (use_v) {
              const auto att = at::softmax(at::matmul(qkv[0], qkv[1].transpose(-2, -1)).to(at::kFloat), -1);
              loss = loss + (at::matmul(att.to(dt), qkv[2]).to(at::kFloat) * po).sum();
            } else {
              loss = loss + (qkv[1].to(at::kFloat) * po).sum();
            }
            loss.backward();
            return std::vector<at::Tensor>{loss.detach().reshape({1}), qkv[0].detach(), qkv[2].detach(), bias.grad(),
                                           w.grad(), a.grad()};
          };
          expect_close(run_one(true), run_one(false), {"loss", "q", "v", "grad bias", "grad weight", "grad input"},
                       bf16,
                       std::string("qkv split") + (with_bias ? " with the bias" : " without the bias") +
                           (fp32_bias ? " (fp32)" : "") + (use_v ? "" : ", v unused"));
        }
}

// The attention read in place from qkv's output (fused_attention) against the composite on the
// output's unbind (fp32 scores and softmax, as LibTorch's kernels keep them): the output, the
// gradients of the product's input, weight and bias, with the product's bias detached and the
// attention giving it its gradient or with the bias in the product. bf16 and fp32 (3xTF32
// kernels: TREAD's block after a route); T = 19: a partial tile; hd = 24: the bf16 kernels' k8 step.
TEST_F(FusedAutograd, AttentionMatchesTheCompositeWithAndWithoutTheBias) {
  constexpr int64_t K = 20, H = 2, hd = 24, Dh = H * hd, C = 3 * Dh, Ta = 19;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{11});
  const auto a0 = at::randn({N, Ta, K}, gen), w0 = at::randn({C, K}, gen) * 0.4, bias0 = at::randn({C}, gen);
  const auto po = at::randn({N, Ta, Dh}, gen);
  for (const bool bf16 : {true, false})
  for (const bool with_bias : {false, true}) {
    const auto dt = bf16 ? at::kBFloat16 : at::kFloat;
    auto run_one = [&](bool fused) {
      auto a = leaf(a0, dt), w = leaf(w0, dt), bias = leaf(bias0, dt);
      const bool bias_here = fused && with_bias;  // the attention, not the product, gives its gradient
      const auto out = at::linear(a, w, bias_here ? bias.detach() : bias);  // [N, T, C]
      at::Tensor o;                                                          // [N, T, Dh]
      if (fused) {
        o = nt::fused_attention(out, with_bias ? bias : at::Tensor(), H);
      } else {
        auto parts = out.view({N, Ta, 3, H, hd}).unbind(2);  // each [N, T, H, hd]
        const auto q = parts[0].transpose(1, 2), k = parts[1].transpose(1, 2), v = parts[2].transpose(1, 2);
        const auto s = at::matmul(q.to(at::kFloat), k.to(at::kFloat).transpose(-2, -1)) / std::sqrt(double(hd));
        const auto p = at::softmax(s, -1).to(dt);
        o = at::matmul(p, v).transpose(1, 2).reshape({N, Ta, Dh});
      }
      const at::Tensor loss = (o.to(at::kFloat) * po).sum();
      loss.backward();
      return std::vector<at::Tensor>{o.detach(), bias.grad(), w.grad(), a.grad()};
    };
    expect_close(run_one(true), run_one(false), {"o", "grad bias", "grad weight", "grad input"}, bf16,
                 std::string("attention") + (with_bias ? " with the bias" : " with the bias in the product"));
  }
}

// Bias gradients added in place (models/linear_backward.h: WeightGradsInPlace): a bias whose
// .grad() already holds values of the kernels' dtype ends as those values plus its gradient, in
// the same memory, and autograd hands it none (its hook never runs), for each node whose kernel
// sums a bias gradient; outside the scope autograd's AccumulateGrad adds as before. bf16 and fp32.
TEST_F(FusedAutograd, BiasGradientsAddedIntoTheirBuffersInPlace) {
  constexpr int64_t H = 2, hd = 24, Dq = H * hd, C = 3 * Dq, K = 20;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{13});
  const auto x0 = at::randn({N, T, D}, gen), mod0 = at::randn({N, 3 * D}, gen) * 0.5;
  const auto branch0 = at::randn({N, T, D}, gen), bias0 = at::randn({D}, gen), held0 = at::randn({D}, gen);
  const auto a0 = at::randn({N, T, K}, gen), w0 = at::randn({C, K}, gen) * 0.3, qkv_bias0 = at::randn({C}, gen);
  const auto qkv_held0 = at::randn({C}, gen), pn = at::randn({N, T, D}, gen), po = at::randn({N, T, Dq}, gen);
  // Each node's loss of its bias (the branch's, or qkv's, as the fused path hands them).
  const std::vector<std::pair<std::string, std::function<at::Tensor(const at::Tensor&, at::ScalarType)>>> nodes = {
      {"gated residual",
       [&](const at::Tensor& bias, at::ScalarType dt) {
         auto c = mod0.to(dt).chunk(3, 1);
         return (nt::fused_gated_residual(x0, c[0], branch0.to(dt), bias) * pn).sum();
       }},
      {"residual norm",
       [&](const at::Tensor& bias, at::ScalarType dt) {
         auto c = mod0.to(dt).chunk(3, 1);
         auto hn = nt::fused_residual_norm(x0, c[0], branch0.to(dt), c[1], c[2], nt::kModulatedNormEps,
                                           dt == at::kBFloat16, bias);
         return (hn[0] * pn).sum() + (hn[1].to(at::kFloat) * pn).sum();
       }},
      {"qkv split",
       [&](const at::Tensor& bias, at::ScalarType dt) {
         const auto out = at::linear(a0.to(dt), w0.to(dt), bias.detach());  // [N, T, C]
         auto qkv = nt::fused_qkv_split(out, bias, H);
         return (at::matmul(qkv[0], qkv[1].transpose(-2, -1)).to(at::kFloat)).sum() +
                (qkv[2].to(at::kFloat) * qkv[2].to(at::kFloat)).sum();
       }},
      {"attention", [&](const at::Tensor& bias, at::ScalarType dt) {
         const auto out = at::linear(a0.to(dt), w0.to(dt), bias.detach());  // [N, T, C]
         return (nt::fused_attention(out, bias, H).to(at::kFloat) * po).sum();
       }}};
  for (const bool bf16 : {false, true})
    for (const auto& [name, loss_of] : nodes) {
      const auto dt = bf16 ? at::kBFloat16 : at::kFloat;
      const bool qkv = name == "qkv split" || name == "attention";
      const at::Tensor b0 = qkv ? qkv_bias0 : bias0, held = (qkv ? qkv_held0 : held0).to(dt);
      // bias.grad() holding `held`; `in_place`: inside the scope. Returns {grad, hook calls}.
      auto run_one = [&](bool in_place) {
        auto bias = leaf(b0, dt);
        bias.mutable_grad() = held.clone();
        const void* memory = bias.grad().data_ptr();
        int delivered = 0;
        bias.register_hook([&delivered](const at::Tensor& g) { delivered += g.defined(); });
        const at::Tensor loss = loss_of(bias, dt);
        {
          nt::WeightGradsInPlace scope(in_place, /*any_device=*/true);
          loss.backward();
        }
        EXPECT_EQ(bias.grad().data_ptr(), memory) << name;
        return std::make_pair(bias.grad(), delivered);
      };
      const auto [added, delivered_in_place] = run_one(true);
      const auto [accumulated, delivered] = run_one(false);
      EXPECT_EQ(delivered_in_place, 0) << name << ": autograd got a bias gradient inside the scope";
      EXPECT_EQ(delivered, 1) << name;
      const double e = rel(added, accumulated), moved = rel(added, held);
      std::cout << "[ autograd ] " << name << (bf16 ? " bf16" : " fp32") << " bias gradient added in place: " << e
                << " (from what .grad() held: " << moved << ")\n";
      EXPECT_LE(e, bf16 ? 2e-2 : 1e-5) << name;
      EXPECT_GT(moved, 1e-2) << name << ": nothing added";
    }
}

// The test seam is off by default: CPU tensors are refused, as in the trainer.
TEST(FusedAutogradSeam, CpuTensorsRefusedUnlessATestAsks) {
  const auto x = at::randn({N, T, D}), mod = at::randn({N, 2 * D});
  auto c = mod.chunk(2, 1);
  EXPECT_FALSE(nt::fused_modulated_norm_supports(x, c[0], c[1]));
  EXPECT_THROW(nt::fused_modulated_norm(x, c[0], c[1], 1e-6, false), std::runtime_error);
}

}  // namespace

// What the residual + next norm keeps for backward: x (its input, which the block keeps anyway),
// not h = x + gate * branch, which its backward forms again. Measured as the heap the forward
// leaves held with h dropped by the caller: n's output and the row statistics, not h's [N, T, D]
// fp32 as well (before: both).
TEST_F(FusedAutograd, ResidualNormKeepsItsInputNotTheResidual) {
  constexpr int64_t Nb = 2, Tb = 64, Db = 256;  // h 128 KB: well above the node's own ~20 KB
  auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t{11});
  const auto x = leaf(at::randn({Nb, Tb, Db}, gen), at::kFloat), mod = leaf(at::randn({Nb, 3 * Db}, gen), at::kFloat);
  const auto branch = leaf(at::randn({Nb, Tb, Db}, gen), at::kFloat);
  const auto c = mod.chunk(3, 1);  // gate, shift, scale [N, D]
  const double h_bytes = Nb * Tb * Db * 4.0, y_bytes = h_bytes;
  const double kept = nt::test::heap_kept_by_forward([&] {
    return nt::fused_residual_norm(x, c[0], branch, c[1], c[2], nt::kModulatedNormEps, false)[1];
  });
  std::cout << "[ kept ] " << kept << " bytes; n " << y_bytes << ", h " << h_bytes << "\n";
  EXPECT_GE(kept, y_bytes);
  EXPECT_LT(kept, y_bytes + h_bytes / 2);
}
