// Launchers of the project's own CUDA kernels (fused_kernels_cuda.cu, compiled by nvcc; no
// LibTorch in this interface). Tensors are row-major [rows, D] with rows = N * T (sample
// n = row / T); per-sample vectors [N, D] (adaLN chunks) have rows `*_stride` elements apart.
// Launches go to `stream` (nullptr: the legacy default stream, LibTorch's default) on CUDA
// device `device`. Sums over a sample's T rows run in a fixed order (the gated residual: row by
// row; the norm: rows within tiles of 16, then the tiles): deterministic.
//
// modulated_norm (LayerNorm without affine + adaLN modulate), x fp32:
//   forward:  mean, rstd = LayerNorm statistics of x[r] (biased variance, eps)
//             y[r, d] = ((x[r, d] - mean) * rstd) * s1(n, d) + shift[n, d],
//             s1(n, d) = 1 + scale[n, d] rounded to the dtype of scale (as `1 + scale` is)
//   backward: grad_x[r] = grad_x_other[r] + rstd * (g - mean_d(g) - x_hat * mean_d(g * x_hat)),
//             g = grad_y * s1 (grad_x_other: x's gradient from its other uses; null: none)
//             grad_scale[n, d] = sum_t grad_y * x_hat, grad_shift[n, d] = sum_t grad_y (summed in
//             fp32, written in the dtype of scale and shift)
// gated_residual (x + gate * branch), x and out fp32, gate and branch of one dtype:
//   forward:  out[r, d] = x[r, d] + gate[n, d] * branch[r, d]
//   backward: grad_branch[r, d] = grad[r, d] * gate[n, d] (branch's dtype),
//             grad_gate[n, d] = sum_t grad * branch (summed in fp32, written in gate's dtype);
//             grad_x is grad itself;
//             optionally grad_bias[d] = sum_r grad_branch[r, d] (the branch's dtype)
// Every bias gradient (grad_bias) is written, or with `accumulate_bias` added into what grad_bias
// holds (a parameter's gradient buffer, models/linear_backward.h), in fp32 and rounded once.
// residual_norm (gated_residual, then modulated_norm of its output: inside a DiT block), gate,
// branch, shift and scale of one dtype, rows `mod_stride` apart:
//   forward:  h = x + gate * branch (fp32), y = modulated_norm(h) with mean, rstd of h
//   backward: grad_x = grad_h + the norm's grad (grad_h null: 0), grad_branch = grad_x * gate,
//             grad_gate = sum_t grad_x * branch, grad_scale, grad_shift as modulated_norm's
// qkv_grad (the attention's q, k, v: views of qkv's output [rows, 3D], each [N, H, T, hd] with
// unit stride along hd): grad_qkv[r, p*D + h*hd + j] = grad_p[n, h, t, j] for the three parts
// (a null part: zeros), all in `dtype`; optionally grad_bias[c] = the sum over all rows of
// grad_qkv[r, c] (the qkv bias's gradient), summed within splits of the rows, then over the
// splits, in order, and rounded to dtype.
#pragma once
#include <cstdint>

namespace nt::cuda {

enum class Dtype { f32, bf16 };
// The bytes of one element of `dtype`.
inline int64_t element_bytes(Dtype dtype) { return dtype == Dtype::bf16 ? 2 : 4; }

void modulated_norm_forward(const float* x, const void* shift, int64_t shift_stride, const void* scale,
                            int64_t scale_stride, Dtype mod_dtype, void* y, Dtype y_dtype, float* mean, float* rstd,
                            int64_t rows, int64_t T, int D, float eps, int device, void* stream);

// workspace: modulated_norm_backward_workspace(rows, T, D) floats on the device (partial sums).
void modulated_norm_backward(const void* grad_y, Dtype y_dtype, const float* x, const float* mean, const float* rstd,
                             const void* scale, int64_t scale_stride, Dtype mod_dtype, const float* grad_x_other,
                             float* grad_x, void* grad_scale, void* grad_shift, float* workspace, int64_t rows,
                             int64_t T, int D, int device, void* stream);
int64_t modulated_norm_backward_workspace(int64_t rows, int64_t T, int D);
// The widest rows modulated_norm supports (D <= this).
int modulated_norm_max_width();

void residual_norm_forward(const float* x, const void* gate, const void* branch, const void* shift,
                           const void* scale, int64_t mod_stride, Dtype mod_dtype, float* h, void* y, Dtype y_dtype,
                           float* mean, float* rstd, int64_t rows, int64_t T, int D, float eps, int device,
                           void* stream);

// x: the residual's input, as the forward took it (h = x + gate * branch is formed again, bit for
// bit, not read: no need to keep h). grad_h may be null (h's own gradient is zero).
// grad_bias_part ([N, D] fp32 workspace) and grad_bias ([D], mod_dtype) both null, or both given:
// grad_bias = the sum over all rows of grad_branch (the gradient of the bias of the product that
// made the branch), summed per sample over its rows, then over the samples, in order, and rounded
// to mod_dtype.
void residual_norm_backward(const float* grad_h, const void* grad_y, Dtype y_dtype, const float* x, const float* mean,
                            const float* rstd, const void* gate, const void* branch, const void* scale,
                            int64_t mod_stride, Dtype mod_dtype, float* grad_x, void* grad_branch, void* grad_gate,
                            void* grad_scale, void* grad_shift, float* grad_bias_part, void* grad_bias, int64_t rows,
                            int64_t T, int D, int device, void* stream, bool accumulate_bias = false);

void gated_residual_forward(const float* x, const void* gate, int64_t gate_stride, const void* branch, Dtype dtype,
                            float* out, int64_t rows, int64_t T, int D, int device, void* stream);

// grad_bias_part and grad_bias ([D], dtype): as residual_norm_backward's.
void gated_residual_backward(const float* grad, const void* gate, int64_t gate_stride, const void* branch,
                             Dtype dtype, void* grad_branch, void* grad_gate, float* grad_bias_part, void* grad_bias,
                             int64_t rows, int64_t T, int D, int device, void* stream, bool accumulate_bias = false);

// The three gradients: pointers (null: zeros) and strides along n, h, t in elements.
struct QkvGradParts {
  const void* part[3];
  int64_t stride_n[3], stride_h[3], stride_t[3];
};

// grad_bias ([3D], dtype) and workspace (qkv_grad_workspace floats) both null or both given.
// grad_qkv null: the parts are grad_qkv's own three column blocks already (fused_attention's
// backward writes them there), and only grad_bias is formed.
void qkv_grad(const QkvGradParts& parts, Dtype dtype, void* grad_qkv, void* grad_bias, float* workspace, int64_t rows,
              int64_t T, int D, int heads, int device, void* stream, bool accumulate_bias = false);
int64_t qkv_grad_workspace(int64_t rows, int D);

// out [cols, rows] = in [rows, cols]^T (accumulate: out += in^T), both contiguous, of `dtype`
// (models/transpose_kernels_device.h); rows <= transpose_max_rows().
void transpose(const void* in, void* out, int64_t rows, int64_t cols, Dtype dtype, bool accumulate, int device,
               void* stream);
int64_t transpose_max_rows();

}  // namespace nt::cuda
