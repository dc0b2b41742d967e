// The toy module and its training loop for the sharding tests (see toy_model.h).
#include "toy_model.h"

#include <torch/torch.h>

#include "dist/communicator.h"
#include "dist/sharded_params.h"
#include "models/dit.h"

namespace nt::test {

ToyImpl::ToyImpl() {
  embed = register_module("embed", torch::nn::Linear(kToyIn, kToyDim));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < kToyDepth; ++i) {
    layers.push_back(torch::nn::Linear(kToyDim, kToyDim));
    blocks->push_back(layers.back());
  }
  final = register_module("final", torch::nn::Linear(kToyDim, kToyOut));
}

at::Tensor ToyImpl::forward(const at::Tensor& x, const ForwardOptions& o) {
  auto in = [](const torch::nn::Linear& l, const at::Tensor& t) { return t.to(l->weight.scalar_type()); };
  auto h = embed(in(embed, x));  // [N, 7]
  for (int i = 0; i < kToyDepth; ++i) {
    if (o.before_block) o.before_block(i);
    h = h + torch::tanh(layers[i](in(layers[i], h)));
    if (o.after_block) o.after_block(i, h);
  }
  return final(in(final, h)).to(at::kFloat);  // [N, 3]
}

Toy make_toy(const c10::Device& device) {
  torch::manual_seed(11);
  Toy toy;
  toy->to(device);
  return toy;
}

std::vector<at::ScalarType> toy_dtypes(at::ScalarType blocks) { return {at::kFloat, blocks, blocks, blocks}; }

std::vector<at::Tensor> train_toy(Communicator* comm, at::ScalarType blocks, at::ScalarType reduce, bool reshard,
                                  const c10::Device& device, int micro) {
  Toy toy = make_toy(device);
  ShardingOptions opt;
  opt.param_dtypes = toy_dtypes(blocks);
  opt.reduce_dtype = reduce;
  opt.reshard_after_forward = reshard;
  ShardedParams sp(*toy, comm, opt);
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  const int64_t B = 6, b = B / world;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(77);
  for (int step = 0; step < 10; ++step) {
    auto x = at::randn({B, kToyIn}, gen).to(device), target = at::randn({B, kToyOut}, gen).to(device);
    const int64_t m = b / micro;
    for (int i = 0; i < micro; ++i) {
      ForwardOptions hooks;
      sp.begin_step(hooks, /*accumulate=*/i > 0);
      auto out = toy->forward(x.narrow(0, rank * b + i * m, m), hooks);
      auto loss = (out - target.narrow(0, rank * b + i * m, m)).pow(2).mean();
      (micro > 1 ? loss / static_cast<double>(micro) : loss).backward();
      sp.end_backward();
    }
    {
      torch::NoGradGuard no_grad;
      for (size_t u = 0; u < sp.params().size(); ++u) sp.params()[u].add_(sp.grads()[u], -0.05);
    }
    sp.refresh();
  }
  std::vector<at::Tensor> out;
  for (size_t u = 0; u < sp.params().size(); ++u) {
    const auto& unit = sp.layout().units[u];
    auto full = torch::empty({unit.padded}, sp.params()[u].options());
    if (comm)
      comm->all_gather_into(full, sp.params()[u]);
    else
      full.copy_(sp.params()[u]);
    out.push_back(full.narrow(0, 0, unit.numel).cpu());
  }
  return out;
}

}  // namespace nt::test
