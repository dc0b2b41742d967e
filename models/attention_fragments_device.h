// A warp's share of the attention kernels (models/attention_kernels_device.h): its 16 rows of a
// [T, HD] matrix as mma.sync operands, the products of those rows with a tile of another matrix
// in shared memory, and the stores of the results, for bf16 inputs (m16n8k16 and m16n8k8 products)
// and for fp32 inputs (3xTF32: three m16n8k8 TF32 products each, fp32's accuracy). The kernels are
// written once for both element types E; these overloads are where the two differ.
//
// Shared memory holds rows of HD elements at a pitch of attn_pitch<E>(HD) elements:
//   bf16: HD, or HD + 8 where HD is a multiple of 16, so that a row is an odd multiple of 16 bytes
//         and ldmatrix's 8 rows of 16 bytes fall in distinct banks;
//   fp32: HD + 4 (HD a multiple of 8), an odd multiple of 4 words, so that lane (g, t)'s words
//         g P + t (the B operand of q k^T: 8 rows, 4 columns) and 2t P + g (of p v: 4 pairs of
//         rows, 8 columns) fall in 32 distinct banks; rows stay 16-byte aligned for cp.async.
#pragma once
#include <cmath>
#include <cstdint>

#include "models/warp_mma_device.h"

#ifdef __CUDACC__
#define NT_HOST_DEVICE __host__ __device__
#else
#define NT_HOST_DEVICE
#endif

