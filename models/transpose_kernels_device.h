// The body of the transpose kernel (models/fused_kernels_cuda.cu launches it: the transposed
// forms of models/product_forms.h), compiled by nvcc for the GPU and by the host compiler for the
// CPU run of tests/models/cuda_emulation.h, like the other kernels of models/fused_kernels_device.h.
//
//   transpose: out [cols, rows] = in [rows, cols]^T, both row-major and contiguous;
//              with kAccumulate out += in^T (the sum taken in fp32 and rounded once, as
//              LibTorch's add of two such tensors: a weight gradient added into its buffer).
//
// A block per 32 x 32 tile: its 8 warps read the tile's rows into shared memory (a warp a row,
// consecutive addresses), then write its columns as out's rows (again a warp a row). LibTorch's
// copy of a transposed view reads or writes with a stride of a row per element instead (a bf16
// [4608, 1152] took 29 us on the H200 where the moves alone take about 6).
#pragma once
#include <cstdint>

#include "models/fused_kernels_device.h"

namespace nt::cuda::device {

constexpr int kTransposeTile = 32;
constexpr int kTransposeThreads = 256;  // 8 warps: 8 rows of the tile a pass

template <typename T, bool kAccumulate>
NT_GLOBAL void NT_BOUNDS(kTransposeThreads) transpose_kernel(const T* in, T* out, int64_t rows, int64_t cols) {
  NT_SHARED T tile[kTransposeTile][kTransposeTile + 1];  // +1: a column's reads fall in distinct banks
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTransposeTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTransposeTile;
  const int lane = threadIdx.x % kTransposeTile, warp = threadIdx.x / kTransposeTile;
  constexpr int kPass = kTransposeThreads / kTransposeTile;
  for (int i = warp; i < kTransposeTile; i += kPass) {  // in's row r0 + i, column c0 + lane
    const int64_t r = r0 + i, c = c0 + lane;
    if (r < rows && c < cols) tile[i][lane] = in[r * cols + c];
  }
  __syncthreads();
  for (int i = warp; i < kTransposeTile; i += kPass) {  // out's row c0 + i, column r0 + lane
    const int64_t c = c0 + i, r = r0 + lane;
    if (c < cols && r < rows) {
      T* o = out + c * rows + r;
      if constexpr (kAccumulate)
        *o = from_float<T>(to_float(*o) + to_float(tile[lane][i]));
      else
        *o = tile[lane][i];
    }
  }
}

// Tiles along x over the columns, along y over the rows (rows <= 65535 * 32).
template <typename T>
void launch_transpose(const T* in, T* out, int64_t rows, int64_t cols, bool accumulate, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((cols + kTransposeTile - 1) / kTransposeTile),
                  static_cast<unsigned>((rows + kTransposeTile - 1) / kTransposeTile));
  const auto kernel = accumulate ? transpose_kernel<T, true> : transpose_kernel<T, false>;
  NT_LAUNCH(kernel, grid, dim3(kTransposeThreads), stream, in, out, rows, cols);
}

}  // namespace nt::cuda::device
