// Launchers of the fused LayerNorm + adaLN modulate CUDA kernels (modulated_norm_cuda.cu,
// compiled by nvcc; no LibTorch in this interface). Per row r of x [rows, D] (fp32), batch entry
// n = r / T:
//   forward:  mean, rstd = LayerNorm statistics of x[r] (biased variance, eps)
//             y[r, d] = ((x[r, d] - mean) * rstd) * s1(n, d) + shift[n, d],
//             s1(n, d) = 1 + scale[n, d] rounded to the dtype of scale (as `1 + scale` is)
//   backward: grad_x[r] = rstd * (g - mean_d(g) - x_hat * mean_d(g * x_hat)), g = grad_y * s1
//             grad_scale[n, d] = sum_t grad_y * x_hat, grad_shift[n, d] = sum_t grad_y (fp32,
//             summed over the T rows of n in order: deterministic)
// shift/scale rows are `*_stride` elements apart (chunks of the adaLN output). Launches go to
// `stream` (nullptr: the legacy default stream, LibTorch's default) on CUDA device `device`.
#pragma once
#include <cstdint>

namespace nt::cuda {

enum class Dtype { f32, bf16 };

void modulated_norm_forward(const float* x, const void* shift, int64_t shift_stride, const void* scale,
                            int64_t scale_stride, Dtype mod_dtype, void* y, Dtype y_dtype, float* mean, float* rstd,
                            int64_t rows, int64_t T, int D, float eps, int device, void* stream);

void modulated_norm_backward(const void* grad_y, Dtype y_dtype, const float* x, const float* mean, const float* rstd,
                             const void* scale, int64_t scale_stride, Dtype mod_dtype, float* grad_x,
                             float* grad_scale, float* grad_shift, int64_t rows, int64_t T, int D, int device,
                             void* stream);

}  // namespace nt::cuda
