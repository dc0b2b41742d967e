// The bodies of the project's CUDA kernels and their launch configurations (the API around them:
// fused_kernels_cuda.h). nvcc compiles them for the GPU in fused_kernels_cuda.cu; a host
// compiler compiles the very same code for a CPU run in tests (tests/models/cuda_emulation.h
// provides threadIdx, __syncthreads, __shfl_xor_sync and the launch), so the indexing and the
// reductions are checked on any machine. LayerNorm + adaLN modulate: one block of kThreads
// threads per row for the row-wise parts (statistics, y, grad_x); the gated residual: a block
// per row, grid-stride over rows; one thread per (n, d) for the sums over a sample's T rows.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#ifdef __CUDACC__
#define NT_GLOBAL __global__
#define NT_DEVICE __device__ __forceinline__
#define NT_SHARED __shared__
#define NT_BOUNDS(n) __launch_bounds__(n)
#define NT_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else  // the CPU run of tests/models/cuda_emulation.h: blocks one after another
#define NT_GLOBAL
#define NT_DEVICE inline
#define NT_SHARED static  // one copy for the block's threads (one block runs at a time)
#define NT_BOUNDS(n)
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

template <typename TM, typename TY>
NT_GLOBAL void NT_BOUNDS(kThreads)
    forward_kernel(const float* __restrict__ x, const TM* __restrict__ shift, int64_t shift_stride,
                   const TM* __restrict__ scale, int64_t scale_stride, TY* __restrict__ y, float* __restrict__ mean_out,
                   float* __restrict__ rstd_out, int64_t T, int D, float eps) {
  NT_SHARED float shared[kThreads / 32];
  const int64_t row = blockIdx.x, n = row / T;
  const float* xr = x + row * D;  // [D]
  float s = 0.f;
  for (int d = threadIdx.x; d < D; d += kThreads) s += xr[d];
  const float mean = block_sum(s, shared) / D;
  float q = 0.f;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    const float c = xr[d] - mean;
    q += c * c;
  }
  const float rstd = rsqrtf(block_sum(q, shared) / D + eps);
  const TM* sh = shift + n * shift_stride;  // [D]
  const TM* sc = scale + n * scale_stride;  // [D]
  TY* yr = y + row * D;                     // [D]
  for (int d = threadIdx.x; d < D; d += kThreads) {
    const float x_hat = (xr[d] - mean) * rstd;
    const float s1 = round_to<TM>(1.f + to_float(sc[d]));
    yr[d] = from_float<TY>(x_hat * s1 + to_float(sh[d]));
  }
  if (threadIdx.x == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

template <typename TM, typename TY>
NT_GLOBAL void NT_BOUNDS(kThreads)
    grad_x_kernel(const TY* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ mean,
                  const float* __restrict__ rstd, const TM* __restrict__ scale, int64_t scale_stride,
                  float* __restrict__ gx, int64_t T, int D) {
  NT_SHARED float shared[kThreads / 32];
  const int64_t row = blockIdx.x, n = row / T;
  const TY* gr = gy + row * D;
  const float* xr = x + row * D;
  const TM* sc = scale + n * scale_stride;
  const float m = mean[row], r = rstd[row];
  float a = 0.f, b = 0.f;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    const float g = to_float(gr[d]) * round_to<TM>(1.f + to_float(sc[d]));
    a += g;
    b += g * ((xr[d] - m) * r);
  }
  const float mean_g = block_sum(a, shared) / D;
  const float mean_gx = block_sum(b, shared) / D;
  float* out = gx + row * D;
  for (int d = threadIdx.x; d < D; d += kThreads) {
    const float g = to_float(gr[d]) * round_to<TM>(1.f + to_float(sc[d]));
    out[d] = r * (g - mean_g - ((xr[d] - m) * r) * mean_gx);
  }
}

