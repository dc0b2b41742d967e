// The project's CUDA kernels (see fused_kernels_cuda.h): LayerNorm + adaLN modulate (one block
// of kThreads threads per row for the row-wise parts: statistics, y, grad_x) and the gated
// residual (elementwise, a block per row, grid-stride over rows); one thread per (n, d) for the
// sums over a sample's T rows.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/cuda_check.h"
#include "models/fused_kernels_cuda.h"

namespace nt::cuda {
namespace {

constexpr int kThreads = 128;  // per row; a multiple of 32

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
// v rounded to T's precision (round to nearest even), as a float.
template <typename T>
__device__ __forceinline__ float round_to(float v) { return to_float(from_float<T>(v)); }

// The sum of v over the block's kThreads threads, returned to every thread. `shared` holds
// kThreads / 32 floats and may be reused by the next call.
__device__ float block_sum(float v, float* shared) {
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
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const float* __restrict__ x, const TM* __restrict__ shift, int64_t shift_stride,
                   const TM* __restrict__ scale, int64_t scale_stride, TY* __restrict__ y, float* __restrict__ mean_out,
                   float* __restrict__ rstd_out, int64_t T, int D, float eps) {
  __shared__ float shared[kThreads / 32];
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
__global__ void __launch_bounds__(kThreads)
    grad_x_kernel(const TY* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ mean,
                  const float* __restrict__ rstd, const TM* __restrict__ scale, int64_t scale_stride,
                  float* __restrict__ gx, int64_t T, int D) {
  __shared__ float shared[kThreads / 32];
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
__global__ void grad_mod_kernel(const TY* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ mean,
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
__global__ void gated_residual_fwd_kernel(const float* __restrict__ x, const TB* __restrict__ gate, int64_t gate_stride,
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
__global__ void grad_branch_kernel(const float* __restrict__ grad, const TB* __restrict__ gate, int64_t gate_stride,
                                   TB* __restrict__ grad_branch, int64_t rows, int64_t T, int D) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const TB* g = gate + (row / T) * gate_stride;  // [D]
    const int64_t base = row * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
      grad_branch[base + d] = from_float<TB>(grad[base + d] * to_float(g[d]));
  }
}

template <typename TB>
__global__ void grad_gate_kernel(const float* __restrict__ grad, const TB* __restrict__ branch,
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
unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(rows < 65536 * 8 ? rows : 65536 * 8); }

// Makes `device` current for the launches and restores the caller's device.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    NT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) NT_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

void check_shape(int64_t rows, int64_t T, int D) {
  if (rows <= 0 || T <= 0 || D <= 0 || rows % T != 0 || rows / T > 65535 || rows > 2147483647LL)
    throw std::runtime_error("fused kernels (CUDA): unsupported shape rows " + std::to_string(rows) + ", T " +
                             std::to_string(T) + ", D " + std::to_string(D));
}

template <typename T>
struct Type {
  using type = T;
};

// Calls f(Type<element type of a>{}) for a runtime dtype.
template <typename F>
void dispatch(Dtype a, F&& f) {
  if (a == Dtype::bf16)
    f(Type<__nv_bfloat16>{});
  else
    f(Type<float>{});
}

// Calls f(Type<element type of a>{}, Type<element type of b>{}).
template <typename F>
void dispatch(Dtype a, Dtype b, F&& f) {
  dispatch(a, [&](auto ta) { dispatch(b, [&](auto tb) { f(ta, tb); }); });
}

}  // namespace

void modulated_norm_forward(const float* x, const void* shift, int64_t shift_stride, const void* scale,
                            int64_t scale_stride, Dtype mod_dtype, void* y, Dtype y_dtype, float* mean, float* rstd,
                            int64_t rows, int64_t T, int D, float eps, int device, void* stream) {
  check_shape(rows, T, D);
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  dispatch(mod_dtype, y_dtype, [&](auto tm, auto ty) {
    using TM = typename decltype(tm)::type;
    using TY = typename decltype(ty)::type;
    forward_kernel<TM, TY><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        x, static_cast<const TM*>(shift), shift_stride, static_cast<const TM*>(scale), scale_stride,
        static_cast<TY*>(y), mean, rstd, T, D, eps);
  });
  NT_CUDA_CHECK(cudaGetLastError());
}

void modulated_norm_backward(const void* grad_y, Dtype y_dtype, const float* x, const float* mean, const float* rstd,
                             const void* scale, int64_t scale_stride, Dtype mod_dtype, float* grad_x,
                             float* grad_scale, float* grad_shift, int64_t rows, int64_t T, int D, int device,
                             void* stream) {
  check_shape(rows, T, D);
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(rows / T));
  dispatch(mod_dtype, y_dtype, [&](auto tm, auto ty) {
    using TM = typename decltype(tm)::type;
    using TY = typename decltype(ty)::type;
    const TY* gy = static_cast<const TY*>(grad_y);
    grad_x_kernel<TM, TY><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        gy, x, mean, rstd, static_cast<const TM*>(scale), scale_stride, grad_x, T, D);
    grad_mod_kernel<TY><<<grid, 128, 0, s>>>(gy, x, mean, rstd, grad_scale, grad_shift, T, D);
  });
  NT_CUDA_CHECK(cudaGetLastError());
}

void gated_residual_forward(const float* x, const void* gate, int64_t gate_stride, const void* branch, Dtype dtype,
                            float* out, int64_t rows, int64_t T, int D, int device, void* stream) {
  check_shape(rows, T, D);
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  dispatch(dtype, [&](auto tb) {
    using TB = typename decltype(tb)::type;
    gated_residual_fwd_kernel<TB><<<row_blocks(rows), kRowThreads, 0, s>>>(
        x, static_cast<const TB*>(gate), gate_stride, static_cast<const TB*>(branch), out, rows, T, D);
  });
  NT_CUDA_CHECK(cudaGetLastError());
}

void gated_residual_backward(const float* grad, const void* gate, int64_t gate_stride, const void* branch,
                             Dtype dtype, void* grad_branch, float* grad_gate, int64_t rows, int64_t T, int D,
                             int device, void* stream) {
  check_shape(rows, T, D);
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(rows / T));
  dispatch(dtype, [&](auto tb) {
    using TB = typename decltype(tb)::type;
    grad_branch_kernel<TB><<<row_blocks(rows), kRowThreads, 0, s>>>(grad, static_cast<const TB*>(gate), gate_stride,
                                                                     static_cast<TB*>(grad_branch), rows, T, D);
    grad_gate_kernel<TB><<<grid, 128, 0, s>>>(grad, static_cast<const TB*>(branch), grad_gate, T, D);
  });
  NT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nt::cuda
