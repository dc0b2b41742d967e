// The bodies of the project's CUDA kernels and their launch configurations (the API around them:
// fused_kernels_cuda.h). nvcc compiles them for the GPU in fused_kernels_cuda.cu; a host
// compiler compiles the very same code for a CPU run in tests (tests/models/cuda_emulation.h
// provides threadIdx, __syncthreads, __shfl_xor_sync and the launch), so the indexing and the
// reductions are checked on any machine. LayerNorm + adaLN modulate: one block of kThreads
// threads per row for the row-wise parts (statistics, y, grad_x; the plain norm's backward a
// block per 16 rows, its sums over tokens kept per tile); the gated residual's forward: a block
// per row, grid-stride over rows; the sums over a sample's T rows (grad gate, scale, shift next
// to a residual): a block per 32 columns of a sample, its 8 warps each every 8th row.
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#ifdef __CUDACC__
#define NT_GLOBAL __global__
#define NT_DEVICE __device__ __forceinline__
#define NT_SHARED __shared__
#define NT_BOUNDS(n) __launch_bounds__(n)
#define NT_UNROLL _Pragma("unroll")
#define NT_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else  // the CPU run of tests/models/cuda_emulation.h: blocks one after another
#define NT_GLOBAL
#define NT_DEVICE inline
#define NT_SHARED static  // one copy for the block's threads (one block runs at a time)
#define NT_BOUNDS(n)
#define NT_UNROLL
#define NT_LAUNCH(kernel, grid, block, stream, ...) ::nt::emu::launch((grid), (block), kernel, __VA_ARGS__)
#endif

namespace nt::cuda::device {

constexpr int kThreads = 128;  // per row; a multiple of 32

NT_DEVICE float to_float(float v) { return v; }
NT_DEVICE float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
NT_DEVICE T from_float(float v);
template <>
NT_DEVICE float from_float<float>(float v) { return v; }
template <>
NT_DEVICE __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
// v rounded to T's precision (round to nearest even), as a float.
template <typename T>
NT_DEVICE float round_to(float v) { return to_float(from_float<T>(v)); }

// The sum of v over the block's kThreads threads, returned to every thread. `shared` holds
// kThreads / 32 floats and may be reused by the next call.
NT_DEVICE float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the previous call's readers are done
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  return total;
}

// LayerNorm's input gradient, element by element: rstd * (g - mean(g) - x_hat * mean(g * x_hat))
// for g = gy * (1 + scale); the two row means come from the row's block sums of g and g * x_hat.
struct RowMeans {
  float g, g_x_hat;
};
NT_DEVICE RowMeans row_means(float sum_g, float sum_g_x_hat, float* shared, int D) {
  const float g = block_sum(sum_g, shared) / D;
  return {g, block_sum(sum_g_x_hat, shared) / D};
}
NT_DEVICE float norm_input_grad(float rstd, float g, float x_hat, const RowMeans& m) {
  return rstd * (g - m.g - x_hat * m.g_x_hat);
}

// The gated residual before a DiT block's second norm, h = x + gate * branch, one rounding (a
// fused multiply-add): the forward writes it, and the backward kernels form it again from x, gate
// and branch (FusedResidualNorm keeps x, which the block keeps anyway, not h: [N, T, D] fp32 less
// per block), the same bits on the GPU and in the CPU emulation.
NT_DEVICE float residual_sum(float x, float gate, float branch) { return fmaf(gate, branch, x); }

// LayerNorm + adaLN modulate forward: the row's statistics, then y = modulate(x_hat) in TY. With
// kResidual the norm's input is first formed as h = x + gate * branch and written (fp32): the
// gated residual before the norm, inside a DiT block (gate, branch, shift and scale then share the
// dtype TM). Each thread keeps its kPerThread columns of the row in registers
// (d = threadIdx.x + k * kThreads), so the row is read from memory once and the statistics and y
// come from registers (kPerThread chosen by the launch as for the backward below). A block takes
// kNormRows consecutive rows, one after another: it issues the next row's loads before the
// current row's block sums, so that they are in flight while it waits on those, and keeps the
// sample's gate, shift and scale in registers from row to row (loaded again where a block's rows
// reach the next sample). A block per row kept its loads in flight for about half of its life and
// waited for shift and scale (L2 hits) after its statistics, in 4 groups as nvcc scheduled them:
// 82 us per call for DiT-XL/2's rows without the residual on the H200 (2.8 TB/s), 135 us with it
// (3.4 TB/s).
constexpr int kNormRows = 4;

// This thread's columns of a row p[0..D) (d = threadIdx.x + k * kThreads) as stored, zeros past
// the row's end: norm_forward_kernel loads all it needs this way and reads none of it before the
// last load is issued (a conversion next to its load waits for it).
template <int kPerThread, typename T>
NT_DEVICE void load_row_columns(T (&v)[kPerThread], const T* p, int D) {
NT_UNROLL
  for (int k = 0; k < kPerThread; ++k) {
    const int d = static_cast<int>(threadIdx.x) + k * kThreads;
    v[k] = d < D ? p[d] : T{};
  }
}

// norm_forward_kernel's loads (load_row_columns): a row's x and, with kResidual, branch; a
// sample's shift, scale and, with kResidual, gate.
template <typename TM, int kPerThread>
struct NormRowLoads {
  float x[kPerThread];
  TM branch[kPerThread];
};
template <typename TM, int kPerThread>
struct NormSampleLoads {
  TM gate[kPerThread], shift[kPerThread], scale[kPerThread];
};
template <bool kResidual, typename TM, int kPerThread>
NT_DEVICE void load_norm_row(NormRowLoads<TM, kPerThread>& l, const float* x, const TM* branch, int64_t row, int D) {
  load_row_columns(l.x, x + row * D, D);
  if constexpr (kResidual) load_row_columns(l.branch, branch + row * D, D);
}
template <bool kResidual, typename TM, int kPerThread>
NT_DEVICE void load_norm_sample(NormSampleLoads<TM, kPerThread>& l, const TM* gate, int64_t gate_stride,
                                const TM* shift, int64_t shift_stride, const TM* scale, int64_t scale_stride,
                                int64_t n, int D) {
  if constexpr (kResidual) load_row_columns(l.gate, gate + n * gate_stride, D);
  load_row_columns(l.shift, shift + n * shift_stride, D);
  load_row_columns(l.scale, scale + n * scale_stride, D);
}

