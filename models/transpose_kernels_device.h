// The body of the transpose kernel (models/fused_kernels_cuda.cu launches it: the transposed
// forms of models/product_forms.h), compiled by nvcc for the GPU and by the host compiler for the
// CPU run of tests/models/cuda_emulation.h, like the other kernels of models/fused_kernels_device.h.
//
//   transpose: out [cols, rows] = in [rows, cols]^T, both row-major and contiguous;
//              with kAccumulate out += in^T (the sum taken in fp32 and rounded once, as
//              LibTorch's add of two such tensors: a weight gradient added into its buffer).
//
// A block per 64 x 64 tile, its 8 warps 8 of the tile's rows a pass, a lane 2 adjacent elements
// (one 4-byte access of bf16 where rows, columns and pointers allow, kPair; else two): all of a
// thread's reads of in (and, adding, of out) are issued before any is stored, then the tile's
// columns go out as out's rows. (32 x 32 tiles of one element a lane, each read stored to shared
// memory as it came: 14.4 us for a bf16 [4608, 1152] on the H200, 1.5 TB/s.) LibTorch's copy of
// a transposed view reads or writes with a stride of a row per element instead (29 us for that
// matrix).
#pragma once
#include <cstdint>

#include "models/fused_kernels_device.h"

namespace nt::cuda::device {

constexpr int kTransposeTile = 64;
constexpr int kTransposeThreads = 256;  // 8 warps

// Two adjacent elements p[0], p[1], of which the first n (0, 1, 2 or more) are there, into l as
// loaded (the others zero, not read): one access with kPair (n then 0 or at least 2, p 2-element
// aligned), else one each.
template <bool kPair, typename T>
NT_DEVICE void load_pair(LaneLoad<2, kPair, T>& l, const T* p, int64_t n) {
  l.clear();
  if (n > 0) l.fetch(p, n > 1 ? 2 : 1);
}
// Stores e[0], e[1] to p[0], p[1] as load_pair loads them (the first n of them).
template <bool kPair, typename T>
NT_DEVICE void store_pair(T* p, int64_t n, const T (&e)[2]) {
  if constexpr (kPair) {
    if (n > 0) {
      typename LaneAccess<2, T>::Word w;
      memcpy(&w, static_cast<const void*>(e), sizeof(w));
      store_word(p, w);
    }
  } else {
    if (n > 0) p[0] = e[0];
    if (n > 1) p[1] = e[1];
  }
}

template <typename T, bool kAccumulate, bool kPair>
NT_GLOBAL void NT_BOUNDS(kTransposeThreads) transpose_kernel(const T* in, T* out, int64_t rows, int64_t cols) {
  // +1: a warp's reads down a column fall in distinct banks (bf16; fp32 two-way).
  NT_SHARED T tile[kTransposeTile][kTransposeTile + 1];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kTransposeTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTransposeTile;
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  constexpr int kPasses = kTransposeTile / (kTransposeThreads / 32);  // 8: tile rows a warp takes
  LaneLoad<2, kPair, T> v[kPasses];
NT_UNROLL
  for (int p = 0; p < kPasses; ++p) {  // in's row r0 + i, columns c0 + 2 lane, + 1
    const int i = warp + p * (kTransposeThreads / 32);
    const int64_t r = r0 + i, c = c0 + 2 * lane;
    load_pair(v[p], in + r * cols + c, r < rows && c < cols ? cols - c : 0);
  }
NT_UNROLL
  for (int p = 0; p < kPasses; ++p) {
    const int i = warp + p * (kTransposeThreads / 32);
    tile[i][2 * lane] = v[p].element(0);
    tile[i][2 * lane + 1] = v[p].element(1);
  }
  __syncthreads();
  LaneLoad<2, kPair, T> held[kPasses];  // adding: out's values first, all loads issued together
  if constexpr (kAccumulate) {
NT_UNROLL
    for (int p = 0; p < kPasses; ++p) {
      const int i = warp + p * (kTransposeThreads / 32);
      const int64_t c = c0 + i, r = r0 + 2 * lane;
      load_pair(held[p], out + c * rows + r, c < cols && r < rows ? rows - r : 0);
    }
  }
NT_UNROLL
  for (int p = 0; p < kPasses; ++p) {  // out's row c0 + i, columns r0 + 2 lane, + 1
    const int i = warp + p * (kTransposeThreads / 32);
    const int64_t c = c0 + i, r = r0 + 2 * lane;
    T o[2];
    for (int k = 0; k < 2; ++k) {
      o[k] = tile[2 * lane + k][i];
      if constexpr (kAccumulate) o[k] = from_float<T>(to_float(held[p].element(k)) + to_float(o[k]));
    }
    store_pair<kPair>(out + c * rows + r, c < cols && r < rows ? rows - r : 0, o);
  }
}

// Tiles along x over the columns, along y over the rows (rows <= 65535 * kTransposeTile); pairs of
// elements in one access where both sizes are even and both pointers 2-element aligned.
template <typename T>
void launch_transpose(const T* in, T* out, int64_t rows, int64_t cols, bool accumulate, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((cols + kTransposeTile - 1) / kTransposeTile),
                  static_cast<unsigned>((rows + kTransposeTile - 1) / kTransposeTile));
  const bool pair = rows % 2 == 0 && cols % 2 == 0 && aligned_to<2>(in) && aligned_to<2>(out);
  auto kernel = pair ? (accumulate ? transpose_kernel<T, true, true> : transpose_kernel<T, false, true>)
                     : (accumulate ? transpose_kernel<T, true, false> : transpose_kernel<T, false, false>);
  NT_LAUNCH(kernel, grid, dim3(kTransposeThreads), stream, in, out, rows, cols);
}

}  // namespace nt::cuda::device
