// Attention in fp32 products (models/fp32_attention.h). On the CPU: values and q, k, v gradients
// against the explicit softmax in fp64, with q, k, v the strided views DiT takes from its qkv
// product; in chunks of one and of two samples as in one chunk; the output laid out as LibTorch's
// kernels lay it out; the forward keeps no scores for backward; TF32's setting is left as it was.
// On a GPU (skipped elsewhere), with TF32 allowed in the process: against fp64 to fp32's accuracy
// (TF32 products would miss it by orders of magnitude) and against LibTorch's memory-efficient
// kernel; the project's 3xTF32 kernels (fused_attention on fp32, train.fp32_attention = "fused")
// against fp64 likewise, and the same bits twice.
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "heap_in_use.h"
#include "max_rel_diff.h"
#include "models/fp32_attention.h"
#include "models/fused_kernels.h"

namespace {

using nt::test::max_rel_diff;

// q, k, v [N, H, T, hd] as views of one [N, T, 3, H, hd] product output (DiT's layout).
std::vector<at::Tensor> qkv_views(const at::Tensor& qkv) {
  auto parts = qkv.unbind(2);
  return {parts[0].transpose(1, 2), parts[1].transpose(1, 2), parts[2].transpose(1, 2)};
}

struct Result {
  at::Tensor o, gqkv;
};

// o = attention(q, k, v) of a fresh leaf copy of `qkv0`, then backward of sum(o * probe).
template <typename F>
Result run(const at::Tensor& qkv0, const at::Tensor& probe, F&& attention) {
  auto qkv = qkv0.clone().requires_grad_(true);
  const auto p = qkv_views(qkv);
  const at::Tensor o = attention(p[0], p[1], p[2]);
  (o * probe).sum().backward();
  return {o.detach(), qkv.grad()};
}

at::Tensor explicit_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  return at::matmul(at::softmax(at::matmul(q, k.transpose(-2, -1)) * scale, -1), v);
}

TEST(Fp32Attention, ExplicitSoftmaxInFp64ValuesAndGradients) {
  torch::manual_seed(1);
  const int64_t N = 3, T = 10, H = 2, hd = 8;
  const auto qkv = torch::randn({N, T, 3, H, hd}), probe = torch::randn({N, H, T, hd});
  const Result want = run(qkv.to(at::kDouble), probe.to(at::kDouble), explicit_attention);
  for (int64_t chunk : {nt::kFp32AttentionChunkScores, H * T * T, 2 * H * T * T}) {  // one chunk, 1 and 2 samples
    const Result got = run(qkv, probe, [&](auto& q, auto& k, auto& v) { return nt::fp32_attention(q, k, v, chunk); });
    const std::string which = "chunk of " + std::to_string(chunk) + " scores";
    EXPECT_EQ(got.o.scalar_type(), at::kFloat) << which;
    EXPECT_LE(max_rel_diff(got.o, want.o), 1e-6) << which;
    EXPECT_LE(max_rel_diff(got.gqkv, want.gqkv), 1e-5) << which;
    EXPECT_TRUE(got.o.transpose(1, 2).is_contiguous()) << which;  // [N, T, H, hd] memory, as SDPA's
  }
}

TEST(Fp32Attention, ForwardKeepsNoScores) {
  torch::manual_seed(2);
  const int64_t N = 2, T = 256, H = 2, hd = 8;  // scores 1 MB; q, k, v and o 32 KB each
  const auto qkv = torch::randn({N, T, 3, H, hd}, torch::requires_grad());
  const auto p = qkv_views(qkv);
  const double kept = nt::test::heap_kept_by_forward([&] { return nt::fp32_attention(p[0], p[1], p[2]); });
  EXPECT_LT(kept, 256.0 * 1024) << "bytes kept";  // the output and bookkeeping, not the scores
  EXPECT_TRUE(qkv.grad().defined());
}

TEST(Fp32Attention, LeavesTheTF32SettingAsItWas) {
  const bool before = at::globalContext().allowTF32CuBLAS();
  for (bool allow : {true, false}) {
    at::globalContext().setAllowTF32CuBLAS(allow);
    const auto qkv = torch::randn({1, 4, 3, 1, 8}, torch::requires_grad());
    const auto p = qkv_views(qkv);
    nt::fp32_attention(p[0], p[1], p[2]).sum().backward();
    EXPECT_EQ(at::globalContext().allowTF32CuBLAS(), allow);
  }
  at::globalContext().setAllowTF32CuBLAS(before);
}

