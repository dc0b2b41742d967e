// The bodies of the MLP's own GELU kernels (models/gelu_gemm_cuda.cu launches them around the
// cuBLASLt products), compiled by nvcc for the GPU and by the host compiler for the CPU run of
// tests/models/cuda_emulation.h, like models/fused_kernels_device.h whose helpers they use.
//
//   gelu_bias_gradient: for fc1's pre-activation pre [M, N] and the gradient g [M, N] reaching
//     the GELU's output (fc2's input-gradient product):
//       dpre = g * gelu_tanh'(pre), rounded to T (in place of g: they may alias),
//       dbias[n] = sum over the M rows of dpre[m, n] (the rounded values, summed in fp32),
//       act = gelu_tanh(pre) where asked for (fc2's weight gradient under `recompute = "mlp"`),
//     in one pass over the matrices. Without the derivative, g is dpre already (cuBLASLt's GELU'
//     epilogue formed it) and only the sums and act are made.
//   gelu: act = gelu_tanh(pre) alone.
//
// The GELU is PyTorch's "tanh" approximation computed in fp32 in the same order of operations
// (ATen's GELU kernels): gelu(x) = 0.5 x (1 + tanh(b (x + k x^3))), b = sqrt(2 / pi),
// k = 0.044715. Layout of the sums: a block of kColumnThreads threads takes kLaneBlockColumns<kCols>
// columns of a split of the rows, each lane kCols adjacent columns (8 where N and the matrices
// allow: one 16-byte access of bf16, a warp reading 512 contiguous bytes of a row; else 2), its 8
// warps every 8th row; the warps' sums are added in warp order, then the splits (row_sum_kernel):
// deterministic, and the same sums for either kCols.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "models/fused_kernels_device.h"

namespace nt::cuda::device {

constexpr float kGeluBeta = 0.7978845608028654f;  // sqrt(2 / pi) = sqrt(2) * (2 / sqrt(pi)) * 0.5
constexpr float kGeluKappa = 0.044715f;
// Rows a warp loads at once: 4 of 2 columns a lane (16 bytes of bf16 g and pre a lane), 2 of 8
// (64 bytes); 4 of 8 where only g is read (the column sums alone: 64 bytes).
template <int kCols, bool kReadsPre>
constexpr int kGeluRows = kCols >= 8 && kReadsPre ? 2 : 4;

// tanh(b (x + k x^3)), the GELU's inner tanh; x_sq = x * x.
NT_DEVICE float gelu_tanh_inner(float x, float x_sq) {
  const float x_cube = x_sq * x;
  return tanhf(kGeluBeta * (x + kGeluKappa * x_cube));
}

NT_DEVICE float gelu_tanh(float x) { return 0.5f * x * (1.f + gelu_tanh_inner(x, x * x)); }

// gelu_tanh(x) and dy * d gelu_tanh(x) / dx from one evaluation of the tanh (the costliest part:
// the kernel below took about 58 instructions per element when it evaluated it twice), each in the
// operations and order of its own function, so the same values.
struct GeluAndGrad {
  float act, grad;
};
NT_DEVICE GeluAndGrad gelu_tanh_and_backward(float dy, float x) {
  const float x_sq = x * x;
  const float tanh_inner = gelu_tanh_inner(x, x_sq);
  const float left = 0.5f * x, right = 1.f + tanh_inner;
  const float left_derivative = 0.5f * right;
  const float right_derivative = 1.f - tanh_inner * tanh_inner;
  const float inner_derivative = kGeluBeta * (1.f + 3.f * kGeluKappa * x_sq);
  return {left * right, dy * (left_derivative + left * right_derivative * inner_derivative)};
}

// dy * d gelu_tanh(x) / dx.
NT_DEVICE float gelu_tanh_backward(float dy, float x) { return gelu_tanh_and_backward(dy, x).grad; }

// part[split, n] = the sum over the split's rows of dpre[m, n] (forming dpre first with
// kDerivative), act written with kAct. g and dpre may be the same matrix. kVector: N is a multiple
// of kCols and every matrix kCols-element aligned. A lane's columns past N and rows past the split
// compute on zeros (g = 0: dpre = 0, adding nothing) and are not stored: the loop body has no
// branches but the stores'.
template <typename T, int kCols, bool kDerivative, bool kVector, bool kAct>
NT_GLOBAL void NT_BOUNDS(kColumnThreads)
    gelu_bias_gradient_kernel(const T* g, const T* __restrict__ pre, T* dpre, T* __restrict__ act,
                              float* __restrict__ part, int64_t M, int N, int64_t rows_per_split) {
  constexpr int kRows = kGeluRows<kCols, kDerivative || kAct>;
  NT_SHARED float shared[kCols * kColumnThreads];
  const ColumnTile tile = column_tile<kCols>(M, N, rows_per_split);
  const int group = tile.group, d = tile.col, width = tile.width;  // width: this lane's columns
  const int64_t t0 = tile.t0, t1 = tile.t1;
  float acc[kCols] = {};
  if (width > 0) {
    // kRows rows at a time, their loads issued together (g and dpre may alias, so the
    // compiler may not move a row's loads above the previous row's stores itself).
    for (int64_t t = t0 + group; t < t1; t += kRows * kColumnGroups) {
      LaneLoad<kCols, kVector, T> gl[kRows], pl[kRows];  // all of them issued before any is read
NT_UNROLL
      for (int u = 0; u < kRows; ++u) {
        const int64_t row = t + u * kColumnGroups, i = row * N + d;
        gl[u].clear();
        pl[u].clear();
        if (row < t1) {
          gl[u].fetch(g + i, width);
          if (kDerivative || kAct) pl[u].fetch(pre + i, width);
        }
      }
      float v[kRows][kCols], p[kRows][kCols];
NT_UNROLL
      for (int u = 0; u < kRows; ++u) {
        gl[u].unpack(v[u]);
        pl[u].unpack(p[u]);
      }
NT_UNROLL
      for (int u = 0; u < kRows; ++u) {
        const int64_t row = t + u * kColumnGroups, i = row * N + d;
        float a[kCols];
NT_UNROLL
        for (int c = 0; c < kCols; ++c) {
          if constexpr (kDerivative && kAct) {
            const GeluAndGrad r = gelu_tanh_and_backward(v[u][c], p[u][c]);
            a[c] = r.act;
            v[u][c] = round_to<T>(r.grad);
          } else if constexpr (kDerivative) {
            v[u][c] = round_to<T>(gelu_tanh_backward(v[u][c], p[u][c]));
          } else if constexpr (kAct) {
            a[c] = gelu_tanh(p[u][c]);
          }
        }
        if (row < t1) {
          if constexpr (kDerivative) store_cols<kCols, kVector>(dpre + i, width, v[u]);
          if constexpr (kAct) store_cols<kCols, kVector>(act + i, width, a);
        }
NT_UNROLL
        for (int c = 0; c < kCols; ++c) acc[c] += v[u][c];  // row by row, in order
      }
    }
  }
  store_lane_sums<kCols>(acc, shared, width, part + static_cast<int64_t>(blockIdx.y) * N + d);
}

// act[i] = gelu_tanh(pre[i]) for n elements, two per thread, grid-stride.
template <typename T, bool kVector>
NT_GLOBAL void gelu_kernel(const T* __restrict__ pre, T* __restrict__ act, int64_t n) {
  const int64_t pairs = (n + 1) / 2, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < pairs; j += stride) {
    const int width = 2 * j + 1 < n ? 2 : 1;
    float p[2];
    load_cols<2, kVector>(pre + 2 * j, width, p);
    const float a[2] = {gelu_tanh(p[0]), gelu_tanh(p[1])};
    store_cols<2, kVector>(act + 2 * j, width, a);
  }
}

