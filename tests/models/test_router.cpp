// TREAD router: set-aside tokens rejoin bit for bit at their positions, the kept count is
// T - floor(T*ratio), routes act only in training (or when forced), per-sample generators make
// routing independent of the batch, and the nano variant's route-end mixing
// (x_T*a + x_D_last*b) touches only the set-aside tokens.
#include "models/router.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "models/dit.h"

namespace {

const std::string kGolden = std::string(NT_SOURCE_DIR) + "/tests/golden/";

nt::RouteConfig route(double ratio, int start, int end, double x_T = 0.0, double x_D_last = 1.0) {
  nt::RouteConfig r;
  r.selection_ratio = ratio;
  r.start_layer = start;
  r.end_layer = end;
  r.x_T = x_T;
  r.x_D_last = x_D_last;
  return r;
}

nt::DiTConfig small_config(int depth, std::vector<nt::RouteConfig> routes) {
  nt::DiTConfig cfg;
  cfg.input_size = 8;
  cfg.in_channels = 4;
  cfg.num_classes = 10;
  cfg.depth = depth;
  cfg.hidden_size = 64;
  cfg.num_heads = 4;
  cfg.patch_size = 2;
  cfg.routes = std::move(routes);
  return cfg;
}

// A model with the reference's golden weights (non-zero adaLN, so every block acts); a
// shallower model takes the first blocks.
nt::DiT golden_model(int depth, std::vector<nt::RouteConfig> routes) {
  static const auto f = nt::load_safetensors(kGolden + "dit_small_weights.safetensors");
  nt::DiT net(small_config(depth, std::move(routes)));
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters()) p.value().copy_(f.tensors.at(p.key()));
  return net;
}

struct Inputs {
  at::Tensor x, t, y;
};
Inputs inputs() {
  auto g = at::detail::createCPUGenerator(42);
  return {torch::randn({3, 4, 8, 8}, g, torch::kFloat), torch::tensor({-0.5f, 0.1f, 0.9f}),
          torch::tensor({int64_t{2}, int64_t{7}, int64_t{10}})};  // 10 = the null class
}

at::Tensor run(nt::DiT& net, const Inputs& in, bool training, uint64_t seed,
               nt::ForwardOptions opt = {}) {
  torch::NoGradGuard no_grad;
  net->train(training);
  auto g = at::detail::createCPUGenerator(seed);
  opt.gen = &g;
  return net->forward(in.x, in.t, in.y, opt);
}

// ---------------------------------------------------------------------------------------
// Router functions

TEST(Router, KeptCountIsTokensMinusFloorOfRatio) {
  struct Case {
    int64_t T;
    double ratio;
    int64_t keep;  // T - int(T * ratio), as the reference computes it
  };
  for (const Case& c : {Case{16, 0.0, 16}, Case{16, 0.25, 12}, Case{16, 0.5, 8}, Case{16, 0.7, 5},
                        Case{256, 0.0, 256}, Case{256, 0.25, 192}, Case{256, 0.5, 128},
                        Case{256, 0.7, 77}}) {
    auto x = torch::zeros({2, c.T, 4});
    auto g = at::detail::createCPUGenerator(1);
    auto ids = nt::route_keep_ids(x, c.ratio, &g);
    EXPECT_EQ(ids.sizes(), (std::vector<int64_t>{2, c.keep})) << "T " << c.T << " ratio " << c.ratio;
    EXPECT_EQ(ids.scalar_type(), at::kLong);
    for (int64_t n = 0; n < 2; ++n) {
      auto row = ids[n].contiguous();
      std::set<int64_t> seen(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
      EXPECT_EQ(static_cast<int64_t>(seen.size()), c.keep) << "duplicate token ids";
      EXPECT_GE(*seen.begin(), 0);
      EXPECT_LT(*seen.rbegin(), c.T);
    }
  }
}

// The reference draws rand(N, T) from the generator and keeps the first argsort entries.
TEST(Router, KeepIdsAreArgsortOfBatchNoise) {
  auto x = torch::zeros({3, 16, 4});
  auto g = at::detail::createCPUGenerator(9);
  auto g2 = g.clone();
  auto ids = nt::route_keep_ids(x, 0.5, &g);
  auto want = torch::argsort(torch::rand({3, 16}, g2), /*dim=*/1, /*descending=*/false).narrow(1, 0, 8);
  EXPECT_TRUE(torch::equal(ids, want));
}

TEST(Router, PerSampleGeneratorsMakeRoutingBatchIndependent) {
  auto x = torch::zeros({3, 16, 4});
  std::vector<at::Generator> gens{at::detail::createCPUGenerator(5),
                                  at::detail::createCPUGenerator(6),
                                  at::detail::createCPUGenerator(7)};
  auto ids = nt::route_keep_ids(x, 0.25, nullptr, &gens);
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<at::Generator> one{at::detail::createCPUGenerator(5 + i)};
    auto row = nt::route_keep_ids(x.narrow(0, i, 1), 0.25, nullptr, &one);
    EXPECT_TRUE(torch::equal(row, ids.narrow(0, i, 1))) << "sample " << i;
  }
  EXPECT_FALSE(torch::equal(ids[0], ids[1]));
}