template <typename TM, typename TY, bool kResidual, int kPerThread>
NT_GLOBAL void NT_BOUNDS(kThreads)
    norm_forward_kernel(const float* __restrict__ x, const TM* __restrict__ gate, int64_t gate_stride,
                        const TM* __restrict__ branch, float* h, const TM* __restrict__ shift, int64_t shift_stride,
                        const TM* __restrict__ scale, int64_t scale_stride, TY* __restrict__ y,
                        float* __restrict__ mean_out, float* __restrict__ rstd_out, int64_t rows, int64_t T, int D,
                        float eps) {
  NT_SHARED float shared[kThreads / 32];
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kNormRows;  // < rows (the launch)
  int64_t n_loaded = first / T;
  NormSampleLoads<TM, kPerThread> mod;
  NormRowLoads<TM, kPerThread> next;
  load_norm_sample<kResidual>(mod, gate, gate_stride, shift, shift_stride, scale, scale_stride, n_loaded, D);
  load_norm_row<kResidual>(next, x, branch, first, D);
  for (int i = 0; i < kNormRows; ++i) {
    const int64_t row = first + i, n = row / T;
    if (row >= rows) return;  // uniform over the block, as n
    if (n != n_loaded) {
      n_loaded = n;
      load_norm_sample<kResidual>(mod, gate, gate_stride, shift, shift_stride, scale, scale_stride, n, D);
    }
    float v[kPerThread];  // the norm's input
    float s = 0.f;
NT_UNROLL
    for (int k = 0; k < kPerThread; ++k) {
      const int d = static_cast<int>(threadIdx.x) + k * kThreads;
      v[k] = kResidual ? residual_sum(next.x[k], to_float(mod.gate[k]), to_float(next.branch[k])) : next.x[k];
      if (d < D) s += v[k];
    }
    if constexpr (kResidual) {
NT_UNROLL
      for (int k = 0; k < kPerThread; ++k) {
        const int d = static_cast<int>(threadIdx.x) + k * kThreads;
        if (d < D) h[row * D + d] = v[k];
      }
    }
    if (i + 1 < kNormRows && row + 1 < rows) load_norm_row<kResidual>(next, x, branch, row + 1, D);
    const float mean = block_sum(s, shared) / D;
    float q = 0.f;
NT_UNROLL
    for (int k = 0; k < kPerThread; ++k) {
      const int d = static_cast<int>(threadIdx.x) + k * kThreads;
      const float c = v[k] - mean;
      if (d < D) q += c * c;
    }
    const float rstd = rsqrtf(block_sum(q, shared) / D + eps);
    TY* yr = y + row * D;  // [D]
NT_UNROLL
    for (int k = 0; k < kPerThread; ++k) {
      const int d = static_cast<int>(threadIdx.x) + k * kThreads;
      if (d < D) {
        const float x_hat = (v[k] - mean) * rstd;
        const float s1 = round_to<TM>(1.f + to_float(mod.scale[k]));
        yr[d] = from_float<TY>(x_hat * s1 + to_float(mod.shift[k]));
      }
    }
    if (threadIdx.x == 0) {
      mean_out[row] = mean;
      rstd_out[row] = rstd;
    }
  }
}

// The norm's backward reads gy and x once: a block takes kTileRows rows of one sample; for each
// row it forms the row means of g = gy * s1 and g * x_hat (block sums) and writes
//   grad x = rstd * (g - mean(g) - x_hat * mean(g * x_hat));
// each thread keeps, for its columns d = threadIdx.x + k * kThreads, the tile's sums of
// gy * x_hat (grad scale) and gy (grad shift) in registers and writes them as the tile's partial
// sums, which tile_sum_kernel adds up over the sample's tiles in order (deterministic). scale's
// rows are `mod_stride` apart. Each thread keeps kPerThread columns (rows up to
// kThreads * kPerThread wide): the launch picks the smallest count that covers the row, so that a
// block holds no registers for columns it does not have (with room for 16 columns the kernel took
// 90 registers; 63 with the 9 that DiT-XL/2's rows of 1152 need: 187 -> 113 us per call on the
// H200). With x's gradient from elsewhere to add, the norm's backward goes another way (the
// residual's kernels without a branch, launch_modulated_norm_backward): with it added here the
// row's DRAM latency grew, 113 -> 241 us per call for rows of 1152 on the H200 (276.6 with it
// loaded before the row sums).
constexpr int kTileRows = 16;
constexpr int kMaxPerThread = 16;
constexpr int kMaxNormWidth = kThreads * kMaxPerThread;  // 2048

template <typename TM, typename TY, int kPerThread>
NT_GLOBAL void NT_BOUNDS(kThreads)
    norm_backward_kernel(const TY* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ mean,
                         const float* __restrict__ rstd, const TM* __restrict__ scale, int64_t mod_stride,
                         float* __restrict__ gx, float* __restrict__ part_scale,
                         float* __restrict__ part_shift, int64_t T, int D, int tiles) {
  NT_SHARED float shared[kThreads / 32];
  const int64_t n = blockIdx.x / tiles;
  const int tile = static_cast<int>(blockIdx.x % tiles);
  const int64_t t0 = static_cast<int64_t>(tile) * kTileRows, t1 = t0 + kTileRows < T ? t0 + kTileRows : T;
  const TM* sc = scale + n * mod_stride;
  float s1[kPerThread], acc_scale[kPerThread], acc_shift[kPerThread];
NT_UNROLL
  for (int k = 0; k < kPerThread; ++k) {
    const int d = threadIdx.x + k * kThreads;
    s1[k] = d < D ? round_to<TM>(1.f + to_float(sc[d])) : 0.f;
    acc_scale[k] = acc_shift[k] = 0.f;
  }
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = n * T + t, base = row * D;
    const TY* gr = gy + base;
    const float* xr = x + base;
    const float m = mean[row], r = rstd[row];
    float a = 0.f, b = 0.f;
NT_UNROLL
    for (int k = 0; k < kPerThread; ++k) {
      const int d = threadIdx.x + k * kThreads;
      if (d < D) {
        const float g = to_float(gr[d]) * s1[k];
        a += g;
        b += g * ((xr[d] - m) * r);
      }
    }
    const RowMeans means = row_means(a, b, shared, D);
NT_UNROLL
    for (int k = 0; k < kPerThread; ++k) {
      const int d = threadIdx.x + k * kThreads;
      if (d < D) {
        const float gyv = to_float(gr[d]), x_hat = (xr[d] - m) * r;
        gx[base + d] = norm_input_grad(r, gyv * s1[k], x_hat, means);
        acc_scale[k] += gyv * x_hat;
        acc_shift[k] += gyv;
      }
    }
  }
  const int64_t base = (n * tiles + tile) * D;