template <typename TY>
NT_GLOBAL void grad_mod_kernel(const TY* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ mean,
                                const float* __restrict__ rstd, float* __restrict__ g_scale,
                                float* __restrict__ g_shift, int64_t T, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (d >= D) return;
  float a = 0.f, b = 0.f;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = n * T + t;
    const float g = to_float(gy[row * D + d]);
    a += g * ((x[row * D + d] - mean[row]) * rstd[row]);
    b += g;
  }
  g_scale[n * D + d] = a;
  g_shift[n * D + d] = b;
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

template <typename TB>
NT_GLOBAL void grad_branch_kernel(const float* __restrict__ grad, const TB* __restrict__ gate, int64_t gate_stride,
                                   TB* __restrict__ grad_branch, int64_t rows, int64_t T, int D) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const TB* g = gate + (row / T) * gate_stride;  // [D]
    const int64_t base = row * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
      grad_branch[base + d] = from_float<TB>(grad[base + d] * to_float(g[d]));
  }
}

template <typename TB>
NT_GLOBAL void grad_gate_kernel(const float* __restrict__ grad, const TB* __restrict__ branch,
                                 float* __restrict__ grad_gate, int64_t T, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t n = blockIdx.y;
  if (d >= D) return;
  float a = 0.f;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t i = (n * T + t) * D + d;
    a += grad[i] * to_float(branch[i]);
  }
  grad_gate[n * D + d] = a;
}

// Blocks (of kRowThreads threads) for a row-wise elementwise kernel over `rows` rows.
constexpr int kRowThreads = 256;
inline unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(rows < 65536 * 8 ? rows : 65536 * 8); }

// ---- launches (grid and block of each kernel) ----------------------------------------------

template <typename TM, typename TY>
void launch_modulated_norm_forward(const float* x, const TM* shift, int64_t shift_stride, const TM* scale,
                                   int64_t scale_stride, TY* y, float* mean, float* rstd, int64_t rows, int64_t T,
                                   int D, float eps, cudaStream_t s) {
  auto kernel = forward_kernel<TM, TY>;
  NT_LAUNCH(kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), s, x, shift, shift_stride, scale, scale_stride,
            y, mean, rstd, T, D, eps);
}

template <typename TM, typename TY>
void launch_modulated_norm_backward(const TY* gy, const float* x, const float* mean, const float* rstd,
                                    const TM* scale, int64_t scale_stride, float* gx, float* g_scale, float* g_shift,
                                    int64_t rows, int64_t T, int D, cudaStream_t s) {
  auto row_kernel = grad_x_kernel<TM, TY>;
  NT_LAUNCH(row_kernel, dim3(static_cast<unsigned>(rows)), dim3(kThreads), s, gy, x, mean, rstd, scale, scale_stride,
            gx, T, D);
  auto sum_kernel = grad_mod_kernel<TY>;
  NT_LAUNCH(sum_kernel, dim3(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(rows / T)), dim3(128), s, gy,
            x, mean, rstd, g_scale, g_shift, T, D);
}

template <typename TB>
void launch_gated_residual_forward(const float* x, const TB* gate, int64_t gate_stride, const TB* branch, float* out,
                                   int64_t rows, int64_t T, int D, cudaStream_t s) {
  auto kernel = gated_residual_fwd_kernel<TB>;
  NT_LAUNCH(kernel, dim3(row_blocks(rows)), dim3(kRowThreads), s, x, gate, gate_stride, branch, out, rows, T, D);
}

template <typename TB>
void launch_gated_residual_backward(const float* grad, const TB* gate, int64_t gate_stride, const TB* branch,
                                    TB* grad_branch, float* grad_gate, int64_t rows, int64_t T, int D, cudaStream_t s) {
  auto row_kernel = grad_branch_kernel<TB>;
  NT_LAUNCH(row_kernel, dim3(row_blocks(rows)), dim3(kRowThreads), s, grad, gate, gate_stride, grad_branch, rows, T, D);
  auto sum_kernel = grad_gate_kernel<TB>;
  NT_LAUNCH(sum_kernel, dim3(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(rows / T)), dim3(128), s,
            grad, branch, grad_gate, T, D);
}

}  // namespace nt::cuda::device
