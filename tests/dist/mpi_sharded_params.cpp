// Multi-rank tests of ShardedParams (dist/sharded_params.h) in mixed precision, on the toy
// module of toy_model.h (a root and three blocks whose units do not divide by 3):
//  - the model's parameters are the fp32 shards gathered and rounded to each unit's dtype;
//  - gradients are averaged over ranks in reduce_dtype, exactly as computed by hand (fp32 sums,
//    one rounding to bf16 for a bf16 reduction);
//  - W ranks train what one rank trains on the same global batch: to 1e-5 in fp32, to bf16's
//    rounding with bf16 blocks, also with every rank's rows in micro-batches of one row whose
//    gradients accumulate; resharding after forward changes no bit; the dtypes change the
//    result (the checks can fail);
//  - accumulated gradients are the sum of the backwards' averages, exactly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dist/mpi_communicator.h"
#include "dist/sharded_params.h"
#include "models/dit.h"
#include "toy_model.h"
#include "world_comm.h"

namespace {

using nt::test::make_toy;
using nt::test::Toy;
using nt::test::toy_dtypes;
using nt::test::train_toy;

class ShardedParamsTest : public nt::test::WorldComm {};

TEST_F(ShardedParamsTest, ParametersAreTheShardsRoundedToTheUnitDtype) {
  Toy ref = make_toy();
  std::map<std::string, at::Tensor> before;
  for (const auto& p : ref->named_parameters()) before[p.key()] = p.value().detach().clone();
  Toy toy = make_toy();
  nt::ShardingOptions opt;
  opt.param_dtypes = {at::kFloat, at::kBFloat16, at::kFloat, at::kBFloat16};
  nt::ShardedParams sp(*toy, comm_.get(), opt);
  const auto& layout = sp.layout();
  ASSERT_EQ(layout.units.size(), 4u);
  for (size_t u = 0; u < layout.units.size(); ++u) {
    EXPECT_EQ(sp.full()[u].scalar_type(), opt.param_dtypes[u]) << layout.units[u].name;
    EXPECT_EQ(sp.params()[u].scalar_type(), at::kFloat);
    EXPECT_EQ(sp.params()[u].numel() * W(), layout.units[u].padded);
  }
  auto params = toy->named_parameters();
  for (const auto& unit : layout.units)
    for (const auto& p : unit.params) {
      const at::Tensor& now = params[p.name];
      const auto dtype = unit.name == "blocks.0" || unit.name == "blocks.2" ? at::kBFloat16 : at::kFloat;
      EXPECT_EQ(now.scalar_type(), dtype) << p.name;
      EXPECT_TRUE(torch::equal(now, before[p.name].to(dtype))) << p.name;
    }
  // The fp32 master shard keeps the unrounded values.
  const auto& b0 = layout.units[1];
  auto master = torch::zeros({b0.padded});
  for (const auto& p : b0.params) master.narrow(0, p.offset, p.numel).copy_(before[p.name].reshape({-1}));
  const int64_t n = b0.padded / W();
  EXPECT_TRUE(torch::equal(sp.params()[1], master.narrow(0, R() * n, n)));
  EXPECT_FALSE(torch::equal(sp.params()[1], master.narrow(0, R() * n, n).to(at::kBFloat16).to(at::kFloat)));
}

// Rank r's gradient of parameter k: multiples of 1/16 in [-4, 4), exact in bf16, so fp32 sums of
// up to three of them are exact and the expected reduction is computed here without rounding doubt.
at::Tensor rank_grad(int rank, int k, at::IntArrayRef shape) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(1000 * rank + k + 1));
  return at::randint(-64, 64, shape, gen, at::TensorOptions().dtype(at::kFloat)) / 16.0;
}