NT_UNROLL
  for (int k = 0; k < kPerThread; ++k) {
    const int d = threadIdx.x + k * kThreads;
    if (d < D) {
      part_scale[base + d] = acc_scale[k];
      part_shift[base + d] = acc_shift[k];
    }
  }
}

// The residual + norm backward, h = x' + gate * branch then the norm of h, in two kernels. Here a
// block per row, as in the forward (rows independent, all in flight: the one-pass tile kernel
// above, given h's gradient and branch as well, ran at 1.2 TB/s on the H200 where the plain one
// runs at 3.3): h formed again from x', gate and branch (residual_sum), the row sums of
// g = gy * s1 and g * x_hat, then
//   grad x' = gh + rstd * (g - mean(g) - x_hat * mean(g * x_hat))   (gh: h's own gradient; null: 0)
//   grad branch = grad x' * gate (TM)
// with the same arithmetic, per element and per row sum, as the tile kernel. Without kResidual
// (branch, gate and g_branch unused) x is the norm's input itself: the plain norm's backward with
// gh added. A template parameter, not a null test: with the test in the loop the plain norm's
// use slowed too (H200, DiT-XL/2's rows: 134 -> 205 us per call; 131 again as a template
// parameter). A thread issues all of its loads, as stored, before it converts or uses any: with
// each column's conversions next to its loads, nvcc 13 waited for each column's loads before
// issuing the next column's, 9 DRAM round trips a row (scripts/sass-summary; 252 us per call
// with kResidual, against 171 when h was read). The sums over the sample's tokens (grad gate,
// scale, shift) follow in residual_norm_backward_columns_kernel.
template <typename TM, typename TY, bool kResidual, int kPerThread>
NT_GLOBAL void NT_BOUNDS(kThreads)
    residual_norm_backward_rows_kernel(const float* __restrict__ gh, const TY* __restrict__ gy,
                                       const float* __restrict__ x, const TM* __restrict__ branch,
                                       const float* __restrict__ mean, const float* __restrict__ rstd,
                                       const TM* __restrict__ gate, const TM* __restrict__ scale, int64_t mod_stride,
                                       float* __restrict__ gx, TM* __restrict__ g_branch, int64_t T, int D) {
  NT_SHARED float shared[kThreads / 32];
  const int64_t row = blockIdx.x, n = row / T, base = row * D, mod = n * mod_stride;
  // The loads, as load_row_columns makes them (the sample's for gate and scale), but all of a
  // column's under one branch: with a load_row_columns call per matrix nvcc began the arithmetic
  // before the last matrix's loads (scripts/sass-summary, the plain use: batches 21 6 9 2, against
  // 36 this way).
  TY gyv[kPerThread];
  TM sv[kPerThread], gatev[kPerThread], bv[kPerThread];
  float xv[kPerThread], ghv[kPerThread];
NT_UNROLL
  for (int k = 0; k < kPerThread; ++k) {
    const int d = static_cast<int>(threadIdx.x) + k * kThreads;
    gyv[k] = TY{};
    sv[k] = gatev[k] = bv[k] = TM{};
    xv[k] = ghv[k] = 0.f;
    if (d < D) {
      gyv[k] = gy[base + d];
      sv[k] = scale[mod + d];
      xv[k] = x[base + d];
      if constexpr (kResidual) {
        gatev[k] = gate[mod + d];
        bv[k] = branch[base + d];
      }
      if (gh) ghv[k] = gh[base + d];
    }
  }
  const float m = mean[row], r = rstd[row];
  float g[kPerThread], x_hat[kPerThread];
  float a = 0.f, b = 0.f;
NT_UNROLL
  for (int k = 0; k < kPerThread; ++k) {
    const bool in_row = static_cast<int>(threadIdx.x) + k * kThreads < D;
    const float h = kResidual ? residual_sum(xv[k], to_float(gatev[k]), to_float(bv[k])) : xv[k];
    g[k] = in_row ? to_float(gyv[k]) * round_to<TM>(1.f + to_float(sv[k])) : 0.f;
    x_hat[k] = in_row ? (h - m) * r : 0.f;
    a += g[k];
    b += g[k] * x_hat[k];
  }
  const RowMeans means = row_means(a, b, shared, D);
NT_UNROLL
  for (int k = 0; k < kPerThread; ++k) {
    const int d = static_cast<int>(threadIdx.x) + k * kThreads;
    if (d < D) {
      const float grad = ghv[k] + norm_input_grad(r, g[k], x_hat[k], means);
      gx[base + d] = grad;
      if constexpr (kResidual) g_branch[base + d] = from_float<TM>(grad * to_float(gatev[k]));
    }
  }
}

// Sums over a sample's tokens, or over a split of the rows (the column kernels): a block of
// kColumnThreads threads takes kColumnWidth lanes' columns of one sample or split (blockIdx.x: the
// column chunk, blockIdx.y: the sample or split), a lane one column or kCols adjacent ones
// (ColumnTile below); its warps go down every kColumnGroups-th row (t = warp, warp +
// kColumnGroups, ...), so a warp reads whole segments of a row and all a sample's rows are in
// flight across the grid; then the warps' partial sums of a column are added in warp order
// through shared memory (deterministic, the same for any kCols). Blocks are 1-D (the CPU
// emulation's): lane and warp from threadIdx.x.
constexpr int kColumnThreads = 256;
constexpr int kColumnWidth = 32;
constexpr int kColumnGroups = kColumnThreads / kColumnWidth;  // 8

// kCols adjacent elements p[0..kCols) as floats (those from `width` on: 0), and the first `width`
// of v back; with kVector (then width == kCols and p kCols-element aligned) in aligned accesses of
// up to 16 bytes on the GPU: one of 4 or 16 bytes for 2 or 8 bf16 elements.
template <int kCols, typename T>
struct LaneAccess {
  static constexpr int kBytes = kCols * static_cast<int>(sizeof(T));
  static constexpr int kChunk = kBytes < 16 ? kBytes : 16;  // bytes per access
  static constexpr int kPerChunk = kChunk / static_cast<int>(sizeof(T));
  using Word = std::conditional_t<kChunk == 4, unsigned, std::conditional_t<kChunk == 8, uint2, uint4>>;
};
// A word W (LaneAccess' Word) from or to memory aligned to it: one access on the GPU; memcpy in
// the CPU run (no type punning there).
template <typename W>
NT_DEVICE W load_word(const void* p) {
#ifdef __CUDACC__
  return *reinterpret_cast<const W*>(p);
#else
  W w;
  memcpy(&w, p, sizeof(W));
  return w;
#endif
}
template <typename W>
NT_DEVICE void store_word(void* p, const W& w) {
#ifdef __CUDACC__
  *reinterpret_cast<W*>(p) = w;
#else
  memcpy(p, &w, sizeof(W));
#endif
}
// A lane's kCols adjacent elements as loaded, for a thread to issue all of its loads before it
// converts any (a conversion next to its load waits for it: nvcc 13 then issues the next load
// only after that one's round trip). kVector (p kCols-element aligned, width == kCols): whole
// words (LaneAccess), through load_word also in the CPU run; else element by element, those from
// `width` on zero.
template <int kCols, bool kVector, typename T>
struct LaneLoad {
  using A = LaneAccess<kCols, T>;
  using Item = std::conditional_t<kVector, typename A::Word, T>;
  static constexpr int kItems = kVector ? kCols / A::kPerChunk : kCols;
  Item item[kItems];

