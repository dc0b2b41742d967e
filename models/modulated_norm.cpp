// LayerNorm + adaLN modulate: composite or fused CUDA kernels (see
// models/modulated_norm.h; the fused form is in models/fused_kernels.cpp).
#include "models/modulated_norm.h"

#include <torch/torch.h>

#include "models/autocast.h"
#include "models/dit.h"
#include "models/fused_kernels.h"

namespace nt {
namespace {

constexpr double kEps = kModulatedNormEps;

}  // namespace

at::Tensor modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, bool fused) {
  // Under autocast the output only feeds a matrix product, which would round it to bf16 anyway.
  if (fused && fused_modulated_norm_supports(x, shift, scale))
    return fused_modulated_norm(x, shift, scale, kEps, cuda_autocast_enabled());
  return modulate(at::layer_norm(x, {x.size(-1)}, {}, {}, kEps), shift, scale);
}

}  // namespace nt
