// Flat parameter layout (dist/flat_layout.h) and sharded checkpoints (dist/sharded_checkpoint.h)
// on a tiny DiT: units and offsets, padding to a multiple of W, parameters as views of the flat
// buffers, gathering parameters and gradients, the JSON record, and writing shards for W = 2
// that reassemble exactly and reshard to W = 3.
#include "dist/flat_layout.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/checkpoint.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "core/sha256.h"
#include "dist/sharded_checkpoint.h"
#include "models/dit.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// Patch 1 on one channel makes the root unit's size odd (every other parameter is a multiple
// of hidden_size; final_layer.linear.bias has p*p*C = 1 entry), so padding is exercised.
nt::DiTConfig tiny_config(int depth = 3) {
  nt::DiTConfig c;
  c.input_size = 4;
  c.in_channels = 1;
  c.num_classes = 10;
  c.depth = depth;
  c.hidden_size = 36;
  c.num_heads = 2;
  c.patch_size = 1;
  return c;
}

nt::DiT tiny_model(int depth = 3) {
  torch::manual_seed(0);
  return nt::DiT(tiny_config(depth));
}

// Trainable parameters of the model in named_parameters order.
std::vector<std::pair<std::string, at::Tensor>> trainable(nt::DiT& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model->named_parameters())
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

at::Tensor forward(nt::DiT& model) {
  torch::NoGradGuard no_grad;
  auto gen = nt::make_generator(c10::Device(c10::kCPU), 7);
  auto x = at::randn({2, 1, 4, 4}, gen, at::TensorOptions().dtype(at::kFloat));
  auto t = torch::tensor({0.1f, -0.3f});
  auto y = torch::tensor({3, 10}, at::kLong);  // a class and the null class
  return model->forward(x, t, y);
}

TEST(FlatLayout, UnitOf) {
  EXPECT_EQ(nt::unit_of("blocks.3.attn.qkv.weight"), "blocks.3");
  EXPECT_EQ(nt::unit_of("blocks.12.mlp.fc1.bias"), "blocks.12");
  EXPECT_EQ(nt::unit_of("x_embedder.proj.weight"), "root");
  EXPECT_EQ(nt::unit_of("final_layer.adaLN_modulation.1.weight"), "root");
  EXPECT_EQ(nt::unit_of("pos_embed"), "root");
}

TEST(FlatLayout, UnitsAreRootThenBlocksWithContiguousOffsets) {
  auto model = tiny_model(3);
  const nt::FlatLayout layout = nt::make_layout(*model, 1);
  ASSERT_EQ(layout.units.size(), 4u);
  EXPECT_EQ(layout.units[0].name, "root");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(layout.units[i + 1].name, "blocks." + std::to_string(i));

  // Every trainable parameter once, in named_parameters order within its unit, packed.
  std::map<std::string, std::vector<std::string>> expected_order;
  int64_t total = 0;
  for (const auto& [name, p] : trainable(model)) {
    expected_order[nt::unit_of(name)].push_back(name);
    total += p.numel();
  }
  auto params = model->named_parameters();
  for (const auto& u : layout.units) {
    std::vector<std::string> names;
    int64_t offset = 0;
    for (const auto& p : u.params) {
      names.push_back(p.name);
      EXPECT_EQ(p.offset, offset) << p.name;
      EXPECT_EQ(p.numel, params[p.name].numel()) << p.name;
      EXPECT_EQ(p.shape, params[p.name].sizes().vec()) << p.name;
      offset += p.numel;
    }
    EXPECT_EQ(u.numel, offset) << u.name;
    EXPECT_EQ(u.padded, u.numel) << "W = 1 needs no padding";
    EXPECT_EQ(names, expected_order[u.name]) << u.name;
  }
  EXPECT_EQ(layout.numel(), total);
  EXPECT_EQ(layout.units[0].params.front().name, "x_embedder.proj.weight");
  EXPECT_EQ(layout.units[1].params.front().name, "blocks.0.attn.qkv.weight");
}

TEST(FlatLayout, BlocksAreOrderedNumerically) {
  auto model = tiny_model(12);
  const nt::FlatLayout layout = nt::make_layout(*model, 2);
  ASSERT_EQ(layout.units.size(), 13u);
  EXPECT_EQ(layout.units[0].name, "root");
  for (int i = 0; i < 12; ++i) EXPECT_EQ(layout.units[i + 1].name, "blocks." + std::to_string(i));
}