// ---- launches --------------------------------------------------------------------------------

// The row splits of gelu_bias_gradient for M rows (up to 128, at least 64 rows each) and the
// floats of workspace it needs (the splits' partial sums).
inline int gelu_sum_splits(int64_t M) {
  const int64_t s = M / 64;
  return static_cast<int>(s < 1 ? 1 : s > 128 ? 128 : s);
}
inline int64_t gelu_bias_gradient_workspace(int64_t M, int N) {
  return gelu_sum_splits(M) * static_cast<int64_t>(N);
}

// g, pre, dpre, act [M, N] row-major; dbias [N]; workspace gelu_bias_gradient_workspace(M, N)
// floats. Without `derivative`, g is dpre (read only) and pre is read only for act; act may be
// null (not written). With accumulate_bias, dbias += the column sums (rounded once).
template <typename T>
void launch_gelu_bias_gradient(const T* g, const T* pre, T* dpre, T* act, T* dbias, float* workspace, int64_t M,
                               int N, bool derivative, cudaStream_t s, bool accumulate_bias = false) {
  const int splits = gelu_sum_splits(M);
  const int64_t rows_per_split = (M + splits - 1) / splits;
  auto aligned = [&](auto cols) {
    constexpr int kN = decltype(cols)::value;
    return N % kN == 0 && aligned_to<kN>(g) && (!pre || aligned_to<kN>(pre)) && (!dpre || aligned_to<kN>(dpre)) &&
           (!act || aligned_to<kN>(act));
  };
  auto kernel_for = [&](auto cols, auto with_vector) {
    constexpr int kCols = decltype(cols)::value;
    constexpr bool kVector = decltype(with_vector)::value;
    return derivative ? (act ? gelu_bias_gradient_kernel<T, kCols, true, kVector, true>
                             : gelu_bias_gradient_kernel<T, kCols, true, kVector, false>)
                      : (act ? gelu_bias_gradient_kernel<T, kCols, false, kVector, true>
                             : gelu_bias_gradient_kernel<T, kCols, false, kVector, false>);
  };
  auto launch = [&](auto kernel, int columns) {
    const dim3 grid(static_cast<unsigned>((N + columns - 1) / columns), static_cast<unsigned>(splits));
    NT_LAUNCH(kernel, grid, dim3(kColumnThreads), s, g, pre, dpre, act, workspace, M, N, rows_per_split);
  };
  launch_lane_columns(aligned(std::integral_constant<int, 8>{}), aligned(std::integral_constant<int, 2>{}), kernel_for,
                      launch);
  launch_sample_sum(static_cast<const float*>(workspace), dbias, splits, N, s, accumulate_bias);  // the splits' sums
}

// pre, act: n elements.
template <typename T>
void launch_gelu(const T* pre, T* act, int64_t n, cudaStream_t s) {
  const int64_t pairs = (n + 1) / 2, blocks = (pairs + kRowThreads - 1) / kRowThreads;
  const bool vector = n % 2 == 0 && aligned_to<2>(pre) && aligned_to<2>(act);
  auto kernel = vector ? gelu_kernel<T, true> : gelu_kernel<T, false>;
  NT_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks < 65536 * 8 ? blocks : 65536 * 8)), dim3(kRowThreads), s, pre,
            act, n);
}

}  // namespace nt::cuda::device
