// The attention kernels (models/attention_kernels_device.h) run on the CPU through
// cuda_emulation.h, whose warp_mma, warp_mma_tf32 and warp_ldmatrix move the fragments' elements by
// the PTX ISA's layouts: the forward (o and the rows' log-sums) and both backward kernels (q's, k's
// and v's gradients) against softmax(q k^T / sqrt(hd)) v and its gradients by LibTorch's autograd in
// fp64, from the same bf16 (or fp32: the 3xTF32 kernels, within fp32's accuracy) values. q, k, v are read in place from a qkv output [N, T, 3, H, hd]
// and their gradients written there, as fused_attention does. Shapes: head widths with and
// without a k8 step (24 and 72 against 32), sequences with partial tiles, several key tiles (the
// online softmax's rescaling), a second block of queries (T = 130), and sequences longer than
// shared memory's slots hold at once (T = 300: tiles streamed, slots refilled; T = 1024 at width 72
// took 5 minutes here and runs on a GPU instead, in FusedCudaAttention.MatchesLibTorchsAttention). The same code runs on a GPU
// (tests/models/test_fused_kernels.cpp, FusedCuda.Attention*).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <string>

#include "cuda_emulation.h"
#include "max_rel_diff.h"
#include "models/attention_kernels_device.h"

namespace {

namespace dev = nt::cuda::device;
using bf16 = __nv_bfloat16;
constexpr auto* rel = &nt::test::max_rel_diff;  // max_rel_diff.h

struct Result {
  at::Tensor o, lse, g_qkv;  // [N, T, D] as qkv, [N * H, T] fp32, [N, T, 3D] as qkv
};

// The three kernels on qkv [N, T, 3D] (E: bf16 or fp32, contiguous) and o's gradient `go` [N, T, D].
template <typename E, int HD>
Result run_kernels(const at::Tensor& qkv, const at::Tensor& go, int64_t H) {
  const int64_t N = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / 3;
  Result r;
  r.o = at::full({N, T, D}, NAN, qkv.options());
  r.lse = at::full({N * H, T}, NAN, qkv.options().dtype(at::kFloat));
  r.g_qkv = at::full({N, T, 3 * D}, NAN, qkv.options());
  auto delta = at::full({N * H, T}, NAN, qkv.options().dtype(at::kFloat));
  auto* p = reinterpret_cast<const E*>(qkv.data_ptr());
  auto* g = reinterpret_cast<E*>(r.g_qkv.data_ptr());
  dev::AttnArgs<E> a{};
  a.q = p;
  a.k = p + D;
  a.v = p + 2 * D;
  a.s_n = T * 3 * D;
  a.s_h = HD;
  a.s_t = 3 * D;
  a.o = reinterpret_cast<E*>(r.o.data_ptr());
  a.lse = r.lse.data_ptr<float>();
  a.dout = reinterpret_cast<const E*>(go.data_ptr());
  a.d_n = T * D;
  a.d_h = HD;
  a.d_t = D;
  a.delta = delta.data_ptr<float>();
  a.dq = g;
  a.dk = g + D;
  a.dv = g + 2 * D;
  a.H = static_cast<int>(H);
  a.T = static_cast<int>(T);
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HD)));
  auto launch = [&](auto kernel, dim3 grid, int threads, int64_t bytes) {
    NT_LAUNCH_SHARED(kernel, grid, dim3(threads), static_cast<size_t>(bytes), nullptr, a);
  };
  dev::attention_forward_launches<E, HD>(N * H, static_cast<int>(T), launch);
  dev::attention_backward_launches<E, HD>(N * H, static_cast<int>(T), launch);
  return r;
}

// The reference in fp64: o [N, T, D] and qkv's gradient [N, T, 3D] for o's gradient go.
std::pair<at::Tensor, at::Tensor> reference(const at::Tensor& qkv, const at::Tensor& go, int64_t H) {
  const int64_t N = qkv.size(0), T = qkv.size(1), D = qkv.size(2) / 3, hd = D / H;
  auto x = qkv.to(at::kDouble).detach().requires_grad_(true);
  auto parts = x.view({N, T, 3, H, hd}).permute({2, 0, 3, 1, 4});  // [3, N, H, T, hd]
  auto q = parts[0], k = parts[1], v = parts[2];
  auto p = at::softmax(at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd)), -1);
  auto o = at::matmul(p, v).permute({0, 2, 1, 3}).reshape({N, T, D});
  o.backward(go.to(at::kDouble));
  return {o.detach(), x.grad()};
}

