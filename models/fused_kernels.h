// The project's own fused CUDA ops as differentiable LibTorch functions (kernels in
// fused_kernels_cuda.cu, built where nvcc was found; `train.fused_kernels` turns them on). Each
// agrees with the LibTorch ops it replaces to fp32 rounding (other summation orders), not bit
// for bit, and keeps fewer tensors for backward.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace nt {

// Whether this build has the kernels (nvcc found at configure time).
bool fused_kernels_built();

// For tests only: the ops also take CPU tensors, for a test program that links launchers running
// the kernels on the CPU (tests/models/cuda_emulation.h) in place of the CUDA ones, so that the
// autograd nodes around the kernels run there too. Off unless a test turns it on.
void fused_kernels_take_cpu_tensors_for_tests(bool on);

// modulate(LayerNorm(x, eps), shift, scale) (models/modulated_norm.h) in one pass, the output in bf16
// when `bf16_out` (the dtype the next matrix product uses under autocast), else fp32; keeps x and
// the per-row mean and 1/std for backward. Supports: CUDA, fp32 x [N, T, D] with D <= 2048, shift
// and scale [N, D] of one dtype (fp32 or bf16) with unit stride along D.
bool fused_modulated_norm_supports(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);
at::Tensor fused_modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                                bool bf16_out);

// fused_modulated_norm that also hands x on: {y, x'} with x' = x (a view of it). Where x goes on
// through x' as well (the residual stream at a DiT block's start), x's two gradients meet in
// the norm's backward kernel instead of a separate addition. Supports: as fused_modulated_norm.
std::vector<at::Tensor> fused_modulated_norm_passing(const at::Tensor& x, const at::Tensor& shift,
                                                     const at::Tensor& scale, double eps, bool bf16_out);

// x + gate * branch, per sample gate (the gated residual of a DiT block), fp32 out; keeps gate
// and branch for backward. Supports: CUDA, fp32 x [N, T, D], branch [N, T, D] and gate [N, D] of
// one dtype (fp32 or bf16), gate with unit stride along D.
// `branch_bias` (optional, [D]): the bias of the product that made branch, where that product
// took it detached (at::linear(a, W, bias.detach()): the same values, no bias gradient there).
// Its gradient, the sum of grad branch over all rows rounded to branch's dtype (as the product's
// own backward sums it), then comes from this op's backward kernel, which forms grad branch
// anyway, instead of a separate reduction over the whole branch gradient.
bool fused_gated_residual_supports(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch);
at::Tensor fused_gated_residual(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch,
                                const at::Tensor& branch_bias = {});

// The two above in a row, as inside a DiT block: {h, n} with h = x + gate * branch (fp32) and
// n = modulate(LayerNorm(h, eps), shift, scale) (bf16 when `bf16_out`), one pass each way:
// backward adds h's own gradient to the norm's in the same pass (no separate accumulation of
// the stream's two gradients). Supports: both ops' conditions, and gate, shift, scale of one
// dtype and one row stride (chunks of one adaLN output). `branch_bias` as fused_gated_residual's.
bool fused_residual_norm_supports(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch,
                                  const at::Tensor& shift, const at::Tensor& scale);
std::vector<at::Tensor> fused_residual_norm(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch,
                                            const at::Tensor& shift, const at::Tensor& scale, double eps,
                                            bool bf16_out, const at::Tensor& branch_bias = {});

// The attention's q, k, v [N, H, T, hd] as views of qkv's output [N, T, 3D] (H = heads, hd =
// D / H): the token-major layout's unbind, each transposed. Autograd's backward of them stacks the
// three gradients into qkv_out's own layout.
std::vector<at::Tensor> qkv_views(const at::Tensor& qkv_out, int64_t heads);

// The same views from one autograd node (fused_qkv_split). Its backward writes the
// output's gradient in one pass over the three gradients (autograd would stack them) and, with
// `bias` ([3D], optional: the qkv product's bias, which that product took detached), the bias's
// gradient, the column sums of the output's gradient rounded to its dtype (as the product's own
// backward sums it), instead of a separate reduction that reads the whole gradient again.
// Supports: CUDA, a contiguous fp32 or bf16 qkv_out with D a multiple of heads.
bool fused_qkv_split_supports(const at::Tensor& qkv_out, int64_t heads);
std::vector<at::Tensor> fused_qkv_split(const at::Tensor& qkv_out, const at::Tensor& bias, int64_t heads);

// softmax(q k^T / sqrt(hd)) v with q, k, v the views qkv_views would give, computed by the
// project's own kernels (models/attention_kernels_device.h: mma.sync products, keys and values
// streamed through shared memory in tiles), returned as [N, T, D] (heads side by side: the proj
// product's input). Backward writes the three gradients straight into qkv_out's gradient and,
// with `bias` (the qkv product's, taken detached: as fused_qkv_split's), its gradient.
//   bf16 (`train.attention = "fused"`): agrees with LibTorch's flash and cuDNN kernels to bf16
//        rounding (the same algorithm: fp32 scores and sums, the probabilities rounded to bf16 for
//        the products);
//   fp32 (`train.fp32_attention = "fused"`): 3xTF32 products, fp32's accuracy (as LibTorch's
//        memory-efficient kernel, which serves fp32 inputs).
// Supports: CUDA, contiguous bf16 or fp32 qkv_out [N, T, 3D], T and hd = D / heads within
// fused_attention_limits() (T <= 16384; hd 16, 24, 32, 64, 72 or 128).
bool fused_attention_supports(const at::Tensor& qkv_out, int64_t heads);
// Whether blocks of `tokens` tokens and this head width can take it (false in a build without nvcc),
// and those limits in words, for messages.
bool fused_attention_supports_shape(int64_t tokens, int64_t head_width);
std::string fused_attention_limits();
at::Tensor fused_attention(const at::Tensor& qkv_out, const at::Tensor& bias, int64_t heads);

}  // namespace nt
