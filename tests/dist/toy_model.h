// A small module with FSDP units for the sharding tests (tests/dist/mpi_sharded_params.cpp,
// test_nccl.cpp): a root (embed 5 -> 7, final 7 -> 3: 66 parameters) and three blocks (7 -> 7,
// 56 parameters each: not divisible by 3), and a short SGD training loop through ShardedParams.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <vector>

namespace nt {
class Communicator;
struct ForwardOptions;
}  // namespace nt

namespace nt::test {

constexpr int kToyIn = 5, kToyDim = 7, kToyOut = 3, kToyDepth = 3;

// Each layer computes in its weight's dtype; the residual stream stays in the wider dtype.
struct ToyImpl : torch::nn::Module {
  ToyImpl();
  at::Tensor forward(const at::Tensor& x, const ForwardOptions& o);  // [N, 5] -> [N, 3] fp32
  torch::nn::Linear embed{nullptr}, final{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  std::vector<torch::nn::Linear> layers;
};
TORCH_MODULE(Toy);

// The same initial weights on every rank (a fixed seed), on `device`.
Toy make_toy(const c10::Device& device = c10::Device(c10::kCPU));

// root fp32, the three blocks in `blocks` (ShardingOptions::param_dtypes).
std::vector<at::ScalarType> toy_dtypes(at::ScalarType blocks);

// Trains 10 SGD steps on a global batch of 6 rows (rank r of `comm` takes rows
// [r*6/W, (r+1)*6/W); null comm: one process, all rows); returns every unit's fp32 parameters,
// unpadded, on the CPU, on every rank. `micro` > 1: each rank's rows go through forward and
// backward in that many micro-batches (it must divide 6/W), their gradients accumulated.
std::vector<at::Tensor> train_toy(Communicator* comm, at::ScalarType blocks, at::ScalarType reduce, bool reshard,
                                  const c10::Device& device = c10::Device(c10::kCPU), int micro = 1);

}  // namespace nt::test