TEST(Fp32Attention, RejectsOtherDtypesAndShapes) {
  const auto q = torch::randn({1, 1, 4, 8});
  EXPECT_THROW(nt::fp32_attention(q.to(at::kDouble), q, q), c10::Error);
  EXPECT_THROW(nt::fp32_attention(q[0], q, q), c10::Error);
}

// DiT-XL/2's head width (72) and TREAD-XL/2's fp32 block's tokens (256), a few samples.
TEST(Fp32Attention, CudaFp32AccurateWithTF32Allowed) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(3);
  const int64_t N = 4, T = 256, H = 4, hd = 72;
  const auto qkv = torch::randn({N, T, 3, H, hd}) * 2, probe = torch::randn({N, H, T, hd});
  const Result want = run(qkv.to(at::kDouble), probe.to(at::kDouble), explicit_attention);
  const bool before = at::globalContext().allowTF32CuBLAS();
  at::globalContext().setAllowTF32CuBLAS(true);  // as train.precision = "bf16" sets it
  const Result got = run(qkv.cuda(), probe.cuda(), [](auto& q, auto& k, auto& v) { return nt::fp32_attention(q, k, v); });
  at::globalContext().setAllowTF32CuBLAS(before);
  EXPECT_LE(max_rel_diff(got.o.cpu(), want.o), 1e-5);
  EXPECT_LE(max_rel_diff(got.gqkv.cpu(), want.gqkv), 1e-5);
#if TORCH_VERSION_MAJOR >= 2
  const Result sdpa = run(qkv.cuda(), probe.cuda(), [](auto& q, auto& k, auto& v) {
    return at::scaled_dot_product_attention(q, k, v);  // the memory-efficient kernel for fp32
  });
  EXPECT_LE(max_rel_diff(sdpa.o.cpu(), want.o), 1e-4);
  EXPECT_LE(max_rel_diff(sdpa.gqkv.cpu(), want.gqkv), 1e-4);
#endif
}

// fused_attention on fp32 (3xTF32 products) reading q, k, v in place from the qkv output [N, T, 3D]:
// TREAD-XL/2's fp32 block (T 256, width 72), T 128, a partial tile at width 24 and a sequence
// streamed through the slots (T 300).
TEST(Fp32Attention, CudaFusedKernelsAccurateAndDeterministic) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!nt::fused_kernels_built()) GTEST_SKIP() << "built without nvcc";
  struct Shape {
    int64_t N, T, H, hd;
  };
  const bool before = at::globalContext().allowTF32CuBLAS();
  at::globalContext().setAllowTF32CuBLAS(true);  // as train.precision = "bf16" sets it: not used here
  for (const Shape sh : {Shape{4, 256, 4, 72}, Shape{2, 128, 2, 72}, Shape{3, 37, 2, 24}, Shape{1, 300, 2, 64}}) {
    const int64_t N = sh.N, T = sh.T, H = sh.H, hd = sh.hd, D = H * hd;
    torch::manual_seed(5 + T);
    const auto qkv = torch::randn({N, T, 3, H, hd}) * 2, probe = torch::randn({N, H, T, hd});
    const Result want = run(qkv.to(at::kDouble), probe.to(at::kDouble), explicit_attention);
    auto fused = [&] {
      auto x = qkv.cuda().requires_grad_(true);  // [N, T, 3, H, hd]
      EXPECT_TRUE(nt::fused_attention_supports(x.view({N, T, 3 * D}), H));
      const auto o = nt::fused_attention(x.view({N, T, 3 * D}), at::Tensor(), H).view({N, T, H, hd}).transpose(1, 2);
      (o * probe.cuda()).sum().backward();
      return Result{o.detach().cpu(), x.grad().cpu()};
    };
    const Result got = fused(), again = fused();
    const std::string shape = "T " + std::to_string(T) + " hd " + std::to_string(hd);
    const double e_o = max_rel_diff(got.o, want.o), e_g = max_rel_diff(got.gqkv, want.gqkv);
    std::cout << "[ fp32     ] fused (3xTF32) " << shape << ": output " << e_o << ", grad qkv " << e_g << "\n";
    EXPECT_LE(e_o, 1e-5) << shape;
    EXPECT_LE(e_g, 1e-5) << shape;
    EXPECT_TRUE(torch::equal(got.o, again.o)) << shape;
    EXPECT_TRUE(torch::equal(got.gqkv, again.gqkv)) << shape;
  }
  at::globalContext().setAllowTF32CuBLAS(before);
}

}  // namespace
