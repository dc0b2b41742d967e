// The gradients of a linear layer as autograd computes them (see models/linear_backward.h).
#include "models/linear_backward.h"

#include <torch/torch.h>

#include <atomic>

#include "models/product_forms.h"

namespace nt {
namespace {

// Global, not thread-local: autograd runs a CUDA backward's nodes on its own device thread.
std::atomic<bool> in_place_on{false}, in_place_any_device{false};

}  // namespace

at::Tensor grad_in_place(const at::Tensor& param, at::ScalarType dtype) {
  if (!in_place_on || !(param.is_cuda() || in_place_any_device) || !param.is_leaf() || !param.requires_grad())
    return {};
  const at::Tensor& g = param.grad();
  if (!g.defined() || g.scalar_type() != dtype || g.device() != param.device() || !g.sizes().equals(param.sizes()) ||
      !g.is_contiguous())
    return {};
  return g;
}

LinearGrads linear_backward(const at::Tensor& dy, const at::Tensor& a, const at::Tensor& weight,
                            at::ScalarType bias_dtype, bool need_input, bool need_weight, bool need_bias) {
  const auto dtype = dy.scalar_type();
  const int64_t O = weight.size(0), H = weight.size(1);
  const at::Tensor dy2 = dy.reshape({-1, O});  // [M, O]
  LinearGrads g;
  if (need_weight) {
    const at::Tensor a2 = a.to(dtype).reshape({-1, H});  // [M, H]
    at::Tensor into = grad_in_place(weight, dtype);
    if (into.defined()) {
      torch::NoGradGuard no_grad;
      add_weight_gradient(dy2, a2, into);  // autograd gets none (undefined)
    } else {
      g.weight = weight_gradient(dy2, a2).to(weight.scalar_type());  // [O, H]
    }
  }
  if (need_bias) g.bias = dy2.sum(0).to(bias_dtype);  // [O]
  if (need_input) {
    auto sizes = dy.sizes().vec();
    sizes.back() = H;
    g.input = input_gradient(dy2, weight).view(sizes);  // [..., H]
  }
  return g;
}

WeightGradsInPlace::WeightGradsInPlace(bool on, bool any_device)
    : prev_on_(in_place_on.exchange(on)), prev_any_device_(in_place_any_device.exchange(any_device)) {}

WeightGradsInPlace::~WeightGradsInPlace() {
  in_place_on = prev_on_;
  in_place_any_device = prev_any_device_;
}

}  // namespace nt