  NT_DEVICE void clear() {
NT_UNROLL
    for (int c = 0; c < kItems; ++c) item[c] = Item{};
  }
  NT_DEVICE void fetch(const T* p, int width) {
NT_UNROLL
    for (int c = 0; c < kItems; ++c) {
      if constexpr (kVector)
        item[c] = load_word<Item>(p + c * A::kPerChunk);
      else
        item[c] = c < width ? p[c] : T{};
    }
  }
  // The first `width` elements to p[0..) as loaded (kVector: whole words through store_word).
  NT_DEVICE void store(T* p, int width) const {
NT_UNROLL
    for (int c = 0; c < kItems; ++c) {
      if constexpr (kVector)
        store_word(p + c * A::kPerChunk, item[c]);
      else if (c < width)
        p[c] = item[c];
    }
  }
  // Element k as loaded (T, not converted).
  NT_DEVICE T element(int k) const {
    if constexpr (kVector) {
      T e[A::kPerChunk];
      memcpy(static_cast<void*>(e), &item[k / A::kPerChunk], sizeof(Item));
      return e[k % A::kPerChunk];
    } else {
      return item[k];
    }
  }
  NT_DEVICE void unpack(float (&v)[kCols]) const {
    if constexpr (kVector) {
NT_UNROLL
      for (int c = 0; c < kItems; ++c) {
        T e[A::kPerChunk];
        memcpy(static_cast<void*>(e), &item[c], sizeof(Item));
NT_UNROLL
        for (int k = 0; k < A::kPerChunk; ++k) v[c * A::kPerChunk + k] = to_float(e[k]);
      }
    } else {
NT_UNROLL
      for (int k = 0; k < kCols; ++k) v[k] = to_float(item[k]);
    }
  }
};
// kCols adjacent elements p[0..kCols) as floats (those from `width` on: 0), as one LaneLoad
// fetched and unpacked at once: for a lone load (a gate row), where nothing else could be issued
// before it is read.
template <int kCols, bool kVector, typename T>
NT_DEVICE void load_cols(const T* p, int width, float (&v)[kCols]) {
  LaneLoad<kCols, kVector, T> l;
  l.fetch(p, width);
  l.unpack(v);
}
// The first `width` of v to p[0..), rounded to T; with kVector (p kCols-element aligned, width ==
// kCols) in whole words through store_word.
template <int kCols, bool kVector, typename T>
NT_DEVICE void store_cols(T* p, int width, const float (&v)[kCols]) {
  if constexpr (kVector) {
    using A = LaneAccess<kCols, T>;
NT_UNROLL
    for (int c = 0; c < kCols / A::kPerChunk; ++c) {
      T e[A::kPerChunk];
NT_UNROLL
      for (int k = 0; k < A::kPerChunk; ++k) e[k] = from_float<T>(v[c * A::kPerChunk + k]);
      typename A::Word w;
      memcpy(&w, static_cast<const void*>(e), sizeof(w));
      store_word(p + c * A::kPerChunk, w);
    }
  } else {
NT_UNROLL
    for (int k = 0; k < kCols; ++k)
      if (k < width) p[k] = from_float<T>(v[k]);
  }
}

// The column kernels whose lanes take kCols adjacent columns each (the GELU's and the qkv
// gradient's: 8 where rows are 8-element aligned, a warp reading 512 contiguous bytes of a bf16
// row, else 2; the gated residual's backward: 2; the norms' sums over tokens: 4 or 1):
// kCols * kColumnWidth columns per block of kColumnThreads threads.
template <int kCols>
constexpr int kLaneBlockColumns = kCols * kColumnWidth;

// Where a thread of such a kernel works when the grid splits the M rows of `cols` columns
// (blockIdx.x: the column block, blockIdx.y: the split of rows_per_split rows): its lane and warp,
// its first column, how many of its kCols columns exist, and the split's rows [t0, t1).
struct ColumnTile {
  int lane, group, col, width;
  int64_t t0, t1;
};
template <int kCols>
NT_DEVICE ColumnTile column_tile(int64_t M, int cols, int64_t rows_per_split) {
  ColumnTile p;
  p.lane = static_cast<int>(threadIdx.x % kColumnWidth);
  p.group = static_cast<int>(threadIdx.x / kColumnWidth);
  p.col = static_cast<int>(blockIdx.x) * kLaneBlockColumns<kCols> + kCols * p.lane;
  p.width = cols - p.col >= kCols ? kCols : cols > p.col ? cols - p.col : 0;
  p.t0 = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  p.t1 = p.t0 + rows_per_split < M ? p.t0 + rows_per_split : M;
  return p;
}
// Adds acc (this lane's kCols columns' sums) over the block's kColumnGroups warps in warp order
// and writes the first `width` of them to out[0..), rounded to TO (fp32 sums and workspaces stay
// fp32; a per-sample gradient is written in its parameter's dtype, as the cast after it would
// round it). shared holds kCols * kColumnThreads floats; every thread of the block calls it. The
// order of the additions does not depend on kCols.
template <int kCols, typename TO = float>
NT_DEVICE void store_lane_sums(const float (&acc)[kCols], float* shared, int width, TO* out) {
  const int lane = static_cast<int>(threadIdx.x % kColumnWidth), group = static_cast<int>(threadIdx.x / kColumnWidth);
  for (int k = 0; k < kCols; ++k) shared[group * kLaneBlockColumns<kCols> + kCols * lane + k] = acc[k];
  __syncthreads();
  if (group == 0) {
    for (int k = 0; k < width; ++k) {
      float total = 0.f;
      for (int w = 0; w < kColumnGroups; ++w) total += shared[w * kLaneBlockColumns<kCols> + kCols * lane + k];
      out[k] = from_float<TO>(total);
    }
  }
}

