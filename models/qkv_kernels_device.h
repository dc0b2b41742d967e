// The body of the attention's qkv-gradient kernel (models/fused_kernels_cuda.cu launches it for
// the fused_qkv_split op), compiled by nvcc for the GPU and by the host compiler for the CPU run
// of tests/models/cuda_emulation.h, like the other kernels of models/fused_kernels_device.h.
//
//   qkv_grad: q, k, v are views of qkv's output [N*T, 3D] (row r = n*T + t; column c = p*D +
//     h*hd + j: part p of q, k, v, head h, j < hd), each [N, H, T, hd] with unit stride along hd.
//     From their three gradients (any strides along n, h, t; a missing one: zeros) it writes the
//     output's gradient g [N*T, 3D], as autograd's stack of the three would, and, where asked,
//     the column sums of g (the qkv bias's gradient; the product took the bias detached), in one
//     pass: the stack and the bias gradient's own reduction each read the whole gradient.
//
// Layout as the GELU kernel's sums (gelu_kernels_device.h): a block of kColumnThreads threads
// takes kPairColumns columns of a split of the rows, each lane two adjacent columns, its 8 warps
// every 8th row, kQkvRows rows loaded before any is stored; the warps' sums added in warp order,
// then the splits (row_sum_kernel): deterministic.
#pragma once
#include <cstdint>

#include "models/gelu_kernels_device.h"

namespace nt::cuda::device {

constexpr int kQkvRows = 4;  // rows a warp loads at once

// The three gradients: base pointers (null: zeros) and strides along n, h, t (elements).
template <typename T>
struct QkvGrads {
  const T* part[3];
  int64_t stride_n[3], stride_h[3], stride_t[3];
};

// a[p] for p < 3 without indexing the kernel's parameter by a runtime value (which copies the
// parameter to local memory).
template <typename V>
NT_DEVICE V pick(const V (&a)[3], int p) {
  return p == 0 ? a[0] : p == 1 ? a[1] : a[2];
}

// part_sums[split, c] = the sum over the split's rows of g[r, c] (where part_sums is not null).
// kVector: D and hd even, every stride even and every pointer 2-element aligned, so a lane's
// two columns are adjacent in one head of one part.
template <typename T, bool kVector>
NT_GLOBAL void NT_BOUNDS(kColumnThreads)
    qkv_grad_kernel(QkvGrads<T> in, T* __restrict__ g, float* __restrict__ part_sums, int64_t M, int64_t T_rows,
                    int D, int hd, int64_t rows_per_split) {
  NT_SHARED float shared[2 * kColumnThreads];
  const int C = 3 * D;
  const PairTile tile = pair_tile(M, C, rows_per_split);
  const int group = tile.group, c = tile.col, width = tile.width;  // width: this lane's columns
  const int64_t t0 = tile.t0, t1 = tile.t1;
  float acc[2] = {0.f, 0.f};
  if (width > 0) {
    // Each column's source: its part's pointer, the offset of its head and j, the row strides.
    const T* src[2];
    int64_t offset[2], s_n[2], s_t[2];
    for (int k = 0; k < 2; ++k) {
      const int col = k < width ? c + k : c, p = col / D, w = col % D, h = w / hd, j = w % hd;
      src[k] = pick(in.part, p);
      offset[k] = h * pick(in.stride_h, p) + j;
      s_n[k] = pick(in.stride_n, p);
      s_t[k] = pick(in.stride_t, p);
    }
    for (int64_t r = t0 + group; r < t1; r += kQkvRows * kColumnGroups) {
      float v[kQkvRows][2];
NT_UNROLL
      for (int u = 0; u < kQkvRows; ++u) {
        const int64_t row = r + u * kColumnGroups;
        v[u][0] = v[u][1] = 0.f;
        if (row < t1) {
          // 32-bit division: the launcher checks M < 2^31.
          const int64_t n = static_cast<uint32_t>(row) / static_cast<uint32_t>(T_rows), t = row - n * T_rows;
          if constexpr (kVector) {
            if (src[0]) load2<true>(src[0] + n * s_n[0] + t * s_t[0] + offset[0], 2, v[u]);
          } else {
            for (int k = 0; k < width; ++k)
              if (src[k]) v[u][k] = to_float(src[k][n * s_n[k] + t * s_t[k] + offset[k]]);
          }
        }
      }
NT_UNROLL
      for (int u = 0; u < kQkvRows; ++u) {
        const int64_t row = r + u * kColumnGroups;
        if (row < t1) store2<kVector>(g + row * C + c, width, v[u]);
        acc[0] += v[u][0];  // row by row, in order (the values as stored: T holds them exactly)
        acc[1] += v[u][1];
      }
    }
  }
  if (part_sums == nullptr) return;  // uniform over the block
  store_pair_sums(acc, shared, width, part_sums + static_cast<int64_t>(blockIdx.y) * C + c);
}

// ---- launch ----------------------------------------------------------------------------------

// The floats of workspace qkv_grad's column sums need for M rows of 3D columns.
inline int64_t qkv_grad_workspace(int64_t M, int D) { return gelu_sum_splits(M) * 3 * static_cast<int64_t>(D); }

// g [M, 3D] row-major; `bias` [3D] and `workspace` (qkv_grad_workspace floats) both null or both
// given: bias = the column sums of g over the M rows, rounded to T.
template <typename T>
void launch_qkv_grad(const QkvGrads<T>& in, T* g, T* bias, float* workspace, int64_t M, int64_t T_rows, int D, int hd,
                     cudaStream_t s) {
  const int splits = gelu_sum_splits(M);
  const int64_t rows_per_split = (M + splits - 1) / splits;
  bool vector = D % 2 == 0 && hd % 2 == 0 && pair_aligned(g);
  for (int p = 0; p < 3; ++p)
    vector = vector && (!in.part[p] || (pair_aligned(in.part[p]) && in.stride_n[p] % 2 == 0 &&
                                        in.stride_h[p] % 2 == 0 && in.stride_t[p] % 2 == 0));
  auto kernel = vector ? qkv_grad_kernel<T, true> : qkv_grad_kernel<T, false>;
  const dim3 grid(static_cast<unsigned>((3 * D + kPairColumns - 1) / kPairColumns), static_cast<unsigned>(splits));
  NT_LAUNCH(kernel, grid, dim3(kColumnThreads), s, in, g, bias ? workspace : static_cast<float*>(nullptr), M, T_rows,
            D, hd, rows_per_split);
  if (bias) launch_sample_sum(static_cast<const float*>(workspace), bias, splits, 3 * D, s);  // the splits' sums
}

}  // namespace nt::cuda::device