TEST(FlatLayout, PosEmbedIsExcluded) {
  auto model = tiny_model();
  ASSERT_FALSE(model->pos_embed.requires_grad());
  const nt::FlatLayout layout = nt::make_layout(*model, 1);
  for (const auto& u : layout.units)
    for (const auto& p : u.params) EXPECT_NE(p.name, "pos_embed");
  // And binding leaves it alone: still the fixed sin-cos table.
  auto before = model->pos_embed.clone();
  auto flat = nt::gather_params(*model, layout);
  nt::bind_params(*model, layout, flat);
  for (auto& f : flat) f.zero_();
  EXPECT_TRUE(torch::equal(model->pos_embed, before));
}

TEST(FlatLayout, PaddingIsAMultipleOfW) {
  auto model = tiny_model();
  const int64_t root = nt::make_layout(*model, 1).units[0].numel;
  ASSERT_NE(root % 2, 0) << "the test model must have a root size not divisible by 2";
  ASSERT_NE(root % 3, 0) << "the test model must have a root size not divisible by 3";
  for (int w : {1, 2, 3}) {
    const nt::FlatLayout layout = nt::make_layout(*model, w);
    EXPECT_EQ(layout.world, w);
    for (const auto& u : layout.units) {
      EXPECT_EQ(u.world, w);
      EXPECT_EQ(u.padded % w, 0) << u.name << " W=" << w;
      EXPECT_GE(u.padded, u.numel) << u.name;
      EXPECT_LT(u.padded - u.numel, w) << u.name;
      EXPECT_EQ(u.shard() * w, u.padded) << u.name;
    }
    EXPECT_EQ(layout.units[0].padded, (root + w - 1) / w * w);
    auto flat = nt::gather_params(*model, layout);
    ASSERT_EQ(flat.size(), layout.units.size());
    for (size_t i = 0; i < flat.size(); ++i) {
      EXPECT_EQ(flat[i].numel(), layout.units[i].padded);
      EXPECT_EQ(flat[i].scalar_type(), at::kFloat);
      const int64_t pad = layout.units[i].padded - layout.units[i].numel;
      if (pad > 0) {
        EXPECT_EQ(flat[i].narrow(0, layout.units[i].numel, pad).abs().sum().item<float>(), 0.f);
      }
    }
  }
}

TEST(FlatLayout, BoundParametersAreViewsOfTheFlatBuffers) {
  auto model = tiny_model();
  model->eval();
  const nt::FlatLayout layout = nt::make_layout(*model, 3);
  auto flat = nt::gather_params(*model, layout);
  // gather_params holds the current values.
  for (size_t i = 0; i < layout.units.size(); ++i)
    for (const auto& p : layout.units[i].params)
      EXPECT_TRUE(torch::equal(flat[i].narrow(0, p.offset, p.numel).view(p.shape), model->named_parameters()[p.name]))
          << p.name;
  const auto out0 = forward(model);
  nt::bind_params(*model, layout, flat);
  EXPECT_TRUE(torch::equal(forward(model), out0)) << "binding must not change the values";
  auto params = model->named_parameters();
  for (size_t i = 0; i < layout.units.size(); ++i)
    for (const auto& p : layout.units[i].params) {
      const auto& t = params[p.name];
      EXPECT_TRUE(t.requires_grad()) << p.name;
      EXPECT_EQ(t.data_ptr<float>(), flat[i].data_ptr<float>() + p.offset) << p.name << " is not a view";
    }

  // Writing the flat buffers changes the model (the zero-initialised final layer included).
  auto gen = nt::make_generator(c10::Device(c10::kCPU), 3);
  {
    torch::NoGradGuard no_grad;
    for (auto& f : flat) f.copy_(at::randn(f.sizes(), gen, f.options()) * 0.1);
  }
  const auto out1 = forward(model);
  EXPECT_FALSE(torch::equal(out1, out0));
  EXPECT_GT((out1 - out0).abs().max().item<float>(), 1e-3f);
  // A second model loaded from the same buffers computes the same output.
  auto other = tiny_model();
  other->eval();
  nt::load_flat(*other, layout, flat);
  EXPECT_TRUE(torch::equal(forward(other), out1));
  // gather_params of the bound model returns the buffers (round trip), padding included
  // as zeros.
  auto again = nt::gather_params(*model, layout);
  for (size_t i = 0; i < flat.size(); ++i) {
    const auto& u = layout.units[i];
    EXPECT_TRUE(torch::equal(again[i].narrow(0, 0, u.numel), flat[i].narrow(0, 0, u.numel))) << u.name;
  }
}

