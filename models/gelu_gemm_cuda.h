// Matrix products with a tanh-GELU epilogue through cuBLASLt (gelu_gemm_cuda.cu; no LibTorch in
// this interface), the two halves of an MLP's fc1 -> GELU -> fc2 that a plain LibTorch forward
// and backward run as separate elementwise passes and reductions. Matrices are row-major and
// contiguous (leading dimension = row length). The products accumulate in fp32.
//
//   gemm_bias_gelu:    pre[M, N] = x[M, K] · w[N, K]^T + bias[N]       (the GELU's input, kept)
//                      out[M, N] = gelu_tanh(pre)                       (one product, no pass)
//   gemm_dgelu_bgrad:  dpre[M, N] = (dy[M, O] · w[O, N]) * gelu_tanh'(pre[M, N])
//                      dbias[N] = sum over m of dpre[m, :]              (the bias gradient; with
//                                 accumulate_bias dbias += it, in fp32, rounded once: fc1's bias
//                                 gradient buffer, models/linear_backward.h)
//                      act[M, N] = gelu_tanh(pre), where act is not null (the GELU again)
//
// Every matrix and vector is of `dtype`: bf16 under autocast; fp32 in TREAD's block after a route
// (outside autocast, as the reference's) with `math` = tf32, what LibTorch's fp32 products do with
// TF32 allowed (the reference allows it), or exact (tests).
// Launches go to `stream` (nullptr: the legacy default stream, LibTorch's default) on CUDA
// device `device`; `workspace` holds `workspace_bytes` device bytes (gelu_gemm_workspace_bytes()).
// Both return false, having done nothing, when cuBLASLt offers no algorithm for the shapes and
// alignments (its heuristic fails or finds none, e.g. N not a multiple of 8); the caller then
// takes LibTorch's ops. Other failures throw std::runtime_error naming file, line and rank.
// The first product of given shapes, alignments and epilogue on a thread times the heuristic's
// best algorithms (up to 8, each launched 4 times on `stream`, then a host synchronisation) and
// keeps the fastest; rank 0 logs their timing beside the same product without the epilogue.
#pragma once
#include <cstddef>
#include <cstdint>

#include "models/fused_kernels_cuda.h"  // nt::cuda::Dtype

namespace nt::cuda {

// How fp32 products multiply: exact (CUBLAS_COMPUTE_32F) or with TF32 tensor-core products
// (CUBLAS_COMPUTE_32F_FAST_TF32). bf16 products ignore it (fp32 accumulation).
enum class Fp32Math { exact, tf32 };

bool gemm_bias_gelu(const void* x, const void* w, const void* bias, void* out, void* pre, int64_t M, int64_t N,
                    int64_t K, Dtype dtype, Fp32Math math, void* workspace, size_t workspace_bytes, int device,
                    void* stream);

// How gemm_dgelu_bgrad forms its outputs:
//   epilogue:          the product with cuBLASLt's GELU-derivative + bias-gradient epilogue
//                      (DGELU_BGRAD);
//   epilogue_and_sums: the product with the GELU-derivative epilogue alone (DGELU), then the
//                      bias gradient's column sums in a kernel of our own;
//   product_and_kernel: the plain product (rounded to dtype, as LibTorch's is), then one kernel of
//                      our own for the GELU's derivative and the column sums
//                      (models/gelu_kernels_device.h);
//   automatic:         whichever of the three the first call of given shapes on a thread
//                      measures fastest (logged by rank 0).
// act, where asked for, comes from that kernel in the last two ways and from a GELU kernel of our
// own after the first. Our column sums add in a fixed order (deterministic). On the H200 the
// product with DGELU_BGRAD took 3.8 times the plain product's time (docs/performance.md). That
// epilogue writes the bias gradient and cannot add: with accumulate_bias it is not taken (asked
// for by name, the call returns false), and the automatic choice times the other two against a
// scratch bias gradient.
enum class GeluBackward { automatic, epilogue, epilogue_and_sums, product_and_kernel };

// w is [O, N] or, with `w_transposed`, its transpose [N, O] (models/product_forms.h's staged input
// gradient: k = O contiguous in both operands, as TF32's tensor cores take them).
bool gemm_dgelu_bgrad(const void* dy, const void* w, bool w_transposed, const void* pre, void* dpre, void* dbias,
                      bool accumulate_bias, void* act, int64_t M, int64_t N, int64_t O, Dtype dtype, Fp32Math math,
                      void* workspace, size_t workspace_bytes, int device, void* stream,
                      GeluBackward how = GeluBackward::automatic);

// The workspace the products may use (32 MiB, what cuBLAS uses on Hopper).
size_t gelu_gemm_workspace_bytes();

}  // namespace nt::cuda