// Tolerances (o and the gradients relative to their largest values; lse absolute): bf16 rounds p
// (and ds) to bf16 for the products, as FlashAttention does; fp32 (3xTF32) is within fp32's
// accuracy of the fp64 reference.
template <typename E>
struct Tolerance;
template <>
struct Tolerance<bf16> {
  static constexpr double o = 6e-3, lse = 1e-4, grad = 1.2e-2;
  static constexpr auto dtype = at::kBFloat16;
};
template <>
struct Tolerance<float> {
  static constexpr double o = 5e-6, lse = 2e-5, grad = 1e-5;  // lse: fp32's ulp at 16 is 2e-6
  static constexpr auto dtype = at::kFloat;
};

template <typename E, int HD>
void check(int64_t N, int64_t H, int64_t T, uint64_t seed) {
  using Tol = Tolerance<E>;
  torch::manual_seed(seed);
  const int64_t D = H * HD;
  // Scores of a few units (the products of attention's trained weights are of that order), so
  // that the softmax is far from uniform.
  auto qkv = (at::randn({N, T, 3 * D}) * 1.5).to(Tol::dtype);
  auto go = at::randn({N, T, D}).to(Tol::dtype);
  const Result r = run_kernels<E, HD>(qkv, go, H);
  const auto [o, g] = reference(qkv, go, H);
  const std::string what = std::string(sizeof(E) == 2 ? "bf16" : "fp32") + " hd " + std::to_string(HD) + ", T " +
                           std::to_string(T);
  const double e_o = rel(r.o, o);
  EXPECT_LT(e_o, Tol::o) << what;
  // lse: log2 of sum_j 2^(s_j) for s = q k^T * scale * log2(e), against the reference's
  auto x = qkv.to(at::kDouble).view({N, T, 3, H, HD}).permute({2, 0, 3, 1, 4});
  auto s = at::matmul(x[0], x[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(HD));  // [N, H, T, T]
  auto lse = (at::logsumexp(s, -1) / std::log(2.0)).reshape({N * H, T});
  const double e_lse = (r.lse.to(at::kDouble) - lse).abs().max().template item<double>();
  EXPECT_LT(e_lse, Tol::lse) << what;
  const auto gv = g.view({N, T, 3, D}), kv = r.g_qkv.view({N, T, 3, D});
  const char* names[3] = {"q", "k", "v"};
  double e_g[3];
  for (int part = 0; part < 3; ++part) {
    e_g[part] = rel(kv.select(2, part), gv.select(2, part));
    EXPECT_LT(e_g[part], Tol::grad) << what << ": grad " << names[part];
  }
  std::cout << what << ": o " << e_o << ", lse " << e_lse << ", grad q " << e_g[0] << ", k " << e_g[1] << ", v "
            << e_g[2] << " (relative to the largest; lse absolute)\n";
  EXPECT_FALSE(r.g_qkv.isnan().any().template item<bool>()) << what;
}

TEST(EmulatedAttention, TailWidthPartialTiles) { check<bf16, 24>(2, 2, 35, 1); }
TEST(EmulatedAttention, WidthOfWholeK16StepsTwoKeyTiles) { check<bf16, 32>(1, 2, 70, 2); }
TEST(EmulatedAttention, DitXlWidthSecondQueryBlock) { check<bf16, 72>(1, 1, 130, 3); }
// Longer than the slots hold at once (256 rows): the forward's 5 key tiles through 4 slots, the
// backward's 10 through 8 (9 at T 260), each slot refilled once the block is past its tile. The
// copies land at their wait (a tile read early reads NaNs), then as they are issued (a slot
// refilled while a warp still reads it gives that warp the next tile's rows).
TEST(EmulatedAttention, TilesStreamedThroughTheSlots) { check<bf16, 24>(1, 2, 300, 4); }
TEST(EmulatedAttention, TilesStreamedCopiesLandingAtOnce) {
  const nt::emu::LandAtIssue land_at_issue;
  check<bf16, 16>(1, 1, 260, 6);
}

// fp32 (3xTF32; TREAD's block after a route): blocks of 64 queries and 64 keys, tiles of 32 rows
// through 3 slots. Partial tiles and a partial block (T 35), DiT-XL/2's width with two blocks and
// the slots refilled (T 100: 4 tiles through 3 slots), and copies landing as issued.
TEST(EmulatedAttention, Fp32PartialTiles) { check<float, 24>(2, 2, 35, 11); }
TEST(EmulatedAttention, Fp32DitXlWidthTilesStreamed) { check<float, 72>(1, 1, 100, 12); }
TEST(EmulatedAttention, Fp32CopiesLandingAtOnce) {
  const nt::emu::LandAtIssue land_at_issue;
  check<float, 16>(1, 2, 100, 13);
}

}  // namespace