// Rows a warp of a column kernel loads at once (LaneLoad), before it reads any of them: the
// gated residual's backward and the plain norm's sums; with a residual's branch (four matrices a
// row) the norms' sums take 2, which keeps them at 3 blocks an SM (72 registers for bf16 with 4
// columns a lane; 98 with 4 rows).
constexpr int kColumnRows = 4;

// grad gate = sum over t of grad x'[t] * branch[t], grad scale = sum of gy * x_hat, grad shift =
// sum of gy, for each (n, d); grad x' as residual_norm_backward_rows_kernel wrote it, and x_hat
// from h = x' + gate * branch formed again as there (x: x'; without kGate x is h). With kBias
// also g_bias = the sum of grad branch (grad x' * gate rounded to TM, the values the rows kernel
// wrote): the per-sample part of the gradient of the bias of the product that made the branch.
// Without kGate (no branch: the plain norm's backward) only grad scale and grad shift. The sums
// are fp32 and written in TM, rounded once (a cast after them cost a kernel each: 215 per
// DiT-XL/2 step on the H200, 0.42 ms); g_bias stays an fp32 workspace. Each lane
// takes kCols adjacent columns: 4 where D and the rows allow (kVector: one 16-byte access of x and
// gx, 8 bytes of bf16 gy and branch), else 1 (one column a lane, a warp reading 64 or 128 bytes
// of a row, ran at 2.3 TB/s on the H200 for the plain norm's sums of DiT-XL/2's rows, 97 us per
// call); the same sums in the same order either way.
template <typename TM, typename TY, bool kGate, bool kBias, int kCols, bool kVector>
NT_GLOBAL void NT_BOUNDS(kColumnThreads)
    residual_norm_backward_columns_kernel(const TY* __restrict__ gy, const float* __restrict__ x,
                                          const float* __restrict__ mean, const float* __restrict__ rstd,
                                          const float* __restrict__ gx, const TM* __restrict__ branch,
                                          const TM* __restrict__ gate, int64_t mod_stride, TM* __restrict__ g_gate,
                                          TM* __restrict__ g_scale, TM* __restrict__ g_shift,
                                          float* __restrict__ g_bias, int64_t T, int D) {
  static_assert(kGate || !kBias, "the bias's gradient comes with the gate's");
  constexpr int kRows = kGate ? 2 : kColumnRows;
  constexpr int kSums = kBias ? 4 : kGate ? 3 : 2, kScale = kGate ? 1 : 0;
  NT_SHARED float shared[kSums * kCols * kColumnThreads];
  const int64_t n = blockIdx.y;
  const ColumnTile tile = column_tile<kCols>(gridDim.y * T, D, T);  // the split: the sample's rows
  const int group = tile.group, d = tile.col, width = tile.width;
  float acc[kSums][kCols] = {};  // (gate,) scale, shift (, bias)
  if (width > 0) {
    float gt[kCols] = {};
    if constexpr (kGate) load_cols<kCols, kVector>(gate + n * mod_stride + d, width, gt);
    // kRows rows at a time: all their loads issued, then their sums, row by row.
    for (int64_t t0 = group; t0 < T; t0 += kRows * kColumnGroups) {
      LaneLoad<kCols, kVector, TY> gyl[kRows];
      LaneLoad<kCols, kVector, float> xl[kRows], gxl[kRows];
      LaneLoad<kCols, kVector, TM> bl[kRows];
      float m[kRows], r[kRows];
NT_UNROLL
      for (int u = 0; u < kRows; ++u) {
        const int64_t t = t0 + u * kColumnGroups, row = n * T + t, i = row * D + d;
        gyl[u].clear();
        xl[u].clear();
        gxl[u].clear();
        bl[u].clear();
        m[u] = r[u] = 0.f;
        if (t < T) {
          m[u] = mean[row];
          r[u] = rstd[row];
          gyl[u].fetch(gy + i, width);
          xl[u].fetch(x + i, width);
          if constexpr (kGate) {
            gxl[u].fetch(gx + i, width);
            bl[u].fetch(branch + i, width);
          }
        }
      }
NT_UNROLL
      for (int u = 0; u < kRows; ++u) {
        if (t0 + u * kColumnGroups >= T) break;  // uniform over the warp
        float gyv[kCols], xv[kCols], gxv[kCols], bv[kCols];  // past width: 0
        gyl[u].unpack(gyv);
        xl[u].unpack(xv);
        gxl[u].unpack(gxv);
        bl[u].unpack(bv);
NT_UNROLL
        for (int k = 0; k < kCols; ++k) {
          const float h = kGate ? residual_sum(xv[k], gt[k], bv[k]) : xv[k];
          const float x_hat = (h - m[u]) * r[u];
          if constexpr (kGate) acc[0][k] += gxv[k] * bv[k];
          acc[kScale][k] += gyv[k] * x_hat;
          acc[kScale + 1][k] += gyv[k];
          if constexpr (kBias) acc[3][k] += round_to<TM>(gxv[k] * gt[k]);
        }
      }
    }
  }
  auto store = [&](int j, auto* out) {
    store_lane_sums<kCols>(acc[j], shared + j * kCols * kColumnThreads, width, out + n * D + d);
  };
  if constexpr (kGate) store(0, g_gate);
  store(kScale, g_scale);
  store(kScale + 1, g_shift);
  if constexpr (kBias) store(3, g_bias);  // fp32: a workspace
}

// out[n, d] = sum over the sample's tiles of part[n, tile, d], in order (fp32), written in T; for
// two buffers at once (part_b and out_b null: one).
template <typename T>
NT_GLOBAL void tile_sum_kernel(const float* __restrict__ part_a, const float* __restrict__ part_b,
                               T* __restrict__ out_a, T* __restrict__ out_b, int tiles, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (d >= D) return;
  float a = 0.f, b = 0.f;
#ifdef __CUDACC__
#pragma unroll 4
#endif
  for (int tile = 0; tile < tiles; ++tile) {
    const int64_t i = (n * tiles + tile) * D + d;
    a += part_a[i];
    if (part_b) b += part_b[i];
  }
  out_a[n * D + d] = from_float<T>(a);
  if (out_b) out_b[n * D + d] = from_float<T>(b);
}

// Tiles per sample and the floats of workspace the norm's backward needs (two partial sums).
inline int norm_backward_tiles(int64_t T) { return static_cast<int>((T + kTileRows - 1) / kTileRows); }
inline int64_t norm_backward_workspace(int64_t rows, int64_t T, int D) {
  return 2 * (rows / T) * norm_backward_tiles(T) * static_cast<int64_t>(D);
}

