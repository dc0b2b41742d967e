// The public launchers of the project's CUDA kernels (fused_kernels_cuda.h): shape checks, the
// device, the dtype dispatch, error checks. The kernels and their launch configurations are in
// fused_kernels_device.h (also run on the CPU by tests/models/test_fused_kernels_emulated.cpp).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/cuda_check.h"
#include "models/dtype_dispatch_cuda.h"
#include "models/fused_kernels_cuda.h"
#include "models/fused_kernels_device.h"
#include "models/qkv_kernels_device.h"
#include "models/transpose_kernels_device.h"

namespace nt::cuda {
namespace {

void check_shape(int64_t rows, int64_t T, int D) {
  if (rows <= 0 || T <= 0 || D <= 0 || rows % T != 0 || rows / T > 65535 || rows > 2147483647LL)
    throw std::runtime_error("fused kernels (CUDA): unsupported shape rows " + std::to_string(rows) + ", T " +
                             std::to_string(T) + ", D " + std::to_string(D));
}

// check_shape, and rows no wider than the norm's backward keeps in registers.
void check_norm_shape(const char* op, int64_t rows, int64_t T, int D) {
  check_shape(rows, T, D);
  if (D > device::kMaxNormWidth)
    throw std::runtime_error(std::string(op) + " (CUDA): rows of " + std::to_string(D) + " are wider than the " +
                             std::to_string(device::kMaxNormWidth) + " its backward supports");
}

// The bias gradient's two buffers (the partial sums' workspace, the sum) come together or not at all.
void check_bias(const char* op, const float* part, const void* bias) {
  if ((part == nullptr) != (bias == nullptr))
    throw std::runtime_error(std::string(op) + " (CUDA): the bias gradient needs both its workspace of partial sums "
                             "and its output");
}

// Calls f(Type<element type of a>{}, Type<element type of b>{}).
template <typename F>
void dispatch(Dtype a, Dtype b, F&& f) {
  dispatch(a, [&](auto ta) { dispatch(b, [&](auto tb) { f(ta, tb); }); });
}

// The frame every launcher shares: `device` current, the kernels launched by
// f(Type<...>..., stream) for the runtime dtype(s), launch errors checked.
template <typename F>
void launch_on(int device, void* stream, Dtype a, F&& f) {
  CudaDeviceScope scope(device);
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(a, [&](auto ta) { f(ta, s); });
  NT_CUDA_CHECK(cudaGetLastError());
}
template <typename F>
void launch_on(int device, void* stream, Dtype a, Dtype b, F&& f) {
  CudaDeviceScope scope(device);
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch(a, b, [&](auto ta, auto tb) { f(ta, tb, s); });
  NT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void modulated_norm_forward(const float* x, const void* shift, int64_t shift_stride, const void* scale,
                            int64_t scale_stride, Dtype mod_dtype, void* y, Dtype y_dtype, float* mean, float* rstd,
                            int64_t rows, int64_t T, int D, float eps, int device, void* stream) {
  check_shape(rows, T, D);
  launch_on(device, stream, mod_dtype, y_dtype, [&](auto tm, auto ty, cudaStream_t s) {
    using TM = typename decltype(tm)::type;
    using TY = typename decltype(ty)::type;
    device::launch_modulated_norm_forward(x, static_cast<const TM*>(shift), shift_stride, static_cast<const TM*>(scale),
                                          scale_stride, static_cast<TY*>(y), mean, rstd, rows, T, D, eps, s);
  });
}

void modulated_norm_backward(const void* grad_y, Dtype y_dtype, const float* x, const float* mean, const float* rstd,
                             const void* scale, int64_t scale_stride, Dtype mod_dtype, const float* grad_x_other,
                             float* grad_x, void* grad_scale, void* grad_shift, float* workspace, int64_t rows,
                             int64_t T, int D, int device, void* stream) {
  check_norm_shape("fused modulated norm", rows, T, D);
  launch_on(device, stream, mod_dtype, y_dtype, [&](auto tm, auto ty, cudaStream_t s) {
    using TM = typename decltype(tm)::type;
    using TY = typename decltype(ty)::type;
    device::launch_modulated_norm_backward(static_cast<const TY*>(grad_y), x, mean, rstd, static_cast<const TM*>(scale),
                                           scale_stride, grad_x_other, grad_x, static_cast<TM*>(grad_scale),
                                           static_cast<TM*>(grad_shift), workspace,
                                           rows, T, D, s);
  });
}

int64_t modulated_norm_backward_workspace(int64_t rows, int64_t T, int D) {
  return device::norm_backward_workspace(rows, T, D);
}

int modulated_norm_max_width() { return device::kMaxNormWidth; }

void residual_norm_forward(const float* x, const void* gate, const void* branch, const void* shift,
                           const void* scale, int64_t mod_stride, Dtype mod_dtype, float* h, void* y, Dtype y_dtype,
                           float* mean, float* rstd, int64_t rows, int64_t T, int D, float eps, int device,
                           void* stream) {
  check_shape(rows, T, D);
  launch_on(device, stream, mod_dtype, y_dtype, [&](auto tm, auto ty, cudaStream_t s) {
    using TM = typename decltype(tm)::type;
    using TY = typename decltype(ty)::type;
    device::launch_residual_norm_forward(x, static_cast<const TM*>(gate), static_cast<const TM*>(branch),
                                         static_cast<const TM*>(shift), static_cast<const TM*>(scale), mod_stride, h,
                                         static_cast<TY*>(y), mean, rstd, rows, T, D, eps, s);
  });
}

void residual_norm_backward(const float* grad_h, const void* grad_y, Dtype y_dtype, const float* x, const float* mean,
                            const float* rstd, const void* gate, const void* branch, const void* scale,
                            int64_t mod_stride, Dtype mod_dtype, float* grad_x, void* grad_branch, void* grad_gate,
                            void* grad_scale, void* grad_shift, float* grad_bias_part, void* grad_bias, int64_t rows,
                            int64_t T, int D, int device, void* stream, bool accumulate_bias) {
  check_bias("fused residual norm", grad_bias_part, grad_bias);
  check_norm_shape("fused residual norm", rows, T, D);
  launch_on(device, stream, mod_dtype, y_dtype, [&](auto tm, auto ty, cudaStream_t s) {
    using TM = typename decltype(tm)::type;
    using TY = typename decltype(ty)::type;
    device::launch_residual_norm_backward(grad_h, static_cast<const TY*>(grad_y), x, mean, rstd,
                                          static_cast<const TM*>(gate), static_cast<const TM*>(branch),
                                          static_cast<const TM*>(scale), mod_stride, grad_x,
                                          static_cast<TM*>(grad_branch), static_cast<TM*>(grad_gate),
                                          static_cast<TM*>(grad_scale), static_cast<TM*>(grad_shift),
                                          grad_bias_part, static_cast<TM*>(grad_bias), rows, T, D, s,
                                          accumulate_bias);
  });
}


void gated_residual_forward(const float* x, const void* gate, int64_t gate_stride, const void* branch, Dtype dtype,
                            float* out, int64_t rows, int64_t T, int D, int device, void* stream) {
  check_shape(rows, T, D);
  launch_on(device, stream, dtype, [&](auto tb, cudaStream_t s) {
    using TB = typename decltype(tb)::type;
    device::launch_gated_residual_forward(x, static_cast<const TB*>(gate), gate_stride,
                                          static_cast<const TB*>(branch), out, rows, T, D, s);
  });
}

void gated_residual_backward(const float* grad, const void* gate, int64_t gate_stride, const void* branch,
                             Dtype dtype, void* grad_branch, void* grad_gate, float* grad_bias_part, void* grad_bias,
                             int64_t rows, int64_t T, int D, int device, void* stream, bool accumulate_bias) {
  check_shape(rows, T, D);
  check_bias("fused gated residual", grad_bias_part, grad_bias);
  launch_on(device, stream, dtype, [&](auto tb, cudaStream_t s) {
    using TB = typename decltype(tb)::type;
    device::launch_gated_residual_backward(grad, static_cast<const TB*>(gate), gate_stride,
                                           static_cast<const TB*>(branch), static_cast<TB*>(grad_branch),
                                           static_cast<TB*>(grad_gate),
                                           grad_bias_part, static_cast<TB*>(grad_bias), rows, T, D, s,
                                           accumulate_bias);
  });
}

void qkv_grad(const QkvGradParts& parts, Dtype dtype, void* grad_qkv, void* grad_bias, float* workspace, int64_t rows,
              int64_t T, int D, int heads, int device, void* stream, bool accumulate_bias) {
  check_shape(rows, T, D);
  if (heads <= 0 || D % heads != 0)
    throw std::runtime_error("fused qkv split (CUDA): " + std::to_string(D) + " columns per part do not split into " +
                             std::to_string(heads) + " heads");
  check_bias("fused qkv split", workspace, grad_bias);
  launch_on(device, stream, dtype, [&](auto tt, cudaStream_t s) {
    using TT = typename decltype(tt)::type;
    device::QkvGrads<TT> in{};
    for (int p = 0; p < 3; ++p) {
      in.part[p] = static_cast<const TT*>(parts.part[p]);
      in.stride_n[p] = parts.stride_n[p];
      in.stride_h[p] = parts.stride_h[p];
      in.stride_t[p] = parts.stride_t[p];
    }
    device::launch_qkv_grad(in, static_cast<TT*>(grad_qkv), static_cast<TT*>(grad_bias), workspace, rows, T, D,
                            D / heads, s, accumulate_bias);
  });
}

int64_t qkv_grad_workspace(int64_t rows, int D) { return device::qkv_grad_workspace(rows, D); }

int64_t transpose_max_rows() { return int64_t{65535} * device::kTransposeTile; }

void transpose(const void* in, void* out, int64_t rows, int64_t cols, Dtype dtype, bool accumulate, int device,
               void* stream) {
  if (rows <= 0 || cols <= 0 || rows > transpose_max_rows() || cols > int64_t{2147483647})
    throw std::runtime_error("transpose (CUDA): unsupported shape [" + std::to_string(rows) + ", " +
                             std::to_string(cols) + "]");
  launch_on(device, stream, dtype, [&](auto tt, cudaStream_t s) {
    using T = typename decltype(tt)::type;
    device::launch_transpose(static_cast<const T*>(in), static_cast<T*>(out), rows, cols, accumulate, s);
  });
}

}  // namespace nt::cuda