TEST_F(ShardedParamsTest, GradientsAreAveragedInTheReduceDtype) {
  for (auto reduce : {at::kFloat, at::kBFloat16}) {
    Toy toy = make_toy();
    nt::ShardingOptions opt;
    opt.param_dtypes = toy_dtypes(at::kBFloat16);
    opt.reduce_dtype = reduce;
    nt::ShardedParams sp(*toy, comm_.get(), opt);
    nt::ForwardOptions hooks;
    sp.begin_step(hooks);
    auto params = toy->named_parameters();
    const auto& layout = sp.layout();
    std::map<std::string, int> index;
    for (const auto& unit : layout.units)
      for (const auto& p : unit.params) index.emplace(p.name, static_cast<int>(index.size()));
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, k] : index) params[name].mutable_grad().copy_(rank_grad(R(), k, params[name].sizes()));
    }
    sp.end_backward();
    for (size_t u = 0; u < layout.units.size(); ++u) {
      const auto& unit = layout.units[u];
      auto sum = torch::zeros({unit.padded});  // fp32: exact for these values
      for (int r = 0; r < W(); ++r)
        for (const auto& p : unit.params) sum.narrow(0, p.offset, p.numel).add_(rank_grad(r, index[p.name], p.shape).reshape({-1}));
      auto expect = sum.div_(static_cast<double>(W()));
      if (reduce == at::kBFloat16) expect = expect.to(at::kBFloat16).to(at::kFloat);
      const int64_t n = unit.padded / W();
      EXPECT_EQ(sp.grads()[u].scalar_type(), at::kFloat);
      EXPECT_TRUE(torch::equal(sp.grads()[u], expect.narrow(0, R() * n, n)))
          << unit.name << " reduce " << c10::toString(reduce) << "\n" << sp.grads()[u] << "\n" << expect.narrow(0, R() * n, n);
    }
  }
}

// Two backwards, the second with accumulate: grads() = the first's average + the second's (each
// reduced as above; the sum in fp32, exact for these values), for every dtype and for the case
// where the full gradient is its own shard (W = 1, fp32) and autograd accumulates in place.
TEST_F(ShardedParamsTest, AccumulatedGradientsAreTheSumOfTheBackwardsAverages) {
  for (auto blocks : {at::kFloat, at::kBFloat16})
    for (auto reduce : {at::kFloat, at::kBFloat16}) {
      Toy toy = make_toy();
      nt::ShardingOptions opt;
      opt.param_dtypes = toy_dtypes(blocks);
      opt.reduce_dtype = reduce;
      nt::ShardedParams sp(*toy, comm_.get(), opt);
      auto params = toy->named_parameters();
      const auto& layout = sp.layout();
      std::map<std::string, int> index;
      for (const auto& unit : layout.units)
        for (const auto& p : unit.params) index.emplace(p.name, static_cast<int>(index.size()));
      const int kSecond = 100;  // the second backward's gradients: other values
      for (int pass : {0, kSecond}) {
        nt::ForwardOptions hooks;
        sp.begin_step(hooks, /*accumulate=*/pass > 0);
        torch::NoGradGuard no_grad;
        for (auto& [name, k] : index) params[name].mutable_grad().add_(rank_grad(R(), k + pass, params[name].sizes()));
        sp.end_backward();  // as autograd does: added to the (zeroed, or kept) gradient
      }
      for (size_t u = 0; u < layout.units.size(); ++u) {
        const auto& unit = layout.units[u];
        auto expect = torch::zeros({unit.padded});
        for (int pass : {0, kSecond}) {
          auto sum = torch::zeros({unit.padded});  // fp32: exact for these values
          for (int r = 0; r < W(); ++r)
            for (const auto& p : unit.params)
              sum.narrow(0, p.offset, p.numel).add_(rank_grad(r, index[p.name] + pass, p.shape).reshape({-1}));
          sum.div_(static_cast<double>(W()));
          expect.add_(reduce == at::kBFloat16 ? sum.to(at::kBFloat16).to(at::kFloat) : sum);
        }
        const int64_t n = unit.padded / W();
        EXPECT_TRUE(torch::equal(sp.grads()[u], expect.narrow(0, R() * n, n)))
            << unit.name << " blocks " << c10::toString(blocks) << " reduce " << c10::toString(reduce);
      }
    }
}

double max_rel_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = 0;
  for (size_t u = 0; u < a.size(); ++u)
    worst = std::max(worst, ((a[u] - b[u]).abs().max() / b[u].abs().max()).item<double>());
  return worst;
}

bool bit_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  for (size_t u = 0; u < a.size(); ++u)
    if (!torch::equal(a[u], b[u])) return false;
  return true;
}