// The elementwise kernels go row by row (a block per row, grid-stride over rows): the sample
// index is one division per row, not two 64-bit divisions per element.
template <typename TB>
NT_GLOBAL void gated_residual_fwd_kernel(const float* __restrict__ x, const TB* __restrict__ gate, int64_t gate_stride,
                                          const TB* __restrict__ branch, float* __restrict__ out, int64_t rows,
                                          int64_t T, int D) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const TB* g = gate + (row / T) * gate_stride;  // [D]
    const int64_t base = row * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
      out[base + d] = x[base + d] + to_float(g[d]) * to_float(branch[base + d]);
  }
}

// gated_residual_fwd_kernel four elements per thread, each row's D / 4 groups a thread each (a
// block of them per row, grid-stride over rows), for D a multiple of 4 and every row and gate row
// 4-element aligned: one 16-byte load of x, one of branch (8 bytes in bf16), one of the gate, one
// store. The same arithmetic per element. (The one-element kernel moved 377 MB per call in
// 124.5 us on the H200 for DiT-XL/2's rows: 3.0 TB/s.)
template <typename TB>
NT_GLOBAL void gated_residual_fwd4_kernel(const float* __restrict__ x, const TB* __restrict__ gate,
                                          int64_t gate_stride, const TB* __restrict__ branch, float* __restrict__ out,
                                          int64_t rows, int64_t T, int D) {
  const int d = 4 * static_cast<int>(threadIdx.x);
  if (d >= D) return;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t i = row * D + d;
    float xv[4], gv[4], bv[4], ov[4];
    load_cols<4, true>(x + i, 4, xv);
    load_cols<4, true>(gate + (row / T) * gate_stride + d, 4, gv);
    load_cols<4, true>(branch + i, 4, bv);
    for (int k = 0; k < 4; ++k) ov[k] = xv[k] + gv[k] * bv[k];
    store_cols<4, true>(out + i, 4, ov);
  }
}

// out[d] = the sum over the N rows of part[n, d] (fp32), rounded to T: a block of kColumnThreads
// threads per kColumnWidth columns, its kColumnGroups warps each every kColumnGroups-th row in
// order, the warps' sums added in warp order (deterministic). (tile_sum_kernel's thread per column
// going down all rows took 15 us per call for 128 rows of 1152 on the H200: 9 blocks.) With
// `accumulate`, out[d] += that sum, added to out's value in fp32 and rounded once (a parameter's
// gradient buffer, models/linear_backward.h).
template <typename T>
NT_GLOBAL void NT_BOUNDS(kColumnThreads)
    row_sum_kernel(const float* __restrict__ part, T* __restrict__ out, int64_t N, int D, bool accumulate) {
  NT_SHARED float shared[kColumnThreads];
  const int lane = static_cast<int>(threadIdx.x % kColumnWidth), group = static_cast<int>(threadIdx.x / kColumnWidth);
  const int d = static_cast<int>(blockIdx.x) * kColumnWidth + lane;
  float acc = 0.f;
  if (d < D) {
#ifdef __CUDACC__
#pragma unroll 4
#endif
    for (int64_t n = group; n < N; n += kColumnGroups) acc += part[n * D + d];
  }
  shared[group * kColumnWidth + lane] = acc;
  __syncthreads();
  if (group == 0 && d < D) {
    float total = 0.f;
    for (int w = 0; w < kColumnGroups; ++w) total += shared[w * kColumnWidth + lane];
    out[d] = from_float<T>(accumulate ? to_float(out[d]) + total : total);
  }
}

// The gated residual's backward in one pass, laid out as the column kernels (two columns a lane):
// grad branch = grad * gate for each element, and grad gate = the sum over the sample's rows of
// grad * branch; a block per kLaneBlockColumns<2> columns of a sample, each lane two adjacent
// columns (with kVector one 8-byte load of grad and 4-byte accesses of branch and grad branch in
// bf16: D even and every row and gate row 2-element aligned; else element by element, for any
// D), each warp every kColumnGroups-th row, the warps added in order: deterministic. grad is read
// once. grad gate is summed in fp32 and written in TB. With kBias also grad_bias = the sum of grad
// branch as written (the per-sample part of the branch's bias gradient, an fp32 workspace). (On
// the H200 for DiT-XL/2's rows: a thread per column going down all T rows ran at 1.6 TB/s; a lane
// per column, each warp every 8th row, 302 MB per call in 114 us, 2.6 TB/s.)
template <typename TB, bool kBias, bool kVector>
NT_GLOBAL void NT_BOUNDS(kColumnThreads)
    gated_residual_bwd_kernel(const float* __restrict__ grad, const TB* __restrict__ gate, int64_t gate_stride,
                              const TB* __restrict__ branch, TB* __restrict__ grad_branch,
                              TB* __restrict__ grad_gate, float* __restrict__ grad_bias, int64_t T, int D) {
  constexpr int kSums = kBias ? 2 : 1;
  NT_SHARED float shared[kSums * 2 * kColumnThreads];
  const int64_t n = blockIdx.y;
  const ColumnTile tile = column_tile<2>(gridDim.y * T, D, T);  // the split: the sample's rows
  const int group = tile.group, d = tile.col, width = tile.width;
  float acc[kSums][2] = {};
  if (width > 0) {
    float g[2];
    load_cols<2, kVector>(gate + n * gate_stride + d, width, g);
    // kColumnRows rows at a time: all their loads issued, then each row's outputs.
    for (int64_t t0 = group; t0 < T; t0 += kColumnRows * kColumnGroups) {
      LaneLoad<2, kVector, float> grl[kColumnRows];
      LaneLoad<2, kVector, TB> brl[kColumnRows];
NT_UNROLL
      for (int u = 0; u < kColumnRows; ++u) {
        const int64_t t = t0 + u * kColumnGroups, i = (n * T + t) * D + d;
        grl[u].clear();
        brl[u].clear();
        if (t < T) {
          grl[u].fetch(grad + i, width);
          brl[u].fetch(branch + i, width);
        }
      }
NT_UNROLL
      for (int u = 0; u < kColumnRows; ++u) {
        const int64_t t = t0 + u * kColumnGroups, i = (n * T + t) * D + d;
        if (t >= T) break;  // uniform over the warp
        float gr[2], br[2];
        grl[u].unpack(gr);
        brl[u].unpack(br);
        const float gb[2] = {round_to<TB>(gr[0] * g[0]), round_to<TB>(gr[1] * g[1])};
        store_cols<2, kVector>(grad_branch + i, width, gb);
        for (int k = 0; k < 2; ++k) {  // a missing second column adds zeros
          acc[0][k] += gr[k] * br[k];
          if constexpr (kBias) acc[1][k] += gb[k];
        }
      }
    }
  }
  store_lane_sums<2>(acc[0], shared, width, grad_gate + n * D + d);
  if constexpr (kBias) store_lane_sums<2>(acc[1], shared + 2 * kColumnThreads, width, grad_bias + n * D + d);
}

