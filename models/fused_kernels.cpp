// The fused CUDA ops as autograd functions over the kernels' launchers (see models/fused_kernels.h).
#include "models/fused_kernels.h"

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <string>

#ifdef NT_HAVE_CUDA_KERNELS
#include "models/attention_cuda.h"
#include "models/cuda_dtype.h"
#include "models/fused_kernels_cuda.h"
#include "models/linear_backward.h"  // grad_in_place
#endif

namespace nt {
namespace {

bool cpu_tensors_for_tests = false;  // fused_kernels_take_cpu_tensors_for_tests

// Where the kernels' launchers can reach the data: CUDA (or, in a test with CPU launchers, CPU).
bool on_kernel_device(const at::Tensor& t) { return t.is_cuda() || (cpu_tensors_for_tests && t.is_cpu()); }

// A per-sample [N, D] tensor the kernels can read: CUDA, on x's device, fp32 or bf16.
bool per_sample_ok(const at::Tensor& t, const at::Tensor& x) {
  return on_kernel_device(t) && t.dim() == 2 && t.size(0) == x.size(0) && t.size(1) == x.size(2) &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) && t.get_device() == x.get_device();
}

bool stream_ok(const at::Tensor& x) {  // fp32 x [N, T, D] on CUDA
  return on_kernel_device(x) && x.dim() == 3 && x.scalar_type() == at::kFloat && x.size(1) > 0 &&
         x.size(0) <= 65535;
}

// The qkv product's bias that `op` forms the gradient of (undefined: none): [3D] on qkv_out's device.
void check_qkv_bias(const char* op, const at::Tensor& qkv_out, const at::Tensor& bias) {
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != qkv_out.size(2) || bias.device() != qkv_out.device()))
    throw std::runtime_error(std::string(op) + ": the qkv bias must be [" + std::to_string(qkv_out.size(2)) +
                             "] on the output's device");
}

[[noreturn]] void unsupported(const char* op, const std::string& what) {
  throw std::runtime_error(std::string(op) + ": needs " + (fused_kernels_built() ? "" : "a build with nvcc and ") +
                           "CUDA tensors: " + what);
}

#ifdef NT_HAVE_CUDA_KERNELS
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// [N, D] with unit stride along D (an adaLN chunk is): its row stride; otherwise a contiguous copy's.
at::Tensor rows_of(const at::Tensor& t, int64_t* stride) {
  at::Tensor r = t.stride(1) == 1 ? t : t.contiguous();
  *stride = r.stride(0);
  return r;
}

