// The backward of y = linear(a, weight, bias) for an op that keeps `a` itself or computes it
// again (models/gelu_linear.h, models/modulated_linear.h, models/linear_node.h): the ops autograd
// runs for linear on a contiguous input (addmm on the rows flattened, the weight transposed, i.e.
// column-major), so on the CPU the gradients are autograd's bit for bit; on CUDA the weight
// gradient takes the form models/product_forms.h picks. Under CUDA autocast the product
// ran in dy's dtype: a and the weight are cast to it (as autocast cast them), and the weight and
// bias gradients go back to their own dtypes (as autograd does through autocast's casts).
//
// Weight gradients in place (train.weight_grads_in_place): while a WeightGradsInPlace scope is
// on (the trainer's backward), a CUDA weight that is a leaf whose .grad() is already a tensor of
// its own shape and of dy's dtype (the parameters ShardedParams binds to its flat gradient
// buffers, dist/sharded_params.h) gets its gradient added there by the product itself
// (models/product_forms.h: add_weight_gradient), and autograd gets none for it: no gradient
// tensor of its own, no AccumulateGrad add after it (in a DiT-XL/2 step on the H200: 140 adds,
// 37 us per block). The sum is rounded once (before: the product rounded, then the add); where
// .grad() held zeros, the same values. Only for backward(): a torch::autograd::grad() asking for
// such a weight inside the scope would get no gradient for it (models/recompute.h's
// accumulates what it gets, so both add up to the same). Biases likewise where a kernel of the
// project's sums their gradient (models/fused_kernels.h's residual, norm and qkv nodes: the bias
// of the product that made the branch, qkv's; models/gelu_mlp.h: fc1's): the kernel's last sum
// adds into .grad() (in a DiT-XL/2 step 4 of a block's 5 bias-gradient adds; adaLN's, summed by
// LibTorch here, keeps its add).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

namespace nt {

struct LinearGrads {
  at::Tensor input;   // [..., H] like a, in dy's dtype (undefined unless asked for)
  at::Tensor weight;  // [O, H] in the weight's dtype (undefined where added in place)
  at::Tensor bias;    // [O] in bias_dtype
};

// dy [..., O], a [..., H] (undefined when the weight's gradient is not asked for), weight [O, H].
LinearGrads linear_backward(const at::Tensor& dy, const at::Tensor& a, const at::Tensor& weight,
                            at::ScalarType bias_dtype, bool need_input, bool need_weight, bool need_bias);

// param.grad() where param's gradient, computed in `dtype`, may be added there in place (see
// above: a scope on, a CUDA leaf whose .grad() is a contiguous tensor of its shape and of dtype);
// else undefined. A caller that adds into it gives autograd no gradient for param.
at::Tensor grad_in_place(const at::Tensor& param, at::ScalarType dtype);

// Weight gradients added in place while one lives (`on`; nested scopes restore the outer state).
// `any_device` (tests): on the CPU too.
class WeightGradsInPlace {
 public:
  explicit WeightGradsInPlace(bool on, bool any_device = false);
  ~WeightGradsInPlace();
  WeightGradsInPlace(const WeightGradsInPlace&) = delete;
  WeightGradsInPlace& operator=(const WeightGradsInPlace&) = delete;

 private:
  bool prev_on_, prev_any_device_;
};

}  // namespace nt
