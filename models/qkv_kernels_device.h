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
// takes kLaneBlockColumns<kCols> columns of a split of the rows, each lane kCols adjacent columns
// (8 where hd, the strides and the pointers allow: one 16-byte access of bf16 in one head; else 2),
// its 8 warps every 8th row, kQkvVectorRows rows (8 columns a lane, kept as loaded) or kQkvRows
// (2 columns a lane, as floats) loaded before any is stored; the warps' sums added in
// warp order, then the splits (row_sum_kernel): deterministic, the same sums for either kCols.
// (With two columns a lane, 4-byte accesses, it moved 453 MB per call in 252 us on the H200 for
// DiT-XL/2's rows: 1.8 TB/s, where autograd's stack alone ran at 4.0.)
#pragma once
#include <cstdint>

#include "models/gelu_kernels_device.h"

namespace nt::cuda::device {

constexpr int kQkvRows = 4;        // rows a warp loads at once, a lane's columns as floats
constexpr int kQkvVectorRows = 8;  // as the words they came in (kVector)

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
// g null: the sums alone (the parts are g's own columns, already in place: fused_attention).
// kVector: D and hd multiples of kCols, every stride a multiple of kCols and every pointer
// kCols-element aligned, so a lane's columns are adjacent in one head of one part.
template <typename T, int kCols, bool kVector>
NT_GLOBAL void NT_BOUNDS(kColumnThreads)
    qkv_grad_kernel(QkvGrads<T> in, T* __restrict__ g, float* __restrict__ part_sums, int64_t M, int64_t T_rows,
                    int D, int hd, int64_t rows_per_split) {
  NT_SHARED float shared[kCols * kColumnThreads];
  const int C = 3 * D;
  const ColumnTile tile = column_tile<kCols>(M, C, rows_per_split);
  const int group = tile.group, c = tile.col, width = tile.width;  // width: this lane's columns
  const int64_t t0 = tile.t0, t1 = tile.t1;
  float acc[kCols] = {};
  if (width > 0) {
    // Each column's source: its part's pointer, the offset of its head and j, the row strides
    // (with kVector the first column's serves all).
    constexpr int kSources = kVector ? 1 : kCols;
    const T* src[kSources];
    int64_t offset[kSources], s_n[kSources], s_t[kSources];
    for (int k = 0; k < kSources; ++k) {
      const int col = k < width ? c + k : c, p = col / D, w = col % D, h = w / hd, j = w % hd;
      src[k] = pick(in.part, p);
      offset[k] = h * pick(in.stride_h, p) + j;
      s_n[k] = pick(in.stride_n, p);
      s_t[k] = pick(in.stride_t, p);
    }
    if constexpr (kVector) {
      // kQkvVectorRows rows at a time, as loaded: each lane's kCols elements of a row stay in the
      // words they came in (LaneLoad) and go to g as they are; only the sums unpack them.
      // (As floats, 4 rows took 72 registers: 3 blocks of 256 threads an SM, 48 KB in flight.)
      for (int64_t r = t0 + group; r < t1; r += kQkvVectorRows * kColumnGroups) {
        LaneLoad<kCols, true, T> l[kQkvVectorRows];
NT_UNROLL
        for (int u = 0; u < kQkvVectorRows; ++u) {
          const int64_t row = r + u * kColumnGroups;
          l[u].clear();
          if (row < t1 && src[0]) {
            const int64_t n = static_cast<uint32_t>(row) / static_cast<uint32_t>(T_rows), t = row - n * T_rows;
            l[u].fetch(src[0] + n * s_n[0] + t * s_t[0] + offset[0], kCols);
          }
        }
NT_UNROLL
        for (int u = 0; u < kQkvVectorRows; ++u) {
          const int64_t row = r + u * kColumnGroups;
          if (row < t1 && g) l[u].store(g + row * C + c, kCols);
          float v[kCols];
          l[u].unpack(v);
NT_UNROLL
          for (int k = 0; k < kCols; ++k) acc[k] += v[k];  // row by row, in order
        }
      }
    } else {
      for (int64_t r = t0 + group; r < t1; r += kQkvRows * kColumnGroups) {
        float v[kQkvRows][kCols] = {};
NT_UNROLL
        for (int u = 0; u < kQkvRows; ++u) {
          const int64_t row = r + u * kColumnGroups;
          if (row < t1) {
            // 32-bit division: the launcher checks M < 2^31.
            const int64_t n = static_cast<uint32_t>(row) / static_cast<uint32_t>(T_rows), t = row - n * T_rows;
            for (int k = 0; k < width; ++k)
              if (src[k]) v[u][k] = to_float(src[k][n * s_n[k] + t * s_t[k] + offset[k]]);
          }
        }
NT_UNROLL
        for (int u = 0; u < kQkvRows; ++u) {
          const int64_t row = r + u * kColumnGroups;
          if (row < t1 && g) store_cols<kCols, false>(g + row * C + c, width, v[u]);
NT_UNROLL
          for (int k = 0; k < kCols; ++k) acc[k] += v[u][k];  // row by row, in order (T holds them exactly)
        }
      }
    }
  }
  if (part_sums == nullptr) return;  // uniform over the block
  store_lane_sums<kCols>(acc, shared, width, part_sums + static_cast<int64_t>(blockIdx.y) * C + c);
}

// ---- launch ----------------------------------------------------------------------------------

// The floats of workspace qkv_grad's column sums need for M rows of 3D columns.
inline int64_t qkv_grad_workspace(int64_t M, int D) { return gelu_sum_splits(M) * 3 * static_cast<int64_t>(D); }

// g [M, 3D] row-major (null: the parts are g's columns already, and only the sums are wanted);
// `bias` [3D] and `workspace` (qkv_grad_workspace floats) both null or both given: bias = the
// column sums of g over the M rows, rounded to T (with accumulate_bias: bias += them, rounded once).
template <typename T>
void launch_qkv_grad(const QkvGrads<T>& in, T* g, T* bias, float* workspace, int64_t M, int64_t T_rows, int D, int hd,
                     cudaStream_t s, bool accumulate_bias = false) {
  const int splits = gelu_sum_splits(M);
  const int64_t rows_per_split = (M + splits - 1) / splits;
  auto aligned = [&](auto cols) {
    constexpr int kN = decltype(cols)::value;
    bool ok = D % kN == 0 && hd % kN == 0 && aligned_to<kN>(g);
    for (int p = 0; p < 3; ++p)
      ok = ok && (!in.part[p] || (aligned_to<kN>(in.part[p]) && in.stride_n[p] % kN == 0 &&
                                  in.stride_h[p] % kN == 0 && in.stride_t[p] % kN == 0));
    return ok;
  };
  auto launch = [&](auto kernel, int cols) {
    const dim3 grid(static_cast<unsigned>((3 * D + cols - 1) / cols), static_cast<unsigned>(splits));
    NT_LAUNCH(kernel, grid, dim3(kColumnThreads), s, in, g, bias ? workspace : static_cast<float*>(nullptr), M,
              T_rows, D, hd, rows_per_split);
  };
  auto kernel_for = [](auto cols, auto with_vector) {
    return qkv_grad_kernel<T, decltype(cols)::value, decltype(with_vector)::value>;
  };
  launch_lane_columns(aligned(std::integral_constant<int, 8>{}), aligned(std::integral_constant<int, 2>{}), kernel_for,
                      launch);
  if (bias)  // the splits' sums
    launch_sample_sum(static_cast<const float*>(workspace), bias, splits, 3 * D, s, accumulate_bias);
}

}  // namespace nt::cuda::device