// {y} or, with `pass_x`, {y, x'} where x' is x itself (a view: LibTorch's custom functions hand a
// returned input on as one). x's gradient through x' then reaches this node's backward with the
// norm's and the kernel adds the two, where autograd would otherwise add them in a pass of its own.
struct FusedModulatedNorm : torch::autograd::Function<FusedModulatedNorm> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& shift_in,
                               const at::Tensor& scale_in, double eps, bool bf16_out, bool pass_x) {
    const at::Tensor x = x_in.contiguous();  // [N, T, D] fp32
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2);
    int64_t shift_stride = 0, scale_stride = 0;
    const at::Tensor shift = rows_of(shift_in, &shift_stride), scale = rows_of(scale_in, &scale_stride);  // [N, D]
    auto y = at::empty({N, T, D}, x.options().dtype(bf16_out ? at::kBFloat16 : at::kFloat));
    auto mean = at::empty({N * T}, x.options()), rstd = at::empty({N * T}, x.options());  // [N*T]
    cuda::modulated_norm_forward(x.data_ptr<float>(), shift.data_ptr(), shift_stride, scale.data_ptr(), scale_stride,
                                 cuda_dtype_of(scale), y.data_ptr(), cuda_dtype_of(y), mean.data_ptr<float>(),
                                 rstd.data_ptr<float>(), N * T, T, static_cast<int>(D), static_cast<float>(eps),
                                 x.get_device(), nullptr);
    ctx->save_for_backward({x, scale, mean, rstd});
    ctx->saved_data["scale_stride"] = scale_stride;
    if (pass_x) return {y, x_in};
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1], &mean = saved[2], &rstd = saved[3];
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2);
    const at::Tensor none;
    if (!grads[0].defined()) return {grads.size() > 1 ? grads[1] : none, none, none, none, none, none};  // y unused
    auto gx = at::empty_like(x);  // [N, T, D] fp32
    // [N, D] in the dtype of scale and shift (one dtype: fused_modulated_norm_supports); the kernels
    // sum in fp32 and round once, so no cast follows.
    auto g_scale = at::empty({N, D}, scale.options()), g_shift = at::empty({N, D}, scale.options());
    const at::Tensor gy = grads[0].contiguous();  // [N, T, D], the output's dtype
    const at::Tensor g_other = grads.size() > 1 && grads[1].defined() ? grads[1].to(at::kFloat).contiguous() : none;
    // The tiles' partial sums (none with g_other: that kernel pair sums over tokens directly).
    const int64_t parts =
        g_other.defined() ? 0 : cuda::modulated_norm_backward_workspace(N * T, T, static_cast<int>(D));
    auto workspace = at::empty({parts}, x.options());
    cuda::modulated_norm_backward(gy.data_ptr(), cuda_dtype_of(gy), x.data_ptr<float>(), mean.data_ptr<float>(),
                                  rstd.data_ptr<float>(), scale.data_ptr(), ctx->saved_data["scale_stride"].toInt(),
                                  cuda_dtype_of(scale), g_other.defined() ? g_other.data_ptr<float>() : nullptr,
                                  gx.data_ptr<float>(), g_scale.data_ptr(), g_shift.data_ptr(),
                                  workspace.data_ptr<float>(), N * T, T, static_cast<int>(D), x.get_device(), nullptr);
    return {gx, g_shift, g_scale, none, none, none};
  }
};

// The gradient of `bias` (undefined: none asked for) from a kernel's partial sums: an fp32
// workspace of `part_floats` (a residual's per-sample sums: [N, D]) and the [width] sum in
// like's dtype, as the product's own bias gradient would be summed; as() casts it to the bias's
// dtype. Where bias.grad() takes it in place (models/linear_backward.h: grad_in_place), the sum
// is added there by the kernel (`accumulate`) and as() gives autograd none. A residual's:
// BiasGrad(wanted, bias, branch).
struct BiasGrad {
  at::Tensor part, sum;
  bool accumulate = false;
  BiasGrad(bool wanted, const at::Tensor& bias, const at::Tensor& like, int64_t part_floats, int64_t width) {
    if (!wanted) return;
    part = at::empty({part_floats}, like.options().dtype(at::kFloat));
    sum = grad_in_place(bias, like.scalar_type());  // [width], or undefined
    accumulate = sum.defined();
    if (!accumulate) sum = at::empty({width}, like.options());
  }
  BiasGrad(bool wanted, const at::Tensor& bias, const at::Tensor& branch)
      : BiasGrad(wanted, bias, branch, branch.size(0) * branch.size(2), branch.size(2)) {}
  float* part_ptr() const { return part.defined() ? part.data_ptr<float>() : nullptr; }
  void* sum_ptr() const { return sum.defined() ? sum.data_ptr() : nullptr; }
  at::Tensor as(const at::Tensor& bias) const {
    return sum.defined() && !accumulate ? sum.to(bias.scalar_type()) : at::Tensor();
  }
};

// Autograd's Function::apply records every tensor argument's device, so an undefined one cannot
// be passed: no bias travels as an empty stand-in on x's device.
at::Tensor bias_or_stand_in(const at::Tensor& bias, const at::Tensor& x) {
  return bias.defined() ? bias : at::empty({0}, x.options());
}
bool has_bias(const at::Tensor& bias) { return bias.numel() > 0; }

