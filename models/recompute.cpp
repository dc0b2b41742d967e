// Activation recomputation through a custom autograd node (see models/recompute.h).
#include "models/recompute.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/torch.h>

#include "models/autocast.h"

namespace nt {
namespace {

using torch::autograd::variable_list;

// The backward of one recompute(): fn again on the saved inputs, then back-propagation through it.
struct RecomputeBackward : torch::autograd::Node {
  RecomputeFn fn;
  std::vector<at::Tensor> inputs;  // detached: they share memory, not history
  std::vector<bool> needs_grad;
  std::vector<at::Tensor> params;  // those that require grad
  bool autocast = false;  // CUDA bf16 autocast was on in the forward

  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(fn, "recompute: backward ran twice (the saved inputs are freed after the first)");
    std::vector<at::Tensor> in;
    for (size_t i = 0; i < inputs.size(); ++i) in.push_back(inputs[i].detach().requires_grad_(needs_grad[i]));
    at::Tensor out;
    {
      torch::AutoGradMode grad_on(true);
      const AutocastAs forward_state(autocast);
      out = fn(in);
    }
    variable_list result(in.size());
    std::vector<at::Tensor> wrt;  // the inputs that need a gradient, then the parameters
    for (size_t i = 0; i < in.size(); ++i)
      if (needs_grad[i]) wrt.push_back(in[i]);
    wrt.insert(wrt.end(), params.begin(), params.end());
    if (out.requires_grad() && grads.at(0).defined() && !wrt.empty()) {
      // The gradients as they reach each tensor (what the graph without recomputation hands on),
      // not copies laid out like the inputs as a leaf's .grad would be.
      auto g = torch::autograd::grad({out}, wrt, {grads[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
      size_t k = 0;
      for (size_t i = 0; i < in.size(); ++i)
        if (needs_grad[i]) result[i] = g[k++];
      for (auto& p : params) {  // accumulate as AccumulateGrad does (in place keeps .grad views)
        const at::Tensor& gp = g[k++];
        if (!gp.defined()) continue;
        if (p.grad().defined())
          p.mutable_grad().add_(gp);
        else
          p.mutable_grad() = gp;
      }
    }
    release_variables();
    return result;
  }

  void release_variables() override {
    inputs.clear();
    params.clear();
    fn = nullptr;
  }
};

}  // namespace

at::Tensor recompute(RecomputeFn fn, const std::vector<at::Tensor>& inputs, const std::vector<at::Tensor>& params) {
  if (!torch::autograd::GradMode::is_enabled()) return fn(inputs);
  at::Tensor out;
  {
    torch::NoGradGuard no_grad;
    out = fn(inputs);
  }
  if (out.is_view()) out = out.clone();  // the history goes on a tensor of its own
  auto node = std::shared_ptr<RecomputeBackward>(new RecomputeBackward(), torch::autograd::deleteNode);
  node->fn = std::move(fn);
  node->autocast = cuda_autocast_enabled();
  for (const auto& t : inputs) {
    node->inputs.push_back(t.defined() ? t.detach() : t);
    node->needs_grad.push_back(t.defined() && t.requires_grad());
  }
  for (const auto& p : params)
    if (p.requires_grad()) node->params.push_back(p);
  node->set_next_edges(torch::autograd::collect_next_edges(inputs));
  torch::autograd::set_history(out, node);
  return out;
}

}  // namespace nt