TEST(FlatLayout, GatherGradsMatchesParameterGradients) {
  auto model = tiny_model();
  model->train();
  const nt::FlatLayout layout = nt::make_layout(*model, 2);
  auto flat = nt::gather_params(*model, layout);
  nt::bind_params(*model, layout, flat);
  {
    torch::NoGradGuard no_grad;
    auto gen = nt::make_generator(c10::Device(c10::kCPU), 5);
    for (auto& f : flat) f.add_(at::randn(f.sizes(), gen, f.options()) * 0.05);
  }
  auto gen = nt::make_generator(c10::Device(c10::kCPU), 9);
  auto x = at::randn({3, 1, 4, 4}, gen, at::TensorOptions().dtype(at::kFloat));
  auto loss = model->forward(x, torch::tensor({0.2f, 0.4f, -1.f}), torch::tensor({1, 2, 3}, at::kLong)).pow(2).sum();
  loss.backward();
  // One parameter without a gradient: it must come back as zeros.
  auto params = model->named_parameters();
  params["blocks.1.mlp.fc2.bias"].mutable_grad() = at::Tensor();
  auto grads = nt::gather_grads(*model, layout);
  ASSERT_EQ(grads.size(), layout.units.size());
  for (size_t i = 0; i < layout.units.size(); ++i) {
    const auto& u = layout.units[i];
    ASSERT_EQ(grads[i].numel(), u.padded) << u.name;
    EXPECT_EQ(grads[i].scalar_type(), at::kFloat);
    for (const auto& p : u.params) {
      auto slice = grads[i].narrow(0, p.offset, p.numel).view(p.shape);
      const auto& g = params[p.name].grad();
      if (g.defined()) {
        EXPECT_TRUE(torch::equal(slice, g)) << p.name;
      } else {
        EXPECT_EQ(slice.abs().sum().item<float>(), 0.f) << p.name;
      }
    }
    if (u.padded > u.numel) {
      EXPECT_EQ(grads[i].narrow(0, u.numel, u.padded - u.numel).abs().sum().item<float>(), 0.f) << u.name;
    }
  }
  EXPECT_GT(grads[1].abs().sum().item<float>(), 0.f);
}

TEST(FlatLayout, JsonRoundTrip) {
  auto model = tiny_model();
  const nt::FlatLayout a = nt::make_layout(*model, 3);
  const nlohmann::json j = a.to_json();
  const nt::FlatLayout b = nt::FlatLayout::from_json(nlohmann::json::parse(j.dump()));
  EXPECT_EQ(b.world, a.world);
  ASSERT_EQ(b.units.size(), a.units.size());
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto &ua = a.units[i], &ub = b.units[i];
    EXPECT_EQ(ub.name, ua.name);
    EXPECT_EQ(ub.numel, ua.numel);
    EXPECT_EQ(ub.padded, ua.padded);
    EXPECT_EQ(ub.world, ua.world);
    ASSERT_EQ(ub.params.size(), ua.params.size());
    for (size_t k = 0; k < ua.params.size(); ++k) {
      EXPECT_EQ(ub.params[k].name, ua.params[k].name);
      EXPECT_EQ(ub.params[k].shape, ua.params[k].shape);
      EXPECT_EQ(ub.params[k].offset, ua.params[k].offset);
      EXPECT_EQ(ub.params[k].numel, ua.params[k].numel);
    }
  }
  EXPECT_EQ(b.numel(), a.numel());
  EXPECT_EQ(b.to_json(), j);
}

// Rank r's shard of each padded buffer.
std::vector<at::Tensor> shards_of(const std::vector<at::Tensor>& full, const nt::FlatLayout& layout, int r) {
  std::vector<at::Tensor> out;
  for (size_t u = 0; u < full.size(); ++u) {
    const int64_t s = layout.units[u].shard();
    out.push_back(full[u].narrow(0, r * s, s).clone());
  }
  return out;
}