TEST_F(ShardedParamsTest, WRanksTrainWhatOneRankTrains) {
  struct Case {
    at::ScalarType blocks, reduce;
    double tol;
  };
  std::vector<std::vector<at::Tensor>> results;
  for (const Case& c : {Case{at::kFloat, at::kFloat, 1e-5}, Case{at::kBFloat16, at::kFloat, 5e-3},
                        Case{at::kBFloat16, at::kBFloat16, 5e-3}}) {
    const auto one = train_toy(nullptr, c.blocks, c.reduce, false);
    const auto kept = train_toy(comm_.get(), c.blocks, c.reduce, false);
    const auto resharded = train_toy(comm_.get(), c.blocks, c.reduce, true);
    const int rows = 6 / W();  // micro-batches of one row each
    const auto micro_kept = train_toy(comm_.get(), c.blocks, c.reduce, false, torch::kCPU, rows);
    const auto micro_resharded = train_toy(comm_.get(), c.blocks, c.reduce, true, torch::kCPU, rows);
    const double d = max_rel_diff(kept, one), dm = max_rel_diff(micro_kept, one);
    if (R() == 0)
      std::cout << "[ sharded  ] W=" << W() << " blocks " << c10::toString(c.blocks) << " reduce "
                << c10::toString(c.reduce) << ": max relative difference to one rank " << d << ", in "
                << rows << " micro-batches " << dm << "\n";
    EXPECT_LE(d, c.tol) << c10::toString(c.blocks) << " " << c10::toString(c.reduce);
    EXPECT_LE(dm, c.tol) << c10::toString(c.blocks) << " " << c10::toString(c.reduce) << " micro-batches";
    EXPECT_TRUE(bit_equal(resharded, kept)) << c10::toString(c.blocks) << " " << c10::toString(c.reduce);
    EXPECT_TRUE(bit_equal(micro_resharded, micro_kept)) << c10::toString(c.blocks) << " " << c10::toString(c.reduce);
    results.push_back(kept);
  }
  // bf16 blocks and a bf16 reduction each change the numbers.
  EXPECT_GT(max_rel_diff(results[1], results[0]), 1e-6);
  if (W() > 1) {
    EXPECT_GT(max_rel_diff(results[2], results[1]), 1e-7);
  }
}

// With resharding, a block's gradient reduce-scatter runs while the next block's backward
// computes: when block i's backward begins, block i + 1's gradient buffer is still held (its
// reduce in flight) and block i + 2's is released (its reduce completed): two blocks at most.
TEST_F(ShardedParamsTest, BlockGradientReduceOverlapsThePreviousBlocksBackward) {
  Toy toy = make_toy();
  nt::ShardingOptions opt;
  opt.param_dtypes = toy_dtypes(at::kBFloat16);
  opt.reshard_after_forward = true;
  nt::ShardedParams sp(*toy, comm_.get(), opt);
  auto held = [&](int block) { return toy->layers[block]->weight.grad().storage().nbytes() > 0; };
  std::vector<std::vector<int>> seen(nt::test::kToyDepth);  // per block: blocks holding gradients
  nt::ForwardOptions hooks;
  sp.begin_step(hooks);
  auto resharder_after = hooks.after_block;
  hooks.after_block = [&](int i, const at::Tensor& out) {
    resharder_after(i, out);  // its hook on `out` runs first in backward
    out.register_hook([&, i](const at::Tensor& grad) {
      for (int j = 0; j < nt::test::kToyDepth; ++j)
        if (held(j)) seen[i].push_back(j);
      return grad;
    });
  };
  toy->forward(torch::randn({2, nt::test::kToyIn}), hooks).sum().backward();
  sp.end_backward();
  EXPECT_EQ(seen[2], std::vector<int>({2}));
  EXPECT_EQ(seen[1], std::vector<int>({1, 2}));
  EXPECT_EQ(seen[0], std::vector<int>({0, 1}));
  for (int j = 0; j < nt::test::kToyDepth; ++j) EXPECT_FALSE(held(j)) << j;  // all reduced and released
}

TEST_F(ShardedParamsTest, WrongNumberOfDtypesIsAnError) {
  Toy toy = make_toy();
  nt::ShardingOptions opt;
  opt.param_dtypes = {at::kFloat, at::kBFloat16};
  try {
    nt::ShardedParams sp(*toy, comm_.get(), opt);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("2 parameter dtypes given for the model's 4 units"), std::string::npos)
        << e.what();
  }
}

}  // namespace
