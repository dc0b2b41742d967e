// A linear layer's weight and input gradients in one of two forms (see models/product_forms.h).
#include "models/product_forms.h"

#include <ATen/Context.h>
#include <torch/torch.h>

#include <utility>

#ifdef NT_HAVE_CUDA_KERNELS
#include "models/cuda_dtype.h"
#include "models/fused_kernels_cuda.h"
#endif

namespace nt {
namespace {

std::optional<ProductForm> forced;  // force_product_form_for_tests
FormPolicy policy = FormPolicy::tall;  // set_product_form_policy (train.product_forms's default)

// out (= or +=) t^T for t [R, C], out [C, R] contiguous: on CUDA through the project's transpose
// kernel where built and it serves t (its dtypes and sizes), else LibTorch's copy or add of the
// transposed view.
void transpose_into(const at::Tensor& t, at::Tensor& out, bool accumulate) {
#ifdef NT_HAVE_CUDA_KERNELS
  const auto dtype = t.scalar_type();
  if (t.is_cuda() && t.dim() == 2 && t.is_contiguous() && (dtype == at::kBFloat16 || dtype == at::kFloat) &&
      t.numel() > 0 && t.size(0) <= cuda::transpose_max_rows()) {
    cuda::transpose(t.data_ptr(), out.data_ptr(), t.size(0), t.size(1), cuda_dtype_of(t), accumulate,
                    t.get_device(), nullptr);
    return;
  }
#endif
  if (accumulate)
    out.add_(t.t());
  else
    out.copy_(t.t());
}

// fp32 on CUDA with TF32 allowed (train.precision = "bf16": TREAD's block after a route), under the
// tall policy: TF32 products (see the header). "fp32" runs keep TF32 off, and their products the
// direct forms.
bool tf32_products(const at::Tensor& dy2) {
  return dy2.is_cuda() && policy == FormPolicy::tall && dy2.scalar_type() == at::kFloat &&
         at::globalContext().allowTF32CuBLAS();
}

ProductForm form_for(const at::Tensor& dy2, const at::Tensor& a2) {
  if (forced) return *forced;
  const int64_t O = dy2.size(1), H = a2.size(1);
  if (tf32_products(dy2)) return ProductForm::staged;
  if (dy2.is_cuda() && policy == FormPolicy::tall && O < H && O >= 256) return ProductForm::transposed;  // the tall rule (see the header)
  return ProductForm::direct;
}

ProductForm input_form(const at::Tensor& dy2) {
  if (forced) return *forced == ProductForm::staged ? ProductForm::staged : ProductForm::direct;
  return tf32_products(dy2) ? ProductForm::staged : ProductForm::direct;
}

// t [R, C] as its transpose [C, R], contiguous.
at::Tensor transposed_copy(const at::Tensor& t) {
  auto out = at::empty({t.size(1), t.size(0)}, t.options());
  transpose_into(t.contiguous(), out, /*accumulate=*/false);
  return out;
}

// The staged weight gradient's operands: dy^T [O, M] and a [M, H] as the product takes them, the
// narrower one a transposed copy (k = M contiguous), the other a view.
std::pair<at::Tensor, at::Tensor> staged_operands(const at::Tensor& dy2, const at::Tensor& a2) {
  if (a2.size(1) <= dy2.size(1)) return {dy2.t(), transposed_copy(a2).t()};  // a^T [H, M] copied
  return {transposed_copy(dy2), a2};                                        // dy^T [O, M] copied
}

}  // namespace

InputGradientWeight input_gradient_weight(const at::Tensor& dy2, const at::Tensor& weight) {
  const at::Tensor w = weight.to(dy2.scalar_type());  // [O, H]
  if (input_form(dy2) == ProductForm::direct) return {w, /*transposed=*/false};
  return {transposed_copy(w), /*transposed=*/true};  // [H, O]
}

at::Tensor input_gradient(const at::Tensor& dy2, const at::Tensor& weight) {
  const auto [w, transposed] = input_gradient_weight(dy2, weight);
  return dy2.mm(transposed ? w.t() : w);  // [M, O] · [O, H]; staged: O contiguous in both operands
}

at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2) {
  switch (form_for(dy2, a2)) {
    case ProductForm::direct:
      return dy2.t().mm(a2);  // [O, M] · [M, H]
    case ProductForm::staged: {
      const auto [l, r] = staged_operands(dy2, a2);
      return l.mm(r);
    }
    case ProductForm::transposed:
      break;
  }
  const at::Tensor t = a2.t().mm(dy2);  // [H, M] · [M, O]
  auto out = at::empty({t.size(1), t.size(0)}, t.options());
  transpose_into(t, out, /*accumulate=*/false);
  return out;
}

void add_weight_gradient(const at::Tensor& dy2, const at::Tensor& a2, at::Tensor& grad) {
  switch (form_for(dy2, a2)) {
    case ProductForm::direct:
      grad.addmm_(dy2.t(), a2);  // grad + [O, M] · [M, H], one rounding (cuBLAS's beta = 1)
      return;
    case ProductForm::staged: {
      const auto [l, r] = staged_operands(dy2, a2);
      grad.addmm_(l, r);
      return;
    }
    case ProductForm::transposed:
      transpose_into(a2.t().mm(dy2), grad, /*accumulate=*/true);
      return;
  }
}

void set_product_form_policy(FormPolicy p) { policy = p; }
void force_product_form_for_tests(std::optional<ProductForm> form) { forced = form; }
std::optional<ProductForm> forced_product_form() { return forced; }

}  // namespace nt