// `bias` ([D], or the empty stand-in): the bias of the product that made branch, which that
// product used detached; only its gradient comes from here.
struct FusedGatedResidual : torch::autograd::Function<FusedGatedResidual> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& gate_in,
                            const at::Tensor& branch_in, const at::Tensor& bias) {
    const at::Tensor x = x_in.contiguous(), branch = branch_in.contiguous();  // [N, T, D]
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2);
    int64_t gate_stride = 0;
    const at::Tensor gate = rows_of(gate_in, &gate_stride);  // [N, D]
    auto out = at::empty_like(x);                              // [N, T, D] fp32
    cuda::gated_residual_forward(x.data_ptr<float>(), gate.data_ptr(), gate_stride, branch.data_ptr(),
                                 cuda_dtype_of(branch), out.data_ptr<float>(), N * T, T, static_cast<int>(D),
                                 x.get_device(), nullptr);
    ctx->save_for_backward({gate, branch, bias});
    ctx->saved_data["gate_stride"] = gate_stride;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &branch = saved[1], &bias = saved[2];
    const int64_t N = branch.size(0), T = branch.size(1), D = branch.size(2);
    const at::Tensor g = grads[0].contiguous();  // [N, T, D] fp32
    auto g_branch = at::empty_like(branch);
    auto g_gate = at::empty({N, D}, gate.options());  // the gate's dtype (summed in fp32, rounded once)
    const BiasGrad g_bias(has_bias(bias) && ctx->needs_input_grad(3), bias, branch);
    cuda::gated_residual_backward(g.data_ptr<float>(), gate.data_ptr(), ctx->saved_data["gate_stride"].toInt(),
                                  branch.data_ptr(), cuda_dtype_of(branch), g_branch.data_ptr(), g_gate.data_ptr(),
                                  g_bias.part_ptr(), g_bias.sum_ptr(), N * T, T, static_cast<int>(D), g.get_device(),
                                  nullptr, g_bias.accumulate);
    return {grads[0], g_gate, g_branch, g_bias.as(bias)};
  }
};

