// Attention in fp32 as matrix products without TF32 and a softmax, the softmax recomputed in
// backward instead of kept: TREAD's block after a route runs outside autocast, in fp32, as the
// reference's does, and there LibTorch's scaled_dot_product_attention takes its memory-efficient
// kernel (cuDNN's and flash take no fp32), whose products are CUTLASS's 3xTF32 (fp32's accuracy)
// at about 20 TFLOP/s for DiT-XL/2's head width 72, padded to 128 (H200, fifteenth session: 1.77 ms
// forward and 5.46 ms backward per TREAD-XL/2 step). Here the same function in fp32 products:
//
//   forward:   qs = q * scale, S = qs k^T, P = softmax(S) (rows), o = P v
//   backward:  qs, S and P again (the same ops on the same inputs: the same bits), then
//              dv = P^T do, dP = do v^T, dS = P * (dP - rowsum(dP * P)), dq = (dS k) * scale,
//              dk = dS^T qs
//
// with scale = 1 / sqrt(hd) (applied to q, not to the scores: a pass over [T, hd] rather than
// [T, Tk]); kept: q, k, v (as SDPA keeps them) and nothing of size T^2. The
// samples go through in chunks whose scores hold at most 2^26 elements (256 MB), so the scores'
// memory does not grow with the batch. Products run with TF32 off whatever the process allows
// (train.precision = "bf16" allows it for what stays fp32, as the reference's train.py does; its
// attention there is fp32-accurate all the same). train.fp32_attention picks this ("products",
// the default), LibTorch's kernel ("sdpa") or the project's 3xTF32 kernels ("fused",
// models/fused_kernels.h: fused_attention) on CUDA; the CPU keeps LibTorch's attention.
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

// q [N, H, T, hd], k and v [N, H, Tk, hd], fp32 (any strides) -> [N, H, T, hd] (a transposed view
// of a [N, T, H, hd] tensor, as LibTorch's kernels return it). `chunk_scores`: the score elements
// a chunk of samples holds at most (at least one sample a chunk).
constexpr int64_t kFp32AttentionChunkScores = int64_t{1} << 26;
at::Tensor fp32_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          int64_t chunk_scores = kFp32AttentionChunkScores);

// The process-wide choice for fp32 inputs on CUDA (train.fp32_attention): these products,
// LibTorch's scaled_dot_product_attention, or fused_attention (where it takes the shape; these
// products elsewhere).
enum class Fp32AttentionKind { products, sdpa, fused };
void set_fp32_attention(Fp32AttentionKind kind);
Fp32AttentionKind fp32_attention_kind();

}  // namespace nt