// The rank files of a 2-rank checkpoint of `model` in `dir`: full padded buffers per kind (the
// parameters, and random values from `seed` for the others) and a generator state per rank.
struct TwoRankFiles {
  std::map<std::string, std::vector<at::Tensor>> full;  // kind -> [unit]
  std::vector<at::Tensor> rng;                           // rank -> state
};
TwoRankFiles write_two_rank_files(const std::string& dir, nt::DiT& model, const nt::FlatLayout& l2, uint64_t seed) {
  TwoRankFiles f;
  f.full["param"] = nt::gather_params(*model, l2);
  auto gen = nt::make_generator(c10::Device(c10::kCPU), seed);
  for (const char* kind : {"ema", "exp_avg", "exp_avg_sq"})
    for (const auto& p : f.full["param"]) f.full[kind].push_back(at::randn(p.sizes(), gen, p.options()));
  for (int r = 0; r < 2; ++r) {
    auto g = nt::make_generator(c10::Device(c10::kCPU), seed * 10 + r);
    f.rng.push_back(nt::generator_state(g));
    std::map<std::string, std::vector<at::Tensor>> mine;
    for (const auto& [kind, bufs] : f.full) mine[kind] = shards_of(bufs, l2, r);
    nt::save_rank_shards(dir, r, l2, mine, {{"train", f.rng[r]}});
  }
  return f;
}

TEST(ShardedCheckpoint, TwoRankShardsReassembleAndReshardToThree) {
  const std::string dir = nt::test::scratch_dir();
  auto model = tiny_model();
  const nt::FlatLayout l2 = nt::make_layout(*model, 2);
  auto [full, rng] = write_two_rank_files(dir, model, l2, 11);
  EXPECT_EQ(nt::rank_file_name(1), "rank_00001.safetensors");
  // The rank file holds "<unit>.<kind>" shards of padded / W entries.
  auto f1 = nt::load_safetensors(dir + "/rank_00001.safetensors");
  ASSERT_TRUE(f1.tensors.count("root.param"));
  EXPECT_EQ(f1.tensors["root.param"].numel(), l2.units[0].padded / 2);
  EXPECT_TRUE(f1.tensors.count("blocks.2.exp_avg_sq"));
  EXPECT_TRUE(f1.tensors.count("rng.train"));

  const nlohmann::json manifest = {{"layout", l2.to_json()}, {"world_size", 2}};
  // Reassembled by name, exactly.
  auto params = nt::load_full_tensors(dir, manifest, "param");
  std::set<std::string> names;
  for (const auto& [name, p] : trainable(model)) {
    names.insert(name);
    ASSERT_TRUE(params.count(name)) << name;
    EXPECT_TRUE(torch::equal(params[name], p)) << name;
  }
  EXPECT_EQ(params.size(), names.size());
  EXPECT_FALSE(params.count("pos_embed"));
  for (const char* kind : {"ema", "exp_avg", "exp_avg_sq"}) {
    auto t = nt::load_full_tensors(dir, manifest, kind);
    for (size_t u = 0; u < l2.units.size(); ++u)
      for (const auto& p : l2.units[u].params)
        EXPECT_TRUE(torch::equal(t.at(p.name), full[kind][u].narrow(0, p.offset, p.numel).view(p.shape)))
            << kind << " " << p.name;
  }

  // Resharded to W = 3: each rank's shard is the slice of the W = 3 padded buffer.
  const nt::FlatLayout l3 = nt::make_layout(*model, 3);
  auto ema = nt::load_full_tensors(dir, manifest, "ema");
  std::vector<at::Tensor> ema3_full;  // [padded_3] per unit, built by hand
  for (const auto& u : l3.units) {
    auto buf = torch::zeros({u.padded});
    for (const auto& p : u.params) buf.narrow(0, p.offset, p.numel).copy_(ema.at(p.name).reshape({-1}));
    ema3_full.push_back(buf);
  }
  auto p3_full = nt::gather_params(*model, l3);
  for (int r = 0; r < 3; ++r) {
    auto s = nt::shard_from_full(params, l3, r, c10::Device(c10::kCPU), "test");
    auto e = nt::shard_from_full(ema, l3, r, c10::Device(c10::kCPU), "test");
    ASSERT_EQ(s.size(), l3.units.size());
    for (size_t u = 0; u < l3.units.size(); ++u) {
      const int64_t n = l3.units[u].shard();
      ASSERT_EQ(s[u].numel(), n) << l3.units[u].name;
      EXPECT_TRUE(torch::equal(s[u], p3_full[u].narrow(0, r * n, n))) << l3.units[u].name << " rank " << r;
      EXPECT_TRUE(torch::equal(e[u], ema3_full[u].narrow(0, r * n, n))) << l3.units[u].name << " rank " << r;
    }
  }

  // Generator states: rank r of a run resumed on W' takes rank r mod W.
  EXPECT_TRUE(torch::equal(nt::load_rng_state(dir, manifest, 0, "train"), rng[0]));
  EXPECT_TRUE(torch::equal(nt::load_rng_state(dir, manifest, 3, "train"), rng[1]));
  EXPECT_THROW(nt::load_rng_state(dir, manifest, 0, "other"), nt::CheckpointError);
}

