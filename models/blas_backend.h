// Which library LibTorch's CUDA matrix products go through (train.blas): its own default, cuBLAS,
// or cuBLASLt (LibTorch's preferred-BLAS switch, torch.backends.cuda.preferred_blas_library). The
// two pick their kernels by their own heuristics; in TREAD-XL/2's fp32 block on an H200 cuBLAS's
// TF32 products ran at 347 TFLOP/s in forward and 229 in backward (fifteenth session's trace),
// hence the switch to compare.
// Products the project calls itself (models/gelu_gemm_cuda.h: cuBLASLt, algorithms timed) are not
// affected.
//   "auto"      LibTorch's default
//   "cublas"    cuBLAS
//   "cublaslt"  cuBLASLt
#pragma once
#include <string>

namespace nt {

// Sets the process-wide choice; false where it cannot apply (LibTorch before 2.3 has no switch:
// there only "auto" applies). Throws std::invalid_argument for another name.
bool set_blas_backend(const std::string& name);

}  // namespace nt