// h = x + gate * branch, then n = modulate(LayerNorm(h)): both outputs of one node. Backward
// keeps x (the block keeps it anyway: the first norm's input, or the residual before), not h, and
// forms h again from x, gate and branch in its kernels, bit for bit (DiT-XL/2 at batch 128:
// [N, T, D] fp32, 151 MB, less per block), with the statistics, gate, branch and scale. `bias` as
// FusedGatedResidual's.
struct FusedResidualNorm : torch::autograd::Function<FusedResidualNorm> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& gate,
                               const at::Tensor& branch_in, const at::Tensor& shift, const at::Tensor& scale,
                               double eps, bool bf16_out, const at::Tensor& bias) {
    const at::Tensor x = x_in.contiguous(), branch = branch_in.contiguous();  // [N, T, D]
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2), stride = gate.stride(0);
    auto h = at::empty_like(x);  // fp32
    auto y = at::empty({N, T, D}, x.options().dtype(bf16_out ? at::kBFloat16 : at::kFloat));
    auto mean = at::empty({N * T}, x.options()), rstd = at::empty({N * T}, x.options());
    cuda::residual_norm_forward(x.data_ptr<float>(), gate.data_ptr(), branch.data_ptr(), shift.data_ptr(),
                                scale.data_ptr(), stride, cuda_dtype_of(gate), h.data_ptr<float>(), y.data_ptr(),
                                cuda_dtype_of(y), mean.data_ptr<float>(), rstd.data_ptr<float>(), N * T, T,
                                static_cast<int>(D), static_cast<float>(eps), x.get_device(), nullptr);
    ctx->save_for_backward({x, gate, branch, scale, mean, rstd, bias});
    return {h, y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &gate = saved[1], &branch = saved[2], &scale = saved[3];  // x [N, T, D] fp32
    const at::Tensor &mean = saved[4], &rstd = saved[5], &bias = saved[6];
    const int64_t N = x.size(0), T = x.size(1), D = x.size(2);
    const at::Tensor gh = grads[0].defined() ? grads[0].contiguous() : at::Tensor();  // [N, T, D] fp32
    const at::Tensor gy = grads[1].defined() ? grads[1].contiguous()                  // [N, T, D], y's dtype
                                             : at::zeros({N, T, D}, x.options());
    auto gx = at::empty_like(x);
    auto g_branch = at::empty_like(branch);
    // [N, D] in the mod dtype (the kernels sum in fp32 and round once: no cast after).
    auto g_gate = at::empty({N, D}, gate.options()), g_scale = at::empty({N, D}, gate.options()),
         g_shift = at::empty({N, D}, gate.options());
    // needs_input_grad counts the tensor arguments only: x, gate, branch, shift, scale, bias.
    const BiasGrad g_bias(has_bias(bias) && ctx->needs_input_grad(5), bias, branch);
    cuda::residual_norm_backward(gh.defined() ? gh.data_ptr<float>() : nullptr, gy.data_ptr(), cuda_dtype_of(gy),
                                 x.data_ptr<float>(), mean.data_ptr<float>(), rstd.data_ptr<float>(), gate.data_ptr(),
                                 branch.data_ptr(), scale.data_ptr(), gate.stride(0), cuda_dtype_of(gate),
                                 gx.data_ptr<float>(), g_branch.data_ptr(), g_gate.data_ptr(),
                                 g_scale.data_ptr(), g_shift.data_ptr(), g_bias.part_ptr(),
                                 g_bias.sum_ptr(), N * T, T, static_cast<int>(D), x.get_device(), nullptr,
                                 g_bias.accumulate);
    return {gx,
            g_gate,
            g_branch,
            g_shift,
            g_scale,
            at::Tensor(),
            at::Tensor(),
            g_bias.as(bias)};
  }
};

// q, k, v [N, H, T, hd] as views of qkv's output [N, T, 3D] (the layout's own unbind, then each
// transposed); backward stacks their gradients into the output's gradient and, where `bias`
// (the qkv product's, which that product took detached) asks for one, sums the columns for its
// gradient, in one kernel.
struct FusedQkvSplit : torch::autograd::Function<FusedQkvSplit> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& qkv_out, const at::Tensor& bias,
                               int64_t heads) {
    const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
    ctx->save_for_backward({bias});  // [3D] or the empty stand-in: its dtype and whether it is one
    ctx->saved_data["shape"] = std::vector<int64_t>{N, T, D, heads};
    ctx->saved_data["dtype"] = static_cast<int64_t>(qkv_out.scalar_type());
    return qkv_views(qkv_out, heads);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor bias = ctx->get_saved_variables()[0];
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t N = shape[0], T = shape[1], D = shape[2], heads = shape[3];
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    at::Tensor keep[3], any;  // the gradients as the kernel reads them; one of them
    cuda::QkvGradParts parts{};
    for (int p = 0; p < 3; ++p) {
      if (!grads[p].defined()) continue;  // a part unused: zeros
      at::Tensor g = grads[p].scalar_type() == dtype ? grads[p] : grads[p].to(dtype);
      if (g.stride(3) != 1) g = g.contiguous();
      keep[p] = any = g;
      parts.part[p] = g.data_ptr();
      parts.stride_n[p] = g.stride(0);
      parts.stride_h[p] = g.stride(1);
      parts.stride_t[p] = g.stride(2);
    }
    const at::Tensor none;
    if (!any.defined()) return {none, none, none};
    auto g = at::empty({N, T, 3 * D}, any.options());  // [N, T, 3D]
    const BiasGrad g_bias(has_bias(bias) && ctx->needs_input_grad(1), bias, g,
                          cuda::qkv_grad_workspace(N * T, static_cast<int>(D)), 3 * D);
    cuda::qkv_grad(parts, cuda_dtype_of(g), g.data_ptr(), g_bias.sum_ptr(), g_bias.part_ptr(), N * T, T,
                   static_cast<int>(D), static_cast<int>(heads), g.get_device(), nullptr, g_bias.accumulate);
    return {g, g_bias.as(bias), none};
  }
};