TEST(ShardedCheckpoint, ErrorsNameWhatIsWrong) {
  const std::string dir = nt::test::scratch_dir();
  auto model = tiny_model();
  const nt::FlatLayout l1 = nt::make_layout(*model, 1);
  auto flat = nt::gather_params(*model, l1);
  nt::save_rank_shards(dir, 0, l1, {{"param", flat}}, {});
  const nlohmann::json manifest = {{"layout", l1.to_json()}, {"world_size", 1}};
  try {
    nt::load_full_tensors(dir, manifest, "ema");
    FAIL() << "a missing kind must be refused";
  } catch (const nt::CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), "rank_00000.safetensors");
    EXPECT_CONTAINS(e.what(), "root.ema");
  }
  auto full = nt::load_full_tensors(dir, manifest, "param");
  auto missing = full;
  missing.erase("blocks.1.attn.proj.weight");
  try {
    nt::shard_from_full(missing, l1, 0, c10::Device(c10::kCPU), "ckpt/step_1");
    FAIL() << "a missing parameter must be refused";
  } catch (const nt::CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), "ckpt/step_1");
    EXPECT_CONTAINS(e.what(), "blocks.1.attn.proj.weight");
  }
  auto misshaped = full;
  misshaped["final_layer.linear.weight"] = torch::zeros({2, 3});
  try {
    nt::shard_from_full(misshaped, l1, 0, c10::Device(c10::kCPU), "ckpt/step_1");
    FAIL() << "a mis-shaped parameter must be refused";
  } catch (const nt::CheckpointError& e) {
    EXPECT_CONTAINS(e.what(), "final_layer.linear.weight");
  }
  // A manifest that claims two ranks when there is one file.
  const nlohmann::json two = {{"layout", nt::make_layout(*model, 2).to_json()}, {"world_size", 2}};
  EXPECT_ANY_THROW(nt::load_full_tensors(dir, two, "param"));
}

