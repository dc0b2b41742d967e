// How models/gelu_gemm_cuda.cu lays its row-major products out for cuBLASLt, which is
// column-major (BLAS: D [m, n] = op(A) [m, k] · B [k, n], element (i, j) of a stored matrix at
// i + j * ld). A row-major [R, C] matrix is a column-major [C, R] one with the same leading
// dimension, so both products are computed transposed. cuBLASLt's bias (and bias gradient) runs
// along D's m rows, and the GELU input (the epilogue's aux matrix) is laid out like D. Plain
// arithmetic, no CUDA: tests/models/test_gelu_mlp.cpp checks it on the CPU against the BLAS
// definition.
#pragma once
#include <cstdint>

namespace nt::cuda {

struct ColumnMajorProduct {
  bool transpose_a;             // op(A) = A^T
  int64_t m, n, k;              // D [m, n] = op(A) [m, k] · B [k, n]
  int64_t a_rows, a_cols, lda;  // A as stored: [k, m] when transposed, else [m, k]
  int64_t ldb;                  // B stored [k, n]
  int64_t ldd;                  // D, and the aux matrix, [m, n]
};

// pre [M, N] = x [M, K] · w [N, K]^T (+ bias [N]): D = pre^T [N, M] = (w stored col-major
// [K, N], transposed) · (x stored col-major [K, M]).
inline ColumnMajorProduct bias_gelu_layout(int64_t M, int64_t N, int64_t K) {
  return {/*transpose_a=*/true, N, M, K, /*a_rows=*/K, /*a_cols=*/N, /*lda=*/K, /*ldb=*/K, /*ldd=*/N};
}

// dpre [M, N] = dy [M, O] · w [O, N] (then * GELU'(pre), bias gradient [N]): D = dpre^T [N, M] =
// (w stored col-major [N, O]) · (dy stored col-major [O, M]).
inline ColumnMajorProduct dgelu_layout(int64_t M, int64_t N, int64_t O) {
  return {/*transpose_a=*/false, N, M, O, /*a_rows=*/N, /*a_cols=*/O, /*lda=*/N, /*ldb=*/O, /*ldd=*/N};
}

// The same dpre with the weight given as its transpose wt [N, O] (contiguous; models/product_forms.h's
// staged input gradient): dpre = dy [M, O] · wt [N, O]^T is the forward's product with K = O, so
// its layout, k contiguous in both operands as TF32's tensor cores take it.
inline ColumnMajorProduct dgelu_transposed_layout(int64_t M, int64_t N, int64_t O) {
  return bias_gelu_layout(M, N, O);
}

}  // namespace nt::cuda
