// The fused optimizer step's launcher (dist/adamw_cuda.h): the device, the vector width the
// buffers' alignment allows, the gradient's dtype, error checks.
#include "dist/adamw_cuda.h"

#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "dist/adamw_device.h"

namespace nt::cuda {
namespace {

bool aligned(const void* p, uintptr_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename G>
void launch(float* theta, const G* grad, float* m, float* v, float* ema, __nv_bfloat16* copy, int64_t n,
            const AdamWEmaConsts& c, cudaStream_t s) {
  const bool vec = aligned(theta, 16) && aligned(m, 16) && aligned(v, 16) && aligned(ema, 16) &&
                   aligned(grad, 4 * sizeof(G)) && aligned(copy, 8);
  const int blocks = device::adamw_ema_blocks(n);
  if (vec)
    device::adamw_ema_kernel<4, G><<<blocks, device::kAdamThreads, 0, s>>>(theta, grad, m, v, ema, copy, n, c);
  else
    device::adamw_ema_kernel<1, G><<<blocks, device::kAdamThreads, 0, s>>>(theta, grad, m, v, ema, copy, n, c);
}

}  // namespace

void adamw_ema_update(float* theta, const void* grad, bool grad_bf16, float* exp_avg, float* exp_avg_sq, float* ema,
                      void* copy_bf16, int64_t n, const AdamWEmaConsts& c, int device, void* stream) {
  if (n <= 0) return;
  CudaDeviceScope scope(device);
  const auto s = static_cast<cudaStream_t>(stream);
  auto* copy = static_cast<__nv_bfloat16*>(copy_bf16);
  if (grad_bf16)
    launch(theta, static_cast<const __nv_bfloat16*>(grad), exp_avg, exp_avg_sq, ema, copy, n, c, s);
  else
    launch(theta, static_cast<const float*>(grad), exp_avg, exp_avg_sq, ema, copy, n, c, s);
  NT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nt::cuda