// A rank's shards come from the byte ranges of the rank files that hold them, checked against
// their digests: on the writer's W its own file alone (another rank's file may be missing), on
// W = 3 bit for bit what reassembling by name and resharding gives, rank 0 again from file 0
// alone; a model with other units says so (nullopt: the caller reassembles by name). A missing or
// corrupted file is named.
TEST(ShardedCheckpoint, RanksReadOnlyTheFilesThatHoldTheirShards) {
  const std::string dir = nt::test::scratch_dir();
  auto model = tiny_model();
  const nt::FlatLayout l2 = nt::make_layout(*model, 2), l3 = nt::make_layout(*model, 3);
  auto [full, rng] = write_two_rank_files(dir, model, l2, 12);
  nlohmann::json manifest = {{"layout", l2.to_json()}, {"world_size", 2}, {"step", 1}};
  for (int r = 0; r < 2; ++r)
    manifest["files"][nt::rank_file_name(r)] = nt::sha256_file(dir + "/" + nt::rank_file_name(r));
  const std::vector<std::string> kinds = {"param", "ema", "exp_avg", "exp_avg_sq"};
  const c10::Device cpu(c10::kCPU);
  // W = 3 from W = 2: each rank's ranges equal the shards of the tensors reassembled by name.
  const auto by_name = nt::load_full_tensors(dir, manifest, kinds);
  for (int r = 0; r < 3; ++r) {
    auto got = nt::load_rank_shards(dir, manifest, l3, r, kinds, cpu);
    ASSERT_TRUE(got.has_value());
    for (const auto& kind : kinds) {
      const auto want = nt::shard_from_full(by_name.at(kind), l3, r, cpu, "test");
      for (size_t u = 0; u < want.size(); ++u)
        EXPECT_TRUE(torch::equal(got->buffers.at(kind)[u], want[u])) << kind << " unit " << u << " rank " << r;
    }
    EXPECT_TRUE(torch::equal(got->rng.at("train"), rng[r % 2])) << r;
  }
  fs::remove(dir + "/" + nt::rank_file_name(1));
  auto own = nt::load_rank_shards(dir, manifest, l2, 0, kinds, cpu);
  ASSERT_TRUE(own.has_value());
  for (const auto& kind : kinds) {
    const auto want = shards_of(full[kind], l2, 0);
    ASSERT_EQ(own->buffers.at(kind).size(), want.size()) << kind;
    for (size_t u = 0; u < want.size(); ++u) EXPECT_TRUE(torch::equal(own->buffers.at(kind)[u], want[u])) << kind << u;
  }
  EXPECT_TRUE(torch::equal(own->rng.at("train"), rng[0]));
  EXPECT_TRUE(nt::load_rank_shards(dir, manifest, l3, 0, kinds, cpu).has_value()) << "rank 0 of 3 needs file 0 only";
  auto other = tiny_model(2);
  EXPECT_FALSE(nt::load_rank_shards(dir, manifest, nt::make_layout(*other, 2), 0, kinds, cpu));
  EXPECT_CONTAINS(nt::test::thrown_message<nt::CheckpointError>(
                      [&] { nt::load_rank_shards(dir, manifest, l2, 1, kinds, cpu); }),
                  "rank_00001.safetensors' is missing");
  {
    std::fstream f(dir + "/" + nt::rank_file_name(0), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  EXPECT_CONTAINS(nt::test::thrown_message<nt::CheckpointError>(
                      [&] { nt::load_rank_shards(dir, manifest, l2, 0, kinds, cpu); }),
                  "corrupted (SHA-256 mismatch)");
}

// resume_files: what each rank of the resuming layout reads (its own file on the writer's W; the
// files holding its shards on another W, the whole of them over the ranks), rank 0 also the other
// listed files; every rank file when the units differ. Each rank loads from its files alone.
TEST(ShardedCheckpoint, ResumeFilesAreWhatEachRankReads) {
  const std::string dir = nt::test::scratch_dir();
  auto model = tiny_model();
  const nt::FlatLayout l2 = nt::make_layout(*model, 2), l3 = nt::make_layout(*model, 3);
  write_two_rank_files(dir, model, l2, 5);
  nlohmann::json manifest = {{"layout", l2.to_json()}, {"world_size", 2}, {"step", 1}};
  for (int r = 0; r < 2; ++r)
    manifest["files"][nt::rank_file_name(r)] = nt::sha256_file(dir + "/" + nt::rank_file_name(r));
  manifest["files"]["config.toml"] = "0";
  using Names = std::vector<std::string>;
  const std::string f0 = nt::rank_file_name(0), f1 = nt::rank_file_name(1);
  EXPECT_EQ(nt::resume_files(manifest, l2, 0), (Names{f0, "config.toml"}));
  EXPECT_EQ(nt::resume_files(manifest, l2, 1), (Names{f1}));
  auto other = tiny_model(2);
  EXPECT_EQ(nt::resume_files(manifest, nt::make_layout(*other, 3), 2), (Names{f0, f1}));
  const std::vector<std::string> kinds = {"param", "ema", "exp_avg", "exp_avg_sq"};
  const c10::Device cpu(c10::kCPU);
  std::set<std::string> all;
  for (int r = 0; r < 3; ++r) {
    const Names names = nt::resume_files(manifest, l3, r);
    all.insert(names.begin(), names.end());
    const std::string own = dir + "/r" + std::to_string(r);  // those files only
    fs::create_directories(own);
    for (const auto& n : names)
      if (n != "config.toml") fs::copy_file(dir + "/" + n, own + "/" + n);
    auto got = nt::load_rank_shards(own, manifest, l3, r, kinds, cpu, /*verify=*/false);
    auto want = nt::load_rank_shards(dir, manifest, l3, r, kinds, cpu);
    ASSERT_TRUE(got.has_value() && want.has_value());
    for (const auto& kind : kinds)
      for (size_t u = 0; u < want->buffers.at(kind).size(); ++u)
        EXPECT_TRUE(torch::equal(got->buffers.at(kind)[u], want->buffers.at(kind)[u])) << kind << u << " rank " << r;
  }
  EXPECT_EQ(all, (std::set<std::string>{f0, f1, "config.toml"}));
}

}  // namespace