// softmax(q k^T / sqrt(hd)) v for q, k, v read in place from qkv's output [N, T, 3D] (bf16, or
// fp32 with 3xTF32 products), as [N, T, D] (the proj product's input;
// models/attention_kernels_device.h). Keeps qkv_out, o and the rows'
// log-sums (lse, [N * H, T] fp32, 2 KB per (n, h) at T = 256). Backward writes q's, k's and v's
// gradients straight into qkv_out's gradient (no stack of three) and, where `bias` (the qkv
// product's, taken detached) asks for one, its gradient: the column sums (qkv_grad with the
// parts already in place).
struct FusedAttention : torch::autograd::Function<FusedAttention> {
  static cuda::AttentionTensors tensors(const at::Tensor& qkv_out, const at::Tensor& o, const at::Tensor& lse,
                                        int64_t heads) {
    const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
    auto* p = static_cast<char*>(qkv_out.data_ptr());
    const int64_t part = D * static_cast<int64_t>(qkv_out.element_size());  // bytes
    cuda::AttentionTensors a{};
    a.dtype = cuda_dtype_of(qkv_out);
    a.q = p;
    a.k = p + part;
    a.v = p + 2 * part;
    a.s_n = T * 3 * D;
    a.s_h = D / heads;
    a.s_t = 3 * D;
    a.o = o.defined() ? o.data_ptr() : nullptr;
    a.lse = lse.defined() ? lse.data_ptr<float>() : nullptr;
    a.N = N;
    a.H = heads;
    a.T = T;
    a.hd = D / heads;
    return a;
  }
  static float scale(int64_t hd) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& qkv_out, const at::Tensor& bias, int64_t heads) {
    const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
    auto o = at::empty({N, T, D}, qkv_out.options());                       // [N, T, H, hd]
    auto lse = at::empty({N * heads, T}, qkv_out.options().dtype(at::kFloat));  // [N * H, T]
    const cuda::AttentionTensors a = tensors(qkv_out, o, lse, heads);
    cuda::attention_forward(a, scale(a.hd), qkv_out.get_device(), nullptr);
    ctx->save_for_backward({qkv_out, o, lse, bias});
    ctx->saved_data["heads"] = heads;
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qkv_out = saved[0], &o = saved[1], &lse = saved[2], &bias = saved[3];
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
    const at::Tensor none;
    if (!grads[0].defined()) return {none, none, none};
    const at::Tensor go = grads[0].to(qkv_out.scalar_type()).contiguous();  // [N, T, D]
    auto g = at::empty_like(qkv_out);                                       // [N, T, 3D]
    auto delta = at::empty_like(lse);                                       // [N * H, T]
    const cuda::AttentionTensors a = tensors(qkv_out, o, lse, heads);
    auto* gp = static_cast<char*>(g.data_ptr());
    const int64_t part = D * static_cast<int64_t>(g.element_size());  // bytes
    cuda::attention_backward(a, scale(a.hd), go.data_ptr(), T * D, a.hd, D, delta.data_ptr<float>(), gp, gp + part,
                             gp + 2 * part, g.get_device(), nullptr);
    const BiasGrad g_bias(has_bias(bias) && ctx->needs_input_grad(1), bias, g,
                          cuda::qkv_grad_workspace(N * T, static_cast<int>(D)), 3 * D);
    if (g_bias.sum.defined()) {
      cuda::QkvGradParts parts{};
      for (int p = 0; p < 3; ++p) {  // g's own column blocks: q's, k's, v's gradients in place
        parts.part[p] = gp + p * part;
        parts.stride_n[p] = a.s_n;
        parts.stride_h[p] = a.s_h;
        parts.stride_t[p] = a.s_t;
      }
      cuda::qkv_grad(parts, a.dtype, nullptr, g_bias.sum_ptr(), g_bias.part_ptr(), N * T, T,
                     static_cast<int>(D), static_cast<int>(heads), g.get_device(), nullptr, g_bias.accumulate);
    }
    return {g, g_bias.as(bias), none};
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

void fused_kernels_take_cpu_tensors_for_tests(bool on) { cpu_tensors_for_tests = on; }

bool fused_modulated_norm_supports(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
#ifdef NT_HAVE_CUDA_KERNELS
  return stream_ok(x) && x.size(2) <= cuda::modulated_norm_max_width() && per_sample_ok(shift, x) &&
         per_sample_ok(scale, x) && shift.scalar_type() == scale.scalar_type();
#else
  return false;
#endif
}

at::Tensor fused_modulated_norm(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                                bool bf16_out) {
  if (!fused_modulated_norm_supports(x, shift, scale))
    unsupported("fused_modulated_norm", "fp32 x [N, T, D] and shift, scale [N, D] of one dtype (fp32 or bf16)");
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedModulatedNorm::apply(x, shift, scale, eps, bf16_out, false)[0];
#else
  return at::Tensor();
#endif
}

std::vector<at::Tensor> fused_modulated_norm_passing(const at::Tensor& x, const at::Tensor& shift,
                                                     const at::Tensor& scale, double eps, bool bf16_out) {
  if (!fused_modulated_norm_supports(x, shift, scale))
    unsupported("fused_modulated_norm_passing", "fp32 x [N, T, D] and shift, scale [N, D] of one dtype (fp32 or bf16)");
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedModulatedNorm::apply(x, shift, scale, eps, bf16_out, true);
#else
  return {};
#endif
}

bool fused_gated_residual_supports(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch) {
  return fused_kernels_built() && stream_ok(x) && per_sample_ok(gate, x) && on_kernel_device(branch) &&
         branch.sizes() == x.sizes() && branch.scalar_type() == gate.scalar_type() &&
         branch.get_device() == x.get_device();
}

namespace {
// An undefined bias, or a [D] one on x's device.
void check_branch_bias(const char* op, const at::Tensor& bias, const at::Tensor& x) {
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != x.size(2) || bias.device() != x.device()))
    throw std::runtime_error(std::string(op) + ": the branch's bias must be [" + std::to_string(x.size(2)) +
                             "] on x's device");
}
}  // namespace

