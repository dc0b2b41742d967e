// fc1 -> tanh-GELU -> fc2 as one node, the GELU in the products' epilogues where cuBLASLt serves
// (see models/gelu_mlp.h).
#include "models/gelu_mlp.h"

#include <torch/torch.h>

#include <ATen/Context.h>

#include "models/autocast.h"
#include "models/linear_backward.h"
#include "models/modulated_norm.h"
#include "models/product_forms.h"

#ifdef NT_HAVE_CUBLASLT
#include "models/cuda_dtype.h"
#include "models/gelu_gemm_cuda.h"
#endif

namespace nt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The cuBLASLt products take CUDA operands of widths that are multiples of 8 (16-byte rows), in
// bf16 (autocast) or in fp32 where LibTorch's fp32 products would be TF32's (TREAD's block after a
// route, outside autocast); an fp32 run (TF32 off) keeps LibTorch's exact products and GELU.
bool cublaslt_serves(const at::Tensor& x, int64_t D, int64_t H, int64_t O) {
  const auto dtype = x.scalar_type();
  return gelu_mlp_cublaslt_built() && x.is_cuda() &&
         (dtype == at::kBFloat16 || (dtype == at::kFloat && at::globalContext().allowTF32CuBLAS())) && D % 8 == 0 &&
         H % 8 == 0 && O % 8 == 0;
}

#ifdef NT_HAVE_CUBLASLT
at::Tensor lt_workspace(const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(cuda::gelu_gemm_workspace_bytes())}, like.options().dtype(at::kByte));
}
#endif

// {pre, gelu(pre)} for xc [M, D] through cuBLASLt; empty when it declines the shapes.
std::vector<at::Tensor> lt_forward(const at::Tensor& xc, const at::Tensor& w1, const at::Tensor& b1) {
#ifdef NT_HAVE_CUBLASLT
  const int64_t M = xc.size(0), D = xc.size(1), H = w1.size(0);
  const auto dtype = xc.scalar_type();
  const at::Tensor w = w1.to(dtype).contiguous(), b = b1.to(dtype).contiguous();     // [H, D], [H]
  auto pre = at::empty({M, H}, xc.options()), out = at::empty({M, H}, xc.options());  // [M, H]
  const auto ws = lt_workspace(xc);
  if (cuda::gemm_bias_gelu(xc.data_ptr(), w.data_ptr(), b.data_ptr(), out.data_ptr(), pre.data_ptr(), M, H, D,
                           cuda_dtype_of(xc), cuda::Fp32Math::tf32, ws.data_ptr(), ws.numel(), xc.get_device(),
                           nullptr))
    return {pre, out};
#endif
  return {};
}

// {dpre, dbias} for dy [M, O] through cuBLASLt, and with `again` the GELU's output computed again
// as a third; empty when it declines the shapes. fc2's weight in the form the input gradient's
// product takes it (models/product_forms.h: transposed for TF32, as the forward reads its own).
// `into` (fc1's bias gradient buffer, models/linear_backward.h: grad_in_place) defined: the bias
// gradient is added there, and dbias is it.
std::vector<at::Tensor> lt_backward(const at::Tensor& dy, const at::Tensor& w2, const at::Tensor& pre, bool again,
                                    const at::Tensor& into) {
#ifdef NT_HAVE_CUBLASLT
  const int64_t M = dy.size(0), O = dy.size(1), H = pre.size(-1);
  const auto [w, transposed] = input_gradient_weight(dy, w2);                         // [O, H] or [H, O]
  const at::Tensor wc = w.contiguous();
  auto dpre = at::empty({M, H}, dy.options());                                        // [M, H]
  auto dbias = into.defined() ? into : at::empty({H}, dy.options());                   // [H]
  auto act = again ? at::empty({M, H}, dy.options()) : at::Tensor();                   // [M, H]
  const auto ws = lt_workspace(dy);
  if (cuda::gemm_dgelu_bgrad(dy.data_ptr(), wc.data_ptr(), transposed, pre.data_ptr(), dpre.data_ptr(),
                             dbias.data_ptr(), into.defined(), again ? act.data_ptr() : nullptr, M, H, O,
                             cuda_dtype_of(dy), cuda::Fp32Math::tf32, ws.data_ptr(), ws.numel(), dy.get_device(),
                             nullptr))
    return again ? std::vector<at::Tensor>{dpre, dbias, act} : std::vector<at::Tensor>{dpre, dbias};
#endif
  return {};
}

