// A runtime Dtype (models/fused_kernels_cuda.h) as the element type of a kernel's template, for the
// launchers of the .cu files: dispatch(dtype, f) calls f(Type<E>{}), E = __nv_bfloat16 or float.
#pragma once
#include <cuda_bf16.h>

#include "models/fused_kernels_cuda.h"

namespace nt::cuda {

template <typename T>
struct Type {
  using type = T;
};

template <typename F>
void dispatch(Dtype a, F&& f) {
  if (a == Dtype::bf16)
    f(Type<__nv_bfloat16>{});
  else
    f(Type<float>{});
}

}  // namespace nt::cuda
