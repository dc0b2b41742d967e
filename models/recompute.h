// Activation recomputation (the reentrant form of torch.utils.checkpoint): recompute(fn, inputs)
// returns fn(inputs) but keeps none of fn's intermediate tensors for backward, only its inputs;
// backward runs fn again on them, under the autocast state of the forward, and back-propagates
// through it: the inputs get their gradients, and so do `params` (the parameters fn uses; their
// gradients are added to their .grad, in place when it exists, as AccumulateGrad does; a
// parameter fn uses that is not listed gets none). Memory for compute: the values and
// gradients are those of fn itself, bit for bit on the CPU. fn must draw no random numbers, and
// its inputs must not be modified in place before backward.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace nt {

using RecomputeFn = std::function<at::Tensor(const std::vector<at::Tensor>&)>;

// With grad mode off it is fn(inputs).
at::Tensor recompute(RecomputeFn fn, const std::vector<at::Tensor>& inputs,
                     const std::vector<at::Tensor>& params = {});

}  // namespace nt