at::Tensor fused_gated_residual(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch,
                                const at::Tensor& branch_bias) {
  if (!fused_gated_residual_supports(x, gate, branch))
    unsupported("fused_gated_residual",
                "fp32 x [N, T, D], gate [N, D] and branch [N, T, D] of one dtype (fp32 or bf16)");
  check_branch_bias("fused_gated_residual", branch_bias, x);
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedGatedResidual::apply(x, gate, branch, bias_or_stand_in(branch_bias, x));
#else
  return at::Tensor();
#endif
}

bool fused_residual_norm_supports(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch,
                                  const at::Tensor& shift, const at::Tensor& scale) {
  return fused_gated_residual_supports(x, gate, branch) && fused_modulated_norm_supports(x, shift, scale) &&
         gate.scalar_type() == shift.scalar_type() && gate.stride(0) == shift.stride(0) &&
         gate.stride(0) == scale.stride(0) && gate.stride(1) == 1 && shift.stride(1) == 1 && scale.stride(1) == 1;
}

std::vector<at::Tensor> fused_residual_norm(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch,
                                            const at::Tensor& shift, const at::Tensor& scale, double eps,
                                            bool bf16_out, const at::Tensor& branch_bias) {
  if (!fused_residual_norm_supports(x, gate, branch, shift, scale))
    unsupported("fused_residual_norm",
                "fp32 x [N, T, D], branch [N, T, D] and gate, shift, scale [N, D] of one dtype with one row stride");
  check_branch_bias("fused_residual_norm", branch_bias, x);
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedResidualNorm::apply(x, gate, branch, shift, scale, eps, bf16_out, bias_or_stand_in(branch_bias, x));
#else
  return {};
#endif
}