// Whatever happens to the kept tokens, the set-aside ones come back with their exact values.
TEST(Router, SetAsideTokensComeBackBitIdentical) {
  auto g = at::detail::createCPUGenerator(3);
  auto x = torch::randn({2, 16, 8}, g, torch::kFloat);
  const auto x_before = x.clone();
  auto ids = nt::route_keep_ids(x, 0.5, &g);  // [2, 8]
  auto kept = nt::route_start(x, ids);        // [2, 8, 8]
  ASSERT_EQ(kept.sizes(), (std::vector<int64_t>{2, 8, 8}));
  auto processed = kept * 3 - 1;  // stands in for the blocks
  auto out = nt::route_end(processed, ids, x);
  EXPECT_TRUE(torch::equal(x, x_before)) << "route_end must not write into `original`";
  EXPECT_TRUE(torch::equal(nt::route_end(kept, ids, x), x)) << "untouched tokens round-trip";
  for (int64_t n = 0; n < 2; ++n) {
    std::vector<int64_t> slot(16, -1);  // token -> position among the kept, or -1
    for (int64_t k = 0; k < 8; ++k) slot[ids[n][k].item<int64_t>()] = k;
    for (int64_t tok = 0; tok < 16; ++tok) {
      if (slot[tok] < 0) {
        EXPECT_TRUE(torch::equal(out[n][tok], x[n][tok])) << "set-aside token " << tok;
      } else {
        EXPECT_TRUE(torch::equal(kept[n][slot[tok]], x[n][tok])) << "gathered token " << tok;
        EXPECT_TRUE(torch::equal(out[n][tok], processed[n][slot[tok]])) << "kept token " << tok;
      }
    }
  }
}

// With blocks that do nothing (adaLN-Zero: all gates 0, so each block is exactly the identity)
// routing must give back every token exactly: training output == eval output, bit for bit.
TEST(Router, IdentityBlocksMakeRoutingInvisible) {
  nt::DiT net(small_config(4, {route(0.5, 1, 2)}));
  {
    torch::NoGradGuard no_grad;
    auto g = at::detail::createCPUGenerator(8);
    net->final_layer->linear->weight.normal_(0, 0.1, g);  // a non-zero readout
    for (auto& b : net->block_list) {  // blocks compute something, but their gates are 0
      b->attn->qkv->weight.normal_(0, 0.1, g);
      b->mlp->fc1->weight.normal_(0, 0.1, g);
    }
  }
  const auto in = inputs();
  auto eval = run(net, in, false, 1);
  auto train = run(net, in, true, 1);
  EXPECT_TRUE(torch::equal(train, eval));
  EXPECT_GT(eval.abs().max().item<double>(), 0.0);
}

// ---------------------------------------------------------------------------------------
// Routes in the model

TEST(RouterModel, EvaluationIgnoresRoutesTrainingUsesThem) {
  auto routed = golden_model(4, {route(0.5, 1, 2)});
  auto plain = golden_model(4, {});
  const auto in = inputs();
  EXPECT_TRUE(torch::equal(run(routed, in, false, 1), run(plain, in, false, 1)));
  EXPECT_TRUE(torch::equal(run(plain, in, true, 1), run(plain, in, false, 1)));
  auto train = run(routed, in, true, 1);
  EXPECT_GT((train - run(plain, in, true, 1)).abs().max().item<double>(), 1e-3);
  // Another seed routes other tokens.
  EXPECT_GT((train - run(routed, in, true, 2)).abs().max().item<double>(), 1e-3);
}

TEST(RouterModel, ForceRoutingRoutesInEval) {
  auto net = golden_model(4, {route(0.5, 1, 2)});
  const auto in = inputs();
  nt::ForwardOptions forced;
  forced.force_routing = true;
  auto eval_forced = run(net, in, false, 4, forced);
  EXPECT_TRUE(torch::equal(eval_forced, run(net, in, true, 4)));
  EXPECT_GT((eval_forced - run(net, in, false, 4)).abs().max().item<double>(), 1e-3);
}

