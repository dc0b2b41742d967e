// The fused optimizer step's CUDA kernel (launcher: dist/adamw_cuda.h): per element of a flat
// unit, AdamW, the EMA and the compute copy of the parameter (dist/adamw_math.h), in one pass
// that reads θ, g, m, v, ema and writes θ, m, v, ema and (optionally) bf16(θ). A thread takes 4
// adjacent elements (16-byte loads of the fp32 buffers) where every buffer allows it, grid-stride;
// the elements past the last group of 4 go one per thread. nvcc compiles it in adamw_cuda.cu; the
// host compiler compiles the same code for a CPU run in tests (tests/models/cuda_emulation.h).
#pragma once
#include <cuda_bf16.h>
#include <vector_types.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "dist/adamw_math.h"
#include "models/fused_kernels_device.h"  // NT_GLOBAL, NT_BOUNDS, NT_UNROLL, to_float, from_float

namespace nt::cuda::device {

constexpr int kAdamThreads = 256;
constexpr int kAdamMaxBlocks = 4096;

template <int V>
struct Floats {
  float v[V];
};

// V elements from p (fp32 or bf16) as floats: 4 in one 16-byte (fp32) or 8-byte (bf16) load.
template <int V, typename T>
NT_DEVICE Floats<V> load_floats(const T* p) {
  Floats<V> r;
  if constexpr (V == 4 && std::is_same_v<T, float>) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    r.v[0] = q.x, r.v[1] = q.y, r.v[2] = q.z, r.v[3] = q.w;
  } else if constexpr (V == 4) {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    T h[4];
    memcpy(static_cast<void*>(h), &q, sizeof(q));  // the bits reinterpreted (registers on the GPU)
    NT_UNROLL for (int k = 0; k < 4; ++k) r.v[k] = to_float(h[k]);
  } else {
    r.v[0] = to_float(*p);
  }
  return r;
}

template <int V>
NT_DEVICE void store_floats(float* p, const Floats<V>& r) {
  if constexpr (V == 4)
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  else
    *p = r.v[0];
}

template <int V>
NT_DEVICE void store_bf16(__nv_bfloat16* p, const Floats<V>& r) {
  if constexpr (V == 4) {
    __nv_bfloat16 h[4];
    NT_UNROLL for (int k = 0; k < 4; ++k) h[k] = from_float<__nv_bfloat16>(r.v[k]);
    uint2 q;
    memcpy(&q, h, sizeof(q));
    *reinterpret_cast<uint2*>(p) = q;  // one 8-byte store
  } else {
    *p = from_float<__nv_bfloat16>(r.v[0]);
  }
}

// Elements [first, n) in groups of V: group q at first + q·V, for q = this thread's index and then
// every grid's worth of threads further.
template <int V, typename G>
NT_DEVICE void adamw_ema_groups(float* theta, const G* grad, float* m, float* v, float* ema, __nv_bfloat16* copy,
                                int64_t first, int64_t n, const AdamWEmaConsts& c) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t groups = (n - first) / V;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < groups; q += stride) {
    const int64_t i = first + q * V;
    Floats<V> t = load_floats<V>(theta + i), mm = load_floats<V>(m + i), vv = load_floats<V>(v + i),
              e = load_floats<V>(ema + i);
    const Floats<V> g = load_floats<V>(grad + i);
    NT_UNROLL for (int k = 0; k < V; ++k) adamw_ema_element(t.v[k], g.v[k], mm.v[k], vv.v[k], e.v[k], c);
    store_floats<V>(theta + i, t);
    store_floats<V>(m + i, mm);
    store_floats<V>(v + i, vv);
    store_floats<V>(ema + i, e);
    if (copy) store_bf16<V>(copy + i, t);
  }
}

// theta, m, v, ema [n] fp32, grad [n] (fp32 or bf16), copy [n] bf16 or null. kVec: 4 when every
// buffer is 16-byte aligned (the bf16 ones 8-byte), else 1.
template <int kVec, typename G>
NT_GLOBAL void NT_BOUNDS(kAdamThreads)
    adamw_ema_kernel(float* theta, const G* grad, float* m, float* v, float* ema, __nv_bfloat16* copy, int64_t n,
                     AdamWEmaConsts c) {
  adamw_ema_groups<kVec>(theta, grad, m, v, ema, copy, 0, n, c);
  if constexpr (kVec > 1) adamw_ema_groups<1>(theta, grad, m, v, ema, copy, n / kVec * kVec, n, c);  // the tail
}

inline int adamw_ema_blocks(int64_t n) {
  const int64_t groups = (n + 3) / 4;
  const int64_t blocks = (groups + kAdamThreads - 1) / kAdamThreads;
  return static_cast<int>(blocks < 1 ? 1 : blocks > kAdamMaxBlocks ? kAdamMaxBlocks : blocks);
}

}  // namespace nt::cuda::device