std::vector<at::Tensor> qkv_views(const at::Tensor& qkv_out, int64_t heads) {
  const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
  std::vector<at::Tensor> qkv;
  for (const auto& part : qkv_out.view({N, T, 3, heads, D / heads}).unbind(2))  // 3 x [N, T, H, hd]
    qkv.push_back(part.transpose(1, 2));                                        // [N, H, T, hd]
  return qkv;
}

bool fused_qkv_split_supports(const at::Tensor& qkv_out, int64_t heads) {
  return fused_kernels_built() && on_kernel_device(qkv_out) && qkv_out.dim() == 3 && qkv_out.is_contiguous() &&
         (qkv_out.scalar_type() == at::kFloat || qkv_out.scalar_type() == at::kBFloat16) && heads > 0 &&
         qkv_out.size(2) % (3 * heads) == 0 && qkv_out.size(1) > 0 && qkv_out.size(0) <= 65535 &&
         qkv_out.size(0) * qkv_out.size(1) <= 2147483647LL;
}

std::vector<at::Tensor> fused_qkv_split(const at::Tensor& qkv_out, const at::Tensor& bias, int64_t heads) {
  if (!fused_qkv_split_supports(qkv_out, heads))
    unsupported("fused_qkv_split", "a contiguous fp32 or bf16 qkv output [N, T, 3D] with D a multiple of the heads");
  check_qkv_bias("fused_qkv_split", qkv_out, bias);
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedQkvSplit::apply(qkv_out, bias_or_stand_in(bias, qkv_out), heads);
#else
  return {};
#endif
}

bool fused_attention_supports(const at::Tensor& qkv_out, int64_t heads) {
#ifdef NT_HAVE_CUDA_KERNELS
  const auto dtype = qkv_out.scalar_type();
  if (!on_kernel_device(qkv_out) || qkv_out.dim() != 3 || (dtype != at::kBFloat16 && dtype != at::kFloat) ||
      !qkv_out.is_contiguous() || heads <= 0 || qkv_out.size(2) % (3 * heads) != 0 || qkv_out.size(0) == 0)
    return false;
  return cuda::attention_supports(FusedAttention::tensors(qkv_out, at::Tensor(), at::Tensor(), heads));
#else
  (void)qkv_out;
  (void)heads;
  return false;
#endif
}

bool fused_attention_supports_shape(int64_t tokens, int64_t head_width) {
#ifdef NT_HAVE_CUDA_KERNELS
  return cuda::attention_shape_supported(tokens, head_width);
#else
  (void)tokens;
  (void)head_width;
  return false;
#endif
}

std::string fused_attention_limits() {
#ifdef NT_HAVE_CUDA_KERNELS
  return cuda::attention_limits();
#else
  return "none in a build without nvcc";
#endif
}

at::Tensor fused_attention(const at::Tensor& qkv_out, const at::Tensor& bias, int64_t heads) {
  if (!fused_attention_supports(qkv_out, heads))
    unsupported("fused_attention", "a contiguous bf16 or fp32 qkv output [N, T, 3D] within the kernels' limits (" +
                                       fused_attention_limits() + ")");
  check_qkv_bias("fused_attention", qkv_out, bias);
#ifdef NT_HAVE_CUDA_KERNELS
  return FusedAttention::apply(qkv_out, bias_or_stand_in(bias, qkv_out), heads);
#else
  return {};
#endif
}

}  // namespace nt