// The bias gradient from per-sample parts [N, D] (fp32): their sum over the samples, rounded to T
// (the dtype the branch's product ran in, as its bias gradient's sum is); with `accumulate` added
// into out (see row_sum_kernel).
template <typename T>
void launch_sample_sum(const float* part, T* out, int64_t N, int D, cudaStream_t s, bool accumulate = false) {
  auto kernel = row_sum_kernel<T>;
  NT_LAUNCH(kernel, dim3(static_cast<unsigned>((D + kColumnWidth - 1) / kColumnWidth)), dim3(kColumnThreads), s, part,
            out, N, D, accumulate);
}

// Whether p is kN-element aligned (for one access of kN elements: kN = 2, 4: 8 or 16 bytes in
// fp32, 4 or 8 in bf16; 8 bf16: 16 bytes).
template <int kN, typename T>
bool aligned_to(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (kN * sizeof(T)) == 0;
}
// Starts a column kernel with the widest lane access the rows allow (the GELU's and the qkv
// gradient's): 8 columns a lane where `wide`, 2 in paired accesses where `pair`, else 2 element by
// element. kernel_for(kCols, kVector) (as std::integral_constant, std::bool_constant) names the
// kernel; launch(kernel, the columns of a block) starts it.
template <typename KernelFor, typename Launch>
void launch_lane_columns(bool wide, bool pair, KernelFor kernel_for, Launch launch) {
  using Eight = std::integral_constant<int, 8>;
  using Two = std::integral_constant<int, 2>;
  if (wide)
    launch(kernel_for(Eight{}, std::true_type{}), kLaneBlockColumns<8>);
  else if (pair)
    launch(kernel_for(Two{}, std::true_type{}), kLaneBlockColumns<2>);
  else
    launch(kernel_for(Two{}, std::false_type{}), kLaneBlockColumns<2>);
}

// Blocks (of kRowThreads threads) for a row-wise elementwise kernel over `rows` rows.
constexpr int kRowThreads = 256;
inline unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(rows < 65536 * 8 ? rows : 65536 * 8); }

// ---- launches (grid and block of each kernel) ----------------------------------------------

// The instantiation of a row kernel for 2, 4, 6, 9, 12 or 16 columns per thread: the fewest that
// cover a row of D (<= kMaxNormWidth) with kThreads threads. `kernel(std::integral_constant<int,
// P>{})` gives the kernel for P columns.
template <typename Kernel>
auto pick_per_thread(int D, Kernel kernel) {
  const int per_thread = (D + kThreads - 1) / kThreads;
  if (per_thread <= 2) return kernel(std::integral_constant<int, 2>{});
  if (per_thread <= 4) return kernel(std::integral_constant<int, 4>{});
  if (per_thread <= 6) return kernel(std::integral_constant<int, 6>{});
  if (per_thread <= 9) return kernel(std::integral_constant<int, 9>{});
  if (per_thread <= 12) return kernel(std::integral_constant<int, 12>{});
  return kernel(std::integral_constant<int, kMaxPerThread>{});
}

// Blocks of norm_forward_kernel for `rows` rows (kNormRows each, the last one maybe fewer).
inline unsigned norm_forward_blocks(int64_t rows) { return static_cast<unsigned>((rows + kNormRows - 1) / kNormRows); }

template <typename TM, typename TY>
void launch_modulated_norm_forward(const float* x, const TM* shift, int64_t shift_stride, const TM* scale,
                                   int64_t scale_stride, TY* y, float* mean, float* rstd, int64_t rows, int64_t T,
                                   int D, float eps, cudaStream_t s) {
  auto kernel = pick_per_thread(D, [](auto p) { return norm_forward_kernel<TM, TY, false, decltype(p)::value>; });
  NT_LAUNCH(kernel, dim3(norm_forward_blocks(rows)), dim3(kThreads), s, x, static_cast<const TM*>(nullptr), int64_t{0},
            static_cast<const TM*>(nullptr), static_cast<float*>(nullptr), shift, shift_stride, scale, scale_stride, y,
            mean, rstd, rows, T, D, eps);
}

// residual_norm_backward_columns_kernel for N samples: four columns a lane where `wide` (D a
// multiple of 4, every matrix and gate row 4-element aligned), else one.
template <typename TM, typename TY, bool kGate, bool kBias>
void launch_norm_columns(bool wide, const TY* gy, const float* x, const float* mean, const float* rstd,
                         const float* gx, const TM* branch, const TM* gate, int64_t mod_stride, TM* g_gate,
                         TM* g_scale, TM* g_shift, float* g_bias, int64_t N, int64_t T, int D, cudaStream_t s) {
  auto launch = [&](auto kernel, int columns) {
    const dim3 grid(static_cast<unsigned>((D + columns - 1) / columns), static_cast<unsigned>(N));
    NT_LAUNCH(kernel, grid, dim3(kColumnThreads), s, gy, x, mean, rstd, gx, branch, gate, mod_stride, g_gate, g_scale,
              g_shift, g_bias, T, D);
  };
  if (wide)
    launch(residual_norm_backward_columns_kernel<TM, TY, kGate, kBias, 4, true>, kLaneBlockColumns<4>);
  else
    launch(residual_norm_backward_columns_kernel<TM, TY, kGate, kBias, 1, false>, kLaneBlockColumns<1>);
}

