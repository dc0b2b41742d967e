// Activation recomputation (models/recompute.h): the same values and gradients as without it,
// bit for bit on the CPU, for a plain function with a parameter, nested recomputation, a DiT
// block in each mode and a whole routed DiT training loss; intermediates are really not kept
// (their memory is freed after the forward); with grad mode off nothing is recorded.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>

#include "core/rng.h"
#include "models/dit.h"
#include "models/edm.h"
#include "models/recompute.h"
#include "golden_dit.h"
#include "heap_in_use.h"

namespace {

using nt::Recompute;

// Gradients of every input and parameter after backward of sum(out * probe).
struct Grads {
  at::Tensor out;
  std::vector<at::Tensor> grads;
};

bool same(const Grads& a, const Grads& b) {
  if (!torch::equal(a.out, b.out) || a.grads.size() != b.grads.size()) return false;
  for (size_t i = 0; i < a.grads.size(); ++i)
    if (a.grads[i].defined() != b.grads[i].defined() || (a.grads[i].defined() && !torch::equal(a.grads[i], b.grads[i])))
      return false;
  return true;
}

TEST(Recompute, PlainFunctionSameValuesAndGradients) {
  torch::manual_seed(1);
  const auto x0 = torch::randn({3, 5}), w0 = torch::randn({5, 5}), probe = torch::randn({3, 5});
  auto run = [&](bool rec) {
    auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    auto fn = [&w](const std::vector<at::Tensor>& in) { return torch::tanh(in[0].matmul(w)) * in[0]; };
    auto out = rec ? nt::recompute(fn, {x}, {w}) : fn({x});
    (out * probe).sum().backward();
    return Grads{out.detach(), {x.grad(), w.grad()}};
  };
  const Grads plain = run(false), rec = run(true);
  EXPECT_TRUE(same(plain, rec));
  EXPECT_TRUE(rec.grads[1].defined());  // the parameter inside fn got its gradient
}

TEST(Recompute, IntermediatesAreFreedAfterTheForward) {
  auto x = torch::randn({4, 6}, torch::requires_grad());
  for (bool rec : {false, true}) {
    std::optional<c10::weak_intrusive_ptr<c10::StorageImpl>> inner;
    auto fn = [&inner](const std::vector<at::Tensor>& in) {
      auto t = torch::sin(in[0]);  // saved by the mul below, when autograd records it
      if (!inner) inner.emplace(t.storage().getWeakStorageImpl());
      return t * t;
    };
    auto out = rec ? nt::recompute(fn, {x}) : fn({x});
    ASSERT_TRUE(inner.has_value());
    EXPECT_EQ(inner->expired(), rec) << (rec ? "recomputed" : "plain");
    out.sum().backward();
  }
}

TEST(Recompute, NestedAndWithoutGradMode) {
  torch::manual_seed(2);
  const auto x0 = torch::randn({2, 3});
  auto inner = [](const std::vector<at::Tensor>& in) { return torch::exp(in[0]) * in[0]; };
  auto outer = [&](const std::vector<at::Tensor>& in) { return torch::cos(nt::recompute(inner, {in[0] * 2})); };
  auto run = [&](bool rec) {
    auto x = x0.clone().requires_grad_(true);
    auto out = rec ? nt::recompute(outer, {x}) : torch::cos(inner({x * 2}));
    out.sum().backward();
    return Grads{out.detach(), {x.grad()}};
  };
  EXPECT_TRUE(same(run(false), run(true)));
  torch::NoGradGuard no_grad;
  auto x = x0.clone().requires_grad_(true);
  auto out = nt::recompute(outer, {x});
  EXPECT_FALSE(out.requires_grad());
}

using nt::test::perturb;

TEST(Recompute, DiTBlockEveryModeSameValuesAndGradients) {
  torch::manual_seed(3);
  nt::DiTBlock block(64, 4, 4.0);
  perturb(*block);
  const auto x0 = torch::randn({2, 16, 64}), c0 = torch::randn({2, 64}), probe = torch::randn({2, 16, 64});
  auto run = [&](Recompute mode, bool fused_mlp = false) {
    block->zero_grad();
    auto x = x0.clone().requires_grad_(true), c = c0.clone().requires_grad_(true);
    auto out = block->forward(x, c, nt::BlockOptions{mode, /*fused_kernels=*/false, fused_mlp});
    (out * probe).sum().backward();
    Grads g{out.detach(), {x.grad(), c.grad()}};
    for (const auto& p : block->parameters()) g.grads.push_back(p.grad().clone());
    return g;
  };
  const Grads none = run(Recompute::none);
  EXPECT_TRUE(same(none, run(Recompute::norm))) << "norm";
  EXPECT_TRUE(same(none, run(Recompute::mlp))) << "mlp";
  EXPECT_TRUE(same(none, run(Recompute::norm_mlp))) << "norm+mlp";
  EXPECT_TRUE(same(none, run(Recompute::blocks))) << "blocks";
  // train.fused_mlp: the MLP as one node (LibTorch's ops on the CPU) changes nothing either.
  EXPECT_TRUE(same(none, run(Recompute::none, true))) << "fused mlp";
  EXPECT_TRUE(same(none, run(Recompute::norm, true))) << "fused mlp, norm";
  EXPECT_TRUE(same(none, run(Recompute::mlp, true))) << "fused mlp, mlp";
  EXPECT_TRUE(same(none, run(Recompute::norm_mlp, true))) << "fused mlp, norm+mlp";
  EXPECT_TRUE(same(none, run(Recompute::blocks, true))) << "fused mlp, blocks";
}

// The launch tests' model: one channel, patch 1, a one-block route.
nt::DiTConfig launch_config() {
  nt::DiTConfig cfg = nt::test::golden_dit_config();
  cfg.in_channels = 1;
  cfg.depth = 3;
  cfg.hidden_size = 36;
  cfg.num_heads = 2;
  cfg.patch_size = 1;
  cfg.routes[0].start_layer = cfg.routes[0].end_layer = 1;
  return cfg;
}

class RecomputeDiT : public ::testing::TestWithParam<int> {};

TEST_P(RecomputeDiT, RoutedLossEveryModeSameGradients) {
  const nt::DiTConfig cfg = GetParam() == 0 ? nt::test::golden_dit_config() : launch_config();
  nt::DiT net(cfg);
  perturb(*net);
  net->train();
  torch::manual_seed(4);
  const auto x = torch::randn({3, cfg.in_channels, 8, 8});
  const auto y = torch::tensor({1, 7, 3}, torch::kLong);
  auto run = [&](Recompute mode, int blocks = -1) {
    net->zero_grad();
    auto gen = nt::make_generator(c10::Device(c10::kCPU), 9);
    nt::ForwardOptions opt;
    opt.block.recompute = mode;
    opt.block.recompute_blocks = blocks;
    auto loss = nt::edm_loss(net, x, y, nt::EDMLossParams{}, 0.1, gen, {}, opt).mean();
    loss.backward();
    std::map<std::string, at::Tensor> g;
    for (const auto& p : net->named_parameters())
      if (p.value().grad().defined()) g[p.key()] = p.value().grad().clone();
    return std::make_pair(loss.item<double>(), g);
  };
  const auto none = run(Recompute::none);
  EXPECT_GT(none.second.size(), 20u);
  for (Recompute mode : {Recompute::norm, Recompute::mlp, Recompute::norm_mlp, Recompute::blocks})
    for (int blocks : {-1, 1}) {  // every block; the first only (recompute_blocks)
      const auto other = run(mode, blocks);
      EXPECT_EQ(other.first, none.first);
      ASSERT_EQ(other.second.size(), none.second.size());
      for (const auto& [name, grad] : none.second)
        EXPECT_TRUE(torch::equal(other.second.at(name), grad)) << name << ", recompute_blocks " << blocks;
    }
}

INSTANTIATE_TEST_SUITE_P(Configs, RecomputeDiT, ::testing::Values(0, 1));

// recompute_blocks = K: the first K blocks recompute, the others keep everything, so what a
// training forward keeps falls block by block between `none` and every block recomputing.
TEST(Recompute, RecomputeBlocksKeepsLessBlockByBlock) {
  nt::DiTConfig cfg = nt::test::golden_dit_config();
  cfg.routes.clear();
  cfg.depth = 3;
  nt::DiT net(cfg);
  perturb(*net);
  net->train();
  torch::manual_seed(5);
  const auto x = torch::randn({4, cfg.in_channels, 8, 8});
  const auto y = torch::tensor({1, 7, 3, 2}, torch::kLong);
  auto kept = [&](Recompute mode, int blocks) {
    return nt::test::heap_kept_by_forward([&] {
      auto gen = nt::make_generator(c10::Device(c10::kCPU), 9);
      nt::ForwardOptions opt;
      opt.block.recompute = mode;
      opt.block.recompute_blocks = blocks;
      return nt::edm_loss(net, x, y, nt::EDMLossParams{}, 0.1, gen, {}, opt).mean();
    });
  };
  kept(Recompute::mlp, 1);  // once untimed: what LibTorch sets up on first use is not counted
  for (Recompute mode : {Recompute::mlp, Recompute::blocks}) {
    const double none = kept(Recompute::none, -1), all = kept(mode, -1);
    const double first = kept(mode, 1), first_two = kept(mode, 2), zero = kept(mode, 0), three = kept(mode, 3);
    std::cout << "[ kept ] none " << none << ", first block " << first << ", first two " << first_two << ", all "
              << all << " bytes\n";
    EXPECT_LT(all, first_two);
    EXPECT_LT(first_two, first);
    EXPECT_LT(first, none);
    // The heap's count varies by a few per cent from call to call (LibTorch's own allocations):
    // within half a block's share of what recomputation saves.
    const double half_block = (none - all) / 3 / 2;
    EXPECT_NEAR(zero, none, half_block);  // recompute_blocks = 0: no block recomputes
    EXPECT_NEAR(three, all, half_block);  // as many as there are blocks: every block
  }
}

TEST(Recompute, ParseNames) {
  EXPECT_EQ(nt::parse_recompute("none"), Recompute::none);
  EXPECT_EQ(nt::parse_recompute("norm"), Recompute::norm);
  EXPECT_EQ(nt::parse_recompute("mlp"), Recompute::mlp);
  EXPECT_EQ(nt::parse_recompute("norm+mlp"), Recompute::norm_mlp);
  EXPECT_EQ(nt::parse_recompute("blocks"), Recompute::blocks);
  EXPECT_THROW(nt::parse_recompute("all"), std::runtime_error);
}

}  // namespace
