// Warp-level tensor-core products for the project's own kernels (models/attention_kernels_device.h):
// mma.sync on bf16 or tf32 fragments with fp32 accumulators (sm_80 and later) and ldmatrix, their loads
// from shared memory. nvcc compiles them to the PTX instructions; for the CPU run of
// tests/models/cuda_emulation.h they call that header's emulation, which moves the elements
// between the block's threads by the layouts of the PTX ISA (so the kernels' indexing is checked
// on any machine; what the emulation cannot check is that it reads the ISA as the hardware does).
//
// Layouts (lane = 4 g + t, g = lane / 4, t = lane % 4; a 32-bit register holds two bf16, the
// lower-indexed element in its low half):
//   A, m16 x k16 (row-major): a[0] = (row g, cols 2t, 2t+1), a[1] = (row g+8, same cols),
//                             a[2] = (row g, cols 2t+8, 2t+9), a[3] = (row g+8, cols 2t+8, 2t+9)
//   A, m16 x k8:              a[0] = (row g, cols 2t, 2t+1), a[1] = (row g+8, same cols)
//   B, k16 x n8 ("col"):      b[0] = (rows 2t, 2t+1, col g), b[1] = (rows 2t+8, 2t+9, col g)
//   B, k8 x n8:               b[0] = (rows 2t, 2t+1, col g)
//   C/D, m16 x n8 (fp32):     c[0], c[1] = (row g, cols 2t, 2t+1), c[2], c[3] = (row g+8, same cols)
// So an accumulator's two m16 x n8 tiles side by side, rounded to bf16 in pairs, are the A
// fragment of the next product over those 16 columns (pack_a below).
// TF32 (m16 n8 k8, a 32-bit register holds one tf32: an fp32 with the low 13 bits ignored):
//   A, m16 x k8:              a[0] = (row g, col t), a[1] = (row g+8, col t), a[2] = (row g, col t+4),
//                             a[3] = (row g+8, col t+4)
//   B, k8 x n8:               b[0] = (row t, col g), b[1] = (row t+4, col g)
//   C/D as above. An accumulator's tile is an A fragment with its columns permuted (2t -> t,
//   2t+1 -> t+4): a = {c[0], c[2], c[1], c[3]}, with B's rows permuted the same way (rows 2t and
//   2t+1 in b[0] and b[1]); a product's sum over k does not depend on k's order.
//   ldmatrix .x<n>: lanes 8i .. 8i+7 give the addresses of matrix i's 8 rows of 8 b16 (16 bytes
//   each, 16-byte aligned); register i of lane 4g + t receives matrix i's row g, elements 2t and
//   2t+1; with .trans, its elements (2t, g) and (2t+1, g): the transposed matrix's row g.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "models/fused_kernels_device.h"

namespace nt::cuda::device {

// Two floats rounded to bf16 (round to nearest even) in one register: lo in the low half.
NT_DEVICE uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

// The fp32 whose bits are `bits`.
NT_DEVICE float float_of_bits(uint32_t bits) {
#ifdef __CUDACC__
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

// The bits of an fp32.
NT_DEVICE uint32_t bits_of_float(float f) {
#ifdef __CUDACC__
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
#endif
}

// The bf16 in the low (hi = 0) or high half of a register, as a float.
NT_DEVICE float bf16_half(uint32_t r, int hi) { return float_of_bits(hi ? (r & 0xffff0000u) : (r << 16)); }

#ifdef __CUDACC__

// d += a b, m16 n8 k16.
NT_DEVICE void mma_k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a b, m16 n8 k8.
NT_DEVICE void mma_k8(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(b));
}

// d += a b, m16 n8 k8, tf32 inputs.
NT_DEVICE void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// r[0 .. kMats) from kMats 8 x 8 matrices of shared memory; `row`: this lane's row address.
template <int kMats, bool kTrans>
NT_DEVICE void ldmatrix(uint32_t (&r)[kMats], const void* row) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kMats == 4) {
    if constexpr (kTrans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(a));
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(a));
  } else if constexpr (kMats == 2) {
    if constexpr (kTrans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  } else {
    static_assert(kMats == 1, "ldmatrix: 1, 2 or 4 matrices");
    if constexpr (kTrans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  }
}

#else  // the CPU run: tests/models/cuda_emulation.h (included first) moves the elements

NT_DEVICE void mma_k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  ::nt::emu::warp_mma<16>(d, a, b);
}
NT_DEVICE void mma_k8(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
  const uint32_t bb[1] = {b};
  ::nt::emu::warp_mma<8>(d, a, bb);
}
NT_DEVICE void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  ::nt::emu::warp_mma_tf32(d, a, b);
}
template <int kMats, bool kTrans>
NT_DEVICE void ldmatrix(uint32_t (&r)[kMats], const void* row) {
  ::nt::emu::warp_ldmatrix(r, kMats, kTrans, row);
}

#endif

// 3xTF32: x = hi + lo with hi = x truncated to tf32 and lo = x - hi (exact in fp32), which the
// tensor cores truncate to tf32 in turn, so that a product a b is a_lo b_hi + a_hi b_lo + a_hi b_hi
// to about fp32's accuracy (a_lo b_lo, below it, dropped), at three TF32 products: CUTLASS's
// OpMultiplyAddFastF32, which LibTorch's memory-efficient fp32 attention runs. Two instructions an
// element, where cvt.rna.tf32.f32 compiles to about five on sm_90.
template <int kN>
NT_DEVICE void split_tf32(uint32_t (&hi)[kN], uint32_t (&lo)[kN], const float (&x)[kN]) {
NT_UNROLL
  for (int i = 0; i < kN; ++i) {
    hi[i] = bits_of_float(x[i]) & 0xffffe000u;
    lo[i] = bits_of_float(x[i] - float_of_bits(hi[i]));
  }
}

// d += a b (m16 n8 k8) from split operands, the small products first.
NT_DEVICE void mma_tf32x3(float (&d)[4], const uint32_t (&a_hi)[4], const uint32_t (&a_lo)[4], const uint32_t (&b_hi)[2],
                          const uint32_t (&b_lo)[2]) {
  mma_tf32(d, a_lo, b_hi);
  mma_tf32(d, a_hi, b_lo);
  mma_tf32(d, a_hi, b_hi);
}

// The A fragment (m16 x k16, bf16) of 16 columns of an fp32 accumulator held as two m16 x n8 tiles,
// lo (the first 8 columns) and hi: its elements rounded to bf16, in pairs.
NT_DEVICE void pack_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

}  // namespace nt::cuda::device