// selection_ratio 0 sets nothing aside; the kept tokens are only permuted, which attention
// and the per-token layers do not see (up to summation order).
TEST(RouterModel, SelectionRatioOverrideZeroEqualsNoRouting) {
  auto net = golden_model(4, {route(0.5, 1, 2)});
  const auto in = inputs();
  nt::ForwardOptions zero;
  zero.selection_ratio = 0.0;
  auto out = run(net, in, true, 4, zero);
  auto eval = run(net, in, false, 4);
  EXPECT_LE((out - eval).abs().max().item<double>(), 1e-5 * eval.abs().max().item<double>());
}

// x_T = 0, x_D_last = 1 is the reference TREAD route (set-aside tokens as before start_layer).
TEST(RouterModel, ExplicitDefaultMixingEqualsReferenceRoute) {
  auto explicit_route = golden_model(4, {route(0.5, 1, 2, 0.0, 1.0)});
  nt::RouteConfig defaults;
  defaults.selection_ratio = 0.5;
  defaults.start_layer = 1;
  defaults.end_layer = 2;
  auto default_route = golden_model(4, {defaults});
  const auto in = inputs();
  EXPECT_TRUE(torch::equal(run(explicit_route, in, true, 3), run(default_route, in, true, 3)));
  // And both equal the reference's routed training forward (tests/golden, seed 123).
  auto cases = nt::load_safetensors(kGolden + "dit_small_cases.safetensors");
  auto out = run(explicit_route, {cases.tensors.at("x"), cases.tensors.at("t"), cases.tensors.at("y")},
                 true, 123);
  const auto& want = cases.tensors.at("train_out");
  EXPECT_LE((out - want).abs().max().item<double>(), 1e-6 * want.abs().max().item<double>());
}

// Nano mixing at route end: set-aside tokens become x_T*a + x_D_last*b (x_T = the embedded
// tokens, x_D_last = the tokens entering start_layer); kept tokens are untouched. Depth 2 with
// a route over block 1 only, so the output patch of token k depends on token k alone.
TEST(RouterModel, NanoMixingChangesOnlySetAsideTokens) {
  const double a = 0.3, b = 0.6;
  auto mixed = golden_model(2, {route(0.5, 1, 1, a, b)});
  auto plain = golden_model(2, {route(0.5, 1, 1)});
  const auto in = inputs();
  auto out_mixed = run(mixed, in, true, 21);
  auto out_plain = run(plain, in, true, 21);

  // Manual forward with the same routing draw.
  torch::NoGradGuard no_grad;
  auto g = at::detail::createCPUGenerator(21);
  auto emb = mixed->x_embedder->forward(in.x) + mixed->pos_embed;                 // x_T [N,T,D]
  auto c = mixed->t_embedder->forward(in.t) + mixed->y_embedder->forward(in.y, 0.0, nullptr);
  auto h0 = mixed->block_list[0]->forward(emb, c);                                // x_D_last
  auto ids = nt::route_keep_ids(h0, 0.5, &g);                                     // [N, 8]
  auto k1 = mixed->block_list[1]->forward(nt::route_start(h0, ids), c);
  auto tokens = nt::route_end(k1, ids, emb * a + h0 * b);
  auto want = mixed->unpatchify(mixed->final_layer->forward(tokens, c));
  EXPECT_LE((out_mixed - want).abs().max().item<double>(), 1e-6 * want.abs().max().item<double>());

  // Token k = (i, j) is the output patch [2i:2i+2, 2j:2j+2].
  for (int64_t n = 0; n < 3; ++n) {
    std::vector<bool> is_kept(16, false);
    for (int64_t k = 0; k < ids.size(1); ++k) is_kept[ids[n][k].item<int64_t>()] = true;
    for (int64_t tok = 0; tok < 16; ++tok) {
      const int64_t i = tok / 4, j = tok % 4;
      auto pm = out_mixed[n].narrow(1, 2 * i, 2).narrow(2, 2 * j, 2);
      auto pp = out_plain[n].narrow(1, 2 * i, 2).narrow(2, 2 * j, 2);
      if (is_kept[tok])
        EXPECT_TRUE(torch::equal(pm, pp)) << "kept token " << tok << " of sample " << n;
      else
        EXPECT_GT((pm - pp).abs().max().item<double>(), 1e-4)
            << "set-aside token " << tok << " of sample " << n;
    }
  }
}

}  // namespace