// The norm's backward: norm_backward_kernel, then the tiles' partial sums added up; with x's
// gradient from elsewhere (gx_other) to add, the residual's row kernel (a block per row, gx_other
// as h's own gradient, no branch) and its column kernel for the sums over tokens.
// workspace: norm_backward_workspace(rows, T, D) floats.
template <typename TM, typename TY>
void launch_modulated_norm_backward(const TY* gy, const float* x, const float* mean, const float* rstd,
                                    const TM* scale, int64_t scale_stride, const float* gx_other, float* gx,
                                    TM* g_scale, TM* g_shift, float* workspace, int64_t rows, int64_t T, int D,
                                    cudaStream_t s) {
  const int64_t N = rows / T;
  if (gx_other) {
    auto row_kernel = pick_per_thread(
        D, [](auto p) { return residual_norm_backward_rows_kernel<TM, TY, false, decltype(p)::value>; });
    NT_LAUNCH(row_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), s, gx_other, gy, x,
              static_cast<const TM*>(nullptr), mean, rstd, static_cast<const TM*>(nullptr), scale, scale_stride, gx,
              static_cast<TM*>(nullptr), T, D);
    launch_norm_columns<TM, TY, false, false>(D % 4 == 0 && aligned_to<4>(gy) && aligned_to<4>(x), gy, x, mean, rstd,
                                              nullptr, nullptr, nullptr, scale_stride, static_cast<TM*>(nullptr),
                                              g_scale, g_shift, nullptr, N, T, D, s);
    return;
  }
  const int tiles = norm_backward_tiles(T);
  const int64_t part = N * tiles * static_cast<int64_t>(D);
  float *part_scale = workspace, *part_shift = workspace + part;
  auto row_kernel = pick_per_thread(D, [](auto p) { return norm_backward_kernel<TM, TY, decltype(p)::value>; });
  NT_LAUNCH(row_kernel, dim3(static_cast<unsigned>(N * tiles)), dim3(kThreads), s, gy, x, mean, rstd, scale,
            scale_stride, gx, part_scale, part_shift, T, D, tiles);
  auto sum_kernel = tile_sum_kernel<TM>;
  NT_LAUNCH(sum_kernel, dim3(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(N)), dim3(128), s,
            part_scale, part_shift, g_scale, g_shift, tiles, D);
}

template <typename TB>
void launch_gated_residual_forward(const float* x, const TB* gate, int64_t gate_stride, const TB* branch, float* out,
                                   int64_t rows, int64_t T, int D, cudaStream_t s) {
  const bool vector = D % 4 == 0 && D / 4 <= 1024 && gate_stride % 4 == 0 && aligned_to<4>(x) && aligned_to<4>(gate) &&
                      aligned_to<4>(branch) && aligned_to<4>(out);
  if (vector) {
    auto kernel = gated_residual_fwd4_kernel<TB>;
    const unsigned threads = static_cast<unsigned>((D / 4 + 31) / 32 * 32);
    NT_LAUNCH(kernel, dim3(row_blocks(rows)), dim3(threads), s, x, gate, gate_stride, branch, out, rows, T, D);
    return;
  }
  auto kernel = gated_residual_fwd_kernel<TB>;
  NT_LAUNCH(kernel, dim3(row_blocks(rows)), dim3(kRowThreads), s, x, gate, gate_stride, branch, out, rows, T, D);
}

// grad_bias_part [N, D] fp32 and grad_bias [D] (TB) both null, or both given (the bias gradient;
// with accumulate_bias added into grad_bias).
template <typename TB>
void launch_gated_residual_backward(const float* grad, const TB* gate, int64_t gate_stride, const TB* branch,
                                    TB* grad_branch, TB* grad_gate, float* grad_bias_part, TB* grad_bias,
                                    int64_t rows, int64_t T, int D, cudaStream_t s, bool accumulate_bias = false) {
  const bool vector = D % 2 == 0 && gate_stride % 2 == 0 && aligned_to<2>(grad) && aligned_to<2>(gate) &&
                      aligned_to<2>(branch) && aligned_to<2>(grad_branch);
  auto pick = [&](auto with_bias) {
    constexpr bool kBias = decltype(with_bias)::value;
    return vector ? gated_residual_bwd_kernel<TB, kBias, true> : gated_residual_bwd_kernel<TB, kBias, false>;
  };
  auto kernel = grad_bias ? pick(std::true_type{}) : pick(std::false_type{});
  const dim3 grid(static_cast<unsigned>((D + kLaneBlockColumns<2> - 1) / kLaneBlockColumns<2>),
                  static_cast<unsigned>(rows / T));
  NT_LAUNCH(kernel, grid, dim3(kColumnThreads), s, grad, gate, gate_stride, branch, grad_branch, grad_gate,
            grad_bias_part, T, D);
  if (grad_bias) launch_sample_sum(grad_bias_part, grad_bias, rows / T, D, s, accumulate_bias);
}


template <typename TM, typename TY>
void launch_residual_norm_forward(const float* x, const TM* gate, const TM* branch, const TM* shift, const TM* scale,
                                  int64_t mod_stride, float* h, TY* y, float* mean, float* rstd, int64_t rows,
                                  int64_t T, int D, float eps, cudaStream_t s) {
  auto kernel = pick_per_thread(D, [](auto p) { return norm_forward_kernel<TM, TY, true, decltype(p)::value>; });
  NT_LAUNCH(kernel, dim3(norm_forward_blocks(rows)), dim3(kThreads), s, x, gate, mod_stride, branch, h, shift,
            mod_stride, scale, mod_stride, y, mean, rstd, rows, T, D, eps);
}

// x: the residual's input x' (h = x' + gate * branch is formed again, not read). gh may be null
// (h's own gradient is zero). No workspace: the sums over tokens are a kernel of their own.
// g_bias_part [N, D] fp32 and g_bias [D] (TM) both null, or both given (the gradient of the bias
// of the branch's product, summed as the column kernel's other sums; with accumulate_bias added
// into g_bias).
template <typename TM, typename TY>
void launch_residual_norm_backward(const float* gh, const TY* gy, const float* x, const float* mean, const float* rstd,
                                   const TM* gate, const TM* branch, const TM* scale, int64_t mod_stride, float* gx,
                                   TM* g_branch, TM* g_gate, TM* g_scale, TM* g_shift, float* g_bias_part,
                                   TM* g_bias, int64_t rows, int64_t T, int D, cudaStream_t s,
                                   bool accumulate_bias = false) {
  auto row_kernel =
      pick_per_thread(D, [](auto p) { return residual_norm_backward_rows_kernel<TM, TY, true, decltype(p)::value>; });
  NT_LAUNCH(row_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), s, gh, gy, x, branch, mean, rstd, gate,
            scale, mod_stride, gx, g_branch, T, D);
  const bool wide = D % 4 == 0 && mod_stride % 4 == 0 && aligned_to<4>(gy) && aligned_to<4>(x) && aligned_to<4>(gx) &&
                    aligned_to<4>(branch) && aligned_to<4>(gate);
  if (g_bias)
    launch_norm_columns<TM, TY, true, true>(wide, gy, x, mean, rstd, gx, branch, gate, mod_stride, g_gate, g_scale,
                                            g_shift, g_bias_part, rows / T, T, D, s);
  else
    launch_norm_columns<TM, TY, true, false>(wide, gy, x, mean, rstd, gx, branch, gate, mod_stride, g_gate, g_scale,
                                             g_shift, nullptr, rows / T, T, D, s);
  if (g_bias) launch_sample_sum(g_bias_part, g_bias, rows / T, D, s, accumulate_bias);
}

}  // namespace nt::cuda::device
