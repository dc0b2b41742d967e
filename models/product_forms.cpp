// A linear layer's weight gradient in one of two forms (see models/product_forms.h).
#include "models/product_forms.h"

#include <torch/torch.h>

#ifdef NT_HAVE_CUDA_KERNELS
#include "models/fused_kernels_cuda.h"
#endif

namespace nt {
namespace {

std::optional<ProductForm> forced;  // force_product_form_for_tests
FormPolicy policy = FormPolicy::tall;  // set_product_form_policy (train.product_forms's default)

// t [R, C] -> t^T [C, R], contiguous: on CUDA through the project's transpose kernel where built.
at::Tensor transposed_copy(const at::Tensor& t) {
#ifdef NT_HAVE_CUDA_KERNELS
  const auto dtype = t.scalar_type();
  if (t.is_cuda() && t.dim() == 2 && t.is_contiguous() && (dtype == at::kBFloat16 || dtype == at::kFloat) &&
      t.numel() > 0 && t.size(0) <= cuda::transpose_max_rows()) {
    auto out = at::empty({t.size(1), t.size(0)}, t.options());
    cuda::transpose(t.data_ptr(), out.data_ptr(), t.size(0), t.size(1),
                    dtype == at::kBFloat16 ? cuda::Dtype::bf16 : cuda::Dtype::f32, t.get_device(), nullptr);
    return out;
  }
#endif
  return t.t().contiguous();
}

}  // namespace

at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2) {
  const int64_t O = dy2.size(1), H = a2.size(1);
  ProductForm form = ProductForm::direct;
  if (forced)
    form = *forced;
  else if (dy2.is_cuda() && policy == FormPolicy::tall && O < H && O >= 256)  // the tall rule (see the header)
    form = ProductForm::transposed;
  if (form == ProductForm::transposed) return transposed_copy(a2.t().mm(dy2));  // ([H, M] · [M, O])^T
  return dy2.t().mm(a2);                                                         // [O, M] · [M, H]
}

void set_product_form_policy(FormPolicy p) { policy = p; }
void force_product_form_for_tests(std::optional<ProductForm> form) { forced = form; }
std::optional<ProductForm> forced_product_form() { return forced; }

}  // namespace nt
