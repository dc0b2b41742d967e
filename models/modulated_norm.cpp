// LayerNorm + adaLN modulate: composite, recomputed, or fused CUDA kernels (see
// models/modulated_norm.h).
#include "models/modulated_norm.h"

#include <torch/torch.h>

#include <stdexcept>

#include "models/autocast.h"
#include "models/dit.h"
#include "models/recompute.h"
#ifdef NT_HAVE_CUDA_KERNELS
#include "models/modulated_norm_cuda.h"
#endif

namespace nt {
namespace {

constexpr double kEps = 1e-6;

at::Tensor composite(const std::vector<at::Tensor>& in) {  // x, shift, scale
  return modulate(at::layer_norm(in[0], {in[0].size(-1)}, {}, {}, kEps), in[1], in[2]);
}

#ifdef NT_HAVE_CUDA_KERNELS
cuda::Dtype dtype_of(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 ? cuda::Dtype::bf16 : cuda::Dtype::f32; }

// [N, D] with unit stride along D: the row stride; otherwise a contiguous copy's.
at::Tensor rows_of(const at::Tensor& t, int64_t* stride) {
  at::Tensor r = t.stride(1) == 1 ? t : t.contiguous();
  *stride = r.stride(0);
  return r;
}

struct FusedModulatedNorm : torch::autograd::Function<FusedModulatedNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& shift_in,
                            const at::Tensor& scale_in, bool bf16_out) {
    const at::Tensor x = x_in.contiguous();  // [N, T, D] fp32
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2);
    int64_t shift_stride = 0, scale_stride = 0;
    const at::Tensor shift = rows_of(shift_in, &shift_stride), scale = rows_of(scale_in, &scale_stride);  // [N, D]
    auto y = at::empty({N, T, D}, x.options().dtype(bf16_out ? at::kBFloat16 : at::kFloat));
    auto mean = at::empty({N * T}, x.options()), rstd = at::empty({N * T}, x.options());  // [N*T]
    cuda::modulated_norm_forward(x.data_ptr<float>(), shift.data_ptr(), shift_stride, scale.data_ptr(), scale_stride,
                                 dtype_of(scale), y.data_ptr(), dtype_of(y), mean.data_ptr<float>(),
                                 rstd.data_ptr<float>(), N * T, T, static_cast<int>(D), static_cast<float>(kEps),
                                 x.get_device(), nullptr);
    ctx->save_for_backward({x, scale, mean, rstd});
    ctx->saved_data["scale_stride"] = scale_stride;
    ctx->saved_data["shift_dtype"] = static_cast<int64_t>(shift_in.scalar_type());
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1], &mean = saved[2], &rstd = saved[3];
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2);
    const at::Tensor gy = grads[0].contiguous();  // [N, T, D], the output's dtype
    auto gx = at::empty_like(x);
    auto g_scale = at::empty({N, D}, x.options()), g_shift = at::empty({N, D}, x.options());  // fp32
    cuda::modulated_norm_backward(gy.data_ptr(), dtype_of(gy), x.data_ptr<float>(), mean.data_ptr<float>(),
                                  rstd.data_ptr<float>(), scale.data_ptr(), ctx->saved_data["scale_stride"].toInt(),
                                  dtype_of(scale), gx.data_ptr<float>(), g_scale.data_ptr<float>(),
                                  g_shift.data_ptr<float>(), N * T, T, static_cast<int>(D), x.get_device(), nullptr);
    const auto shift_dtype = static_cast<at::ScalarType>(ctx->saved_data["shift_dtype"].toInt());
    return {gx, g_shift.to(shift_dtype), g_scale.to(scale.scalar_type()), at::Tensor()};
  }
};
#endif

}  // namespace

bool fused_kernels_built() {
#ifdef NT_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

bool fused_modulated_norm_supports(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  auto mod_ok = [&](const at::Tensor& t) {
    return t.is_cuda() && t.dim() == 2 && t.size(0) == x.size(0) && t.size(1) == x.size(2) &&
           (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16);
  };
  return fused_kernels_built() && x.is_cuda() && x.dim() == 3 && x.scalar_type() == at::kFloat && x.size(1) > 0 &&
         x.size(0) <= 65535 && mod_ok(shift) && mod_ok(scale) && shift.scalar_type() == scale.scalar_type() &&
         shift.get_device() == x.get_device() && scale.get_device() == x.get_device();
}

at::Tensor fused_modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, bool bf16_out) {
  if (!fused_modulated_norm_supports(x, shift, scale))
    throw std::runtime_error("fused_modulated_norm: needs " +
                             std::string(fused_kernels_built() ? "" : "a build with nvcc and ") +
                             "CUDA tensors: fp32 x [N, T, D] and shift, scale [N, D] of one dtype (fp32 or bf16)");
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedModulatedNorm::apply(x, shift, scale, bf16_out);
#else
  return at::Tensor();
#endif
}

at::Tensor modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, bool recompute,
                          bool fused) {
  // Under autocast the output only feeds a matrix product, which would round it to bf16 anyway.
  if (fused && fused_modulated_norm_supports(x, shift, scale))
    return fused_modulated_norm(x, shift, scale, cuda_autocast_enabled());
  return recompute ? nt::recompute(composite, {x, shift, scale}) : composite({x, shift, scale});
}

}  // namespace nt
