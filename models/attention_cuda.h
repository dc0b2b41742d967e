// Launchers of the project's attention kernels (attention_cuda.cu, compiled by nvcc; the kernels
// and their layouts: models/attention_kernels_device.h; no LibTorch in this interface). bf16 or
// fp32 (`dtype`: q, k, v, o and the gradients; fp32 runs 3xTF32 products). q, k, v and their gradients [N, H, T, hd] share the strides (s_n, s_h, s_t) with unit
// stride along hd; o [N, T, H, hd] contiguous; o's gradient `dout` [N, H, T, hd] with strides of
// its own; lse and the backward's workspace `delta` [N * H, T] fp32. Launches go to `stream`
// (nullptr: the legacy default stream) on CUDA device `device`.
#pragma once
#include <cstdint>
#include <string>

#include "models/fused_kernels_cuda.h"  // Dtype

namespace nt::cuda {

struct AttentionTensors {
  Dtype dtype;
  const void *q, *k, *v;
  int64_t s_n, s_h, s_t;
  void* o;
  float* lse;
  int64_t N, H, T, hd;
};

// Whether the kernels take these shapes and strides: hd an instantiated width, 1 <= T <=
// attention_max_tokens(), N * H * ceil(T / 64) below 2^31, the strides and the pointers of q, k, v multiples of 16
// bytes (backward also needs that of dout and of the gradients).
bool attention_supports(const AttentionTensors& a);
// The shape part alone: 1 <= T <= attention_max_tokens() and an instantiated head width.
bool attention_shape_supported(int64_t T, int64_t hd);
int attention_max_tokens();
// The shape part in words, for messages: "at most 16384 tokens, head widths 16, 24, ... or 128".
std::string attention_limits();

// o = softmax(q k^T * scale) v, lse = the rows' log2 of the softmax's sum (for backward).
void attention_forward(const AttentionTensors& a, float scale, int device, void* stream);

// dq, dk, dv (strides as q, k, v) from dout and what the forward kept (o, lse).
void attention_backward(const AttentionTensors& a, float scale, const void* dout, int64_t d_n, int64_t d_h,
                        int64_t d_t, float* delta, void* dq, void* dk, void* dv, int device, void* stream);

}  // namespace nt::cuda