// Inputs: x (fc1's input, or with a norm its input h), shift and scale (the norm's; empty
// without), w1, b1, w2, b2; norm: 0 none, 1 composite, 2 fused (models/modulated_norm.h).
struct GeluMlp : torch::autograd::Function<GeluMlp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& shift,
                            const at::Tensor& scale, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2, bool recompute_gelu, int64_t norm) {
    const int64_t D = x.size(-1), H = w1.size(0), O = w2.size(0);
    const bool autocast = x.is_cuda() && cuda_autocast_enabled();
    const at::Tensor n = norm ? modulated_norm(x, shift, scale, norm == 2) : x;  // fc1's input [..., D]
    // ... in the product's dtype: what autocast's cast gives the plain fc1, which keeps it (fp32
    // outside autocast).
    const at::Tensor xc = autocast ? n.to(at::kBFloat16) : n;
    std::vector<at::Tensor> lt;
    if (cublaslt_serves(xc, D, H, O)) lt = lt_forward(xc.reshape({-1, D}).contiguous(), w1, b1);
    at::Tensor pre, act;  // [..., H]: the GELU's input and output
    if (!lt.empty()) {
      auto sizes = xc.sizes().vec();
      sizes.back() = H;
      pre = lt[0].view(sizes);
      act = lt[1].view(sizes);
    } else {
      pre = at::linear(xc, w1, b1);
      act = at::gelu(pre, "tanh");
    }
    const at::Tensor none;
    ctx->save_for_backward({norm ? x : xc, norm ? shift : none, norm ? scale : none, w1, w2, pre,
                            recompute_gelu ? none : act, b1});
    ctx->saved_data["norm"] = norm;
    ctx->saved_data["autocast"] = autocast;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["b1_dtype"] = static_cast<int64_t>(b1.scalar_type());
    ctx->saved_data["b2_dtype"] = static_cast<int64_t>(b2.scalar_type());
    return at::linear(act, w2, b2);  // [..., O]; autocast (if on) picks the product's dtype
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &w1 = saved[3], &w2 = saved[4], &pre = saved[5];
    const at::Tensor& dy = grads[0];  // [..., O]
    const int64_t norm = ctx->saved_data["norm"].toInt();
    const auto needs = [&](int i) { return ctx->needs_input_grad(i); };
    const bool need_in = needs(0) || needs(1) || needs(2);  // the gradient of fc1's input
    const bool need_fc1 = need_in || needs(3) || needs(4);
    const int64_t D = w1.size(1), H = pre.size(-1), O = dy.size(-1);
    const auto dtype_of = [&](const char* key) { return static_cast<at::ScalarType>(ctx->saved_data[key].toInt()); };

    // fc1's gradient input and bias gradient straight from fc2's product where cuBLASLt serves.
    // The GELU's output, when not kept and fc2's weight gradient needs it, comes along.
    at::Tensor act = saved[6];
    const bool again = !act.defined() && needs(5);
    std::vector<at::Tensor> lt;
    at::Tensor b1_into;  // fc1's bias gradient buffer, where the sums may add into it
    if (need_fc1 && cublaslt_serves(dy, D, H, O) && pre.scalar_type() == dy.scalar_type()) {
      if (needs(4)) b1_into = grad_in_place(saved[7], dy.scalar_type());
      lt = lt_backward(dy.reshape({-1, O}).contiguous(), w2, pre, again, b1_into);
    }

    // fc2: weight and bias gradients (and the GELU output's gradient unless cuBLASLt gave dpre).
    if (again) act = !lt.empty() ? lt[2].view(pre.sizes()) : at::gelu(pre, "tanh");  // [..., H], again
    const LinearGrads g2 =
        linear_backward(dy, act, w2, dtype_of("b2_dtype"), need_fc1 && lt.empty(), needs(5), needs(6));
    variable_list out(9);
    out[5] = g2.weight;
    out[6] = g2.bias;
    if (!need_fc1) return out;
    const at::Tensor dpre =  // [..., H]
        !lt.empty() ? lt[0].view(pre.sizes()) : at::gelu_backward(g2.input.to(pre.scalar_type()), pre, "tanh");

    // fc1's input: kept, or the norm computed again (with its history where gradients are needed,
    // under the forward's autocast state: the fused form writes bf16 under autocast).
    std::vector<at::Tensor> in;
    at::Tensor n;
    if (norm) {
      for (int i = 0; i < 3; ++i) in.push_back(saved[i].detach().requires_grad_(needs(i)));
      torch::AutoGradMode grad_mode(need_in);
      const AutocastAs forward_state(ctx->saved_data["autocast"].toBool());
      n = modulated_norm(in[0], in[1], in[2], norm == 2);  // [..., D]
    }
    const bool bias_from_lt = !lt.empty();
    const LinearGrads g1 = linear_backward(dpre, norm ? n.detach() : saved[0], w1, dtype_of("b1_dtype"), need_in,
                                           needs(3), needs(4) && !bias_from_lt);
    out[3] = g1.weight;
    if (needs(4) && !(bias_from_lt && b1_into.defined()))  // added in place: autograd gets none
      out[4] = bias_from_lt ? lt[1].to(dtype_of("b1_dtype")) : g1.bias;
    if (!need_in) return out;
    if (!norm) {
      out[0] = g1.input.to(dtype_of("x_dtype"));
      return out;
    }
    std::vector<at::Tensor> wrt;
    for (int i = 0; i < 3; ++i)
      if (needs(i)) wrt.push_back(in[i]);
    const auto gn = torch::autograd::grad({n}, wrt, {g1.input.to(n.scalar_type())});
    size_t k = 0;
    for (int i = 0; i < 3; ++i)
      if (needs(i)) out[i] = gn[k++];
    return out;
  }
};

}  // namespace

bool gelu_mlp_cublaslt_built() {
#ifdef NT_HAVE_CUBLASLT
  return true;
#else
  return false;
#endif
}

at::Tensor gelu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                    const at::Tensor& b2, bool recompute_gelu) {
  if (!torch::autograd::GradMode::is_enabled()) return at::linear(at::gelu(at::linear(x, w1, b1), "tanh"), w2, b2);
  const at::Tensor unused = at::empty({0}, x.options());  // the node's shift and scale (undefined inputs are not allowed)
  return GeluMlp::apply(x, unused, unused, w1, b1, w2, b2, recompute_gelu, int64_t{0});
}

at::Tensor modulated_gelu_mlp(const at::Tensor& h, const at::Tensor& shift, const at::Tensor& scale, bool fused_norm,
                              const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                              bool recompute_gelu) {
  if (!torch::autograd::GradMode::is_enabled())
    return at::linear(at::gelu(at::linear(modulated_norm(h, shift, scale, fused_norm), w1, b1), "tanh"), w2, b2);
  return GeluMlp::apply(h, shift, scale, w1, b1, w2, b2, recompute_gelu, int64_t{fused_norm ? 2 : 1});
}

}  // namespace nt