namespace nt::cuda::device {

using bf16 = __nv_bfloat16;

template <typename E>
NT_HOST_DEVICE constexpr int attn_pitch(int hd) {
  if constexpr (sizeof(E) == 2)
    return hd % 16 == 8 ? hd : hd + 8;
  else
    return hd + 4;
}

template <typename E, int HD>
struct RowFragments;

// The A operand of mma_rows_n: a warp's [16, kK] fp32 accumulator tiles (p or ds) as the product
// takes them.
template <typename E, int kK>
struct ProductRows;

// ---- bf16 -------------------------------------------------------------------------------------

// A warp's 16 rows of a [T, HD] matrix as A fragments (rows r0 = first + g and r0 + 8 of this lane;
// rows from T on are zeros), loaded from global memory: kSteps k16 steps and, where HD is an odd
// multiple of 8, one k8 step.
template <int HD>
struct RowFragments<bf16, HD> {
  static constexpr int kSteps = HD / 16;
  static constexpr bool kTail = HD % 16 == 8;
  uint32_t a[kSteps > 0 ? kSteps : 1][4];
  uint32_t tail[2];
  NT_DEVICE void load(const bf16* src, int64_t stride, int r0, int T, int t) {
    auto word = [&](int r, int col) { return r < T ? load_word<uint32_t>(src + r * stride + col) : 0u; };
NT_UNROLL
    for (int s = 0; s < kSteps; ++s) {
      a[s][0] = word(r0, 16 * s + 2 * t);
      a[s][1] = word(r0 + 8, 16 * s + 2 * t);
      a[s][2] = word(r0, 16 * s + 8 + 2 * t);
      a[s][3] = word(r0 + 8, 16 * s + 8 + 2 * t);
    }
    if constexpr (kTail) {
      tail[0] = word(r0, 16 * kSteps + 2 * t);
      tail[1] = word(r0 + 8, 16 * kSteps + 2 * t);
    }
  }
  // dot[r] += this lane's part of row r0 + 8 r's dot product with the same row of `o`.
  NT_DEVICE void add_row_dots(float (&dot)[2], const RowFragments& o) const {
    auto pair = [](uint32_t x, uint32_t y) { return bf16_half(x, 0) * bf16_half(y, 0) + bf16_half(x, 1) * bf16_half(y, 1); };
NT_UNROLL
    for (int s = 0; s < kSteps; ++s)
NT_UNROLL
      for (int e = 0; e < 4; ++e) dot[e % 2] += pair(a[s][e], o.a[s][e]);
    if constexpr (kTail)
NT_UNROLL
      for (int e = 0; e < 2; ++e) dot[e] += pair(tail[e], o.tail[e]);
  }
};

// c[i] (16 x 8 tiles i < kN / 8) = a (16 x HD, fragments) times the transpose of rows j0 .. j0 + kN of
// the shared [rows, HD] matrix `b` (c = a b^T: the scores q k^T, or do v^T). kN a multiple of 32.
template <int HD, int kN>
NT_DEVICE void mma_rows_t(float (&c)[kN / 8][4], const RowFragments<bf16, HD>& a, const bf16* b, int j0, int lane) {
  using Rows = RowFragments<bf16, HD>;
  constexpr int P = attn_pitch<bf16>(HD);
NT_UNROLL
  for (int i = 0; i < kN / 8; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
NT_UNROLL
  for (int s = 0; s < Rows::kSteps; ++s) {
NT_UNROLL
    for (int np = 0; np < kN / 16; ++np) {
      // matrices: (rows 16np + 0..7, cols 16s + 0..7), (same rows, cols + 8), then rows + 8
      uint32_t r[4];
      ldmatrix<4, false>(r, b + (j0 + 16 * np + lane % 8 + 8 * (lane / 16)) * P + 16 * s + 8 * ((lane / 8) % 2));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_k16(c[2 * np], a.a[s], b0);
      mma_k16(c[2 * np + 1], a.a[s], b1);
    }
  }
  if constexpr (Rows::kTail) {
NT_UNROLL
    for (int nq = 0; nq < kN / 32; ++nq) {
      // matrices: rows 32nq + 8i .. + 7, the last 8 columns, for i < 4
      uint32_t r[4];
      ldmatrix<4, false>(r, b + (j0 + 32 * nq + lane) * P + 16 * Rows::kSteps);
NT_UNROLL
      for (int i = 0; i < 4; ++i) mma_k8(c[4 * nq + i], a.tail, r[i]);
    }
  }
}

// bf16: A fragments of columns 16kk .. 16kk + 15 from tiles 2kk and 2kk + 1, rounded in pairs.
template <int kK>
struct ProductRows<bf16, kK> {
  uint32_t a[kK / 16][4];
  NT_DEVICE explicit ProductRows(const float (&p)[kK / 8][4]) {
NT_UNROLL
    for (int kk = 0; kk < kK / 16; ++kk) pack_a(a[kk], p[2 * kk], p[2 * kk + 1]);
  }
};

// c[i] (16 x 8 tiles i < HD / 8) += p (16 x kK) times rows j0 .. j0 + kK of the shared [rows, HD]
// matrix `b` (c += p b: p v, ds k, p^T do, ds^T q).
template <int HD, int kK>
NT_DEVICE void mma_rows_n(float (&c)[HD / 8][4], const ProductRows<bf16, kK>& p, const bf16* b, int j0, int lane) {
  constexpr int P = attn_pitch<bf16>(HD);
  const auto& a = p.a;
NT_UNROLL
  for (int kk = 0; kk < kK / 16; ++kk) {
    const bf16* rows = b + (j0 + 16 * kk + lane % 8 + 8 * ((lane / 8) % 2)) * P;
NT_UNROLL
    for (int dp = 0; dp < HD / 16; ++dp) {
      // matrices (transposed): (rows 0..7, cols 16dp + 0..7), (rows 8..15, same cols), then cols + 8
      uint32_t r[4];
      ldmatrix<4, true>(r, rows + 16 * dp + 8 * (lane / 16));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_k16(c[2 * dp], a[kk], b0);
      mma_k16(c[2 * dp + 1], a[kk], b1);
    }
    if constexpr (HD % 16 == 8) {
      uint32_t r[2];
      ldmatrix<2, true>(r, rows + HD - 8);
      mma_k16(c[HD / 8 - 1], a[kk], r);
    }
  }
}

// ---- fp32 (3xTF32) ----------------------------------------------------------------------------

// A warp's 16 rows of a [T, HD] fp32 matrix as the values of A fragments of m16n8k8 products, one
// k8 step per 8 columns: x[s] = (row r0, col 8s + t), (r0 + 8, 8s + t), (r0, 8s + t + 4),
// (r0 + 8, 8s + t + 4); rows from T on are zeros. Split into tf32 pairs where used.
template <int HD>
struct RowFragments<float, HD> {
  static constexpr int kSteps = HD / 8;
  float x[kSteps][4];
  NT_DEVICE void load(const float* src, int64_t stride, int r0, int T, int t) {
    auto value = [&](int r, int col) { return r < T ? src[r * stride + col] : 0.f; };
NT_UNROLL
    for (int s = 0; s < kSteps; ++s) {
      x[s][0] = value(r0, 8 * s + t);
      x[s][1] = value(r0 + 8, 8 * s + t);
      x[s][2] = value(r0, 8 * s + t + 4);
      x[s][3] = value(r0 + 8, 8 * s + t + 4);
    }
  }
  NT_DEVICE void add_row_dots(float (&dot)[2], const RowFragments& o) const {
NT_UNROLL
    for (int s = 0; s < kSteps; ++s)
NT_UNROLL
      for (int e = 0; e < 4; ++e) dot[e % 2] += x[s][e] * o.x[s][e];
  }
};

// c = a b^T as above, b's rows j0 + 8i + g read at columns 8s + t and 8s + t + 4 (B's rows t and t + 4).
template <int HD, int kN>
NT_DEVICE void mma_rows_t(float (&c)[kN / 8][4], const RowFragments<float, HD>& a, const float* b, int j0, int lane) {
  constexpr int P = attn_pitch<float>(HD);
  const int g = lane / 4, t = lane % 4;
NT_UNROLL
  for (int i = 0; i < kN / 8; ++i) c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
NT_UNROLL
  for (int s = 0; s < HD / 8; ++s) {
    uint32_t a_hi[4], a_lo[4];
    split_tf32(a_hi, a_lo, a.x[s]);
NT_UNROLL
    for (int i = 0; i < kN / 8; ++i) {
      const float* row = b + (j0 + 8 * i + g) * P + 8 * s + t;
      const float v[2] = {row[0], row[4]};
      uint32_t b_hi[2], b_lo[2];
      split_tf32(b_hi, b_lo, v);
      mma_tf32x3(c[i], a_hi, a_lo, b_hi, b_lo);
    }
  }
}

// fp32: the accumulator tiles as they are, split into tf32 pairs by mma_rows_n.
template <int kK>
struct ProductRows<float, kK> {
  const float (&p)[kK / 8][4];
  NT_DEVICE explicit ProductRows(const float (&tiles)[kK / 8][4]) : p(tiles) {}
};

// c += p b as above, p's accumulator tiles taken as A fragments with k permuted (tile kk's columns
// 2t and 2t + 1 as k = t and t + 4: {c0, c2, c1, c3}), so b's rows 8kk + 2t and 8kk + 2t + 1 (column
// 8d + g) are B's rows t and t + 4.
template <int HD, int kK>
NT_DEVICE void mma_rows_n(float (&c)[HD / 8][4], const ProductRows<float, kK>& rows_p, const float* b, int j0,
                          int lane) {
  constexpr int P = attn_pitch<float>(HD);
  const auto& p = rows_p.p;
  const int g = lane / 4, t = lane % 4;
NT_UNROLL
  for (int kk = 0; kk < kK / 8; ++kk) {
    const float pa[4] = {p[kk][0], p[kk][2], p[kk][1], p[kk][3]};
    uint32_t a_hi[4], a_lo[4];
    split_tf32(a_hi, a_lo, pa);
    const float* rows = b + (j0 + 8 * kk + 2 * t) * P + g;
NT_UNROLL
    for (int d = 0; d < HD / 8; ++d) {
      const float v[2] = {rows[8 * d], rows[P + 8 * d]};
      uint32_t b_hi[2], b_lo[2];
      split_tf32(b_hi, b_lo, v);
      mma_tf32x3(c[d], a_hi, a_lo, b_hi, b_lo);
    }
  }
}

// Two adjacent elements of a row as one word: bf16 (rounded, lo in the low half) or fp32.
NT_DEVICE uint32_t pair_word(bf16*, float lo, float hi) { return pack_bf16(lo, hi); }
NT_DEVICE float2 pair_word(float*, float lo, float hi) { return float2{lo, hi}; }

// Rows r0 and r0 + 8 of a warp's 16 x HD accumulator c, times `mul` per row, to dst + r * stride
// (rows below T), in pairs of elements.
template <int HD, typename E>
NT_DEVICE void store_rows(E* dst, int64_t stride, const float (&c)[HD / 8][4], int r0, int T, int t,
                          const float (&mul)[2]) {
NT_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int r = r0 + 8 * half;
    if (r >= T) continue;
NT_UNROLL
    for (int d = 0; d < HD / 8; ++d)
      store_word(dst + r * stride + 8 * d + 2 * t,
                 pair_word(dst, c[d][2 * half] * mul[half], c[d][2 * half + 1] * mul[half]));
  }
}

}  // namespace nt::cuda::device
