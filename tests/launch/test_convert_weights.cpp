// scripts/convert-weights (run by /usr/bin/python3 with Debian's PyTorch; skipped without it):
//   - a checkpoint as CompVis/tread's train.py saves it (torch.save of model_state_dict,
//     ema_state_dict, optimizer_state_dict, step; tensor names model.* from EDMPrecond) converts,
//     with --key ema_state_dict --strip-prefix model. --trusted, into weights that load_weights
//     takes, with the EMA dict's values bit for bit (not the model dict's);
//   - a plain state dict in PyTorch's legacy format with int64, bf16 and 0-dim tensors (as
//     pytorch-fid's Inception weights hold) keeps names, order, dtypes, shapes and bits;
//   - bad inputs (no such file, no such key, a dict that is not all tensors, not a checkpoint)
//     exit 1 with a message naming the problem and leave no output file;
//   - --training-state refuses what it cannot map; --to-torch goes back to a torch.save'd dict.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/rng.h"
#include "core/safetensors.h"
#include "dist/model_io.h"
#include "launch/python_torch.h"
#include "models/dit.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

using nt::test::have_torch;
using nt::test::kPython;

using nt::test::convert_weights;
using nt::test::run_python;

// Each (arguments, message) case exits 1 with the message and leaves no `target`.
void expect_refusals(const std::vector<std::pair<std::string, std::string>>& cases, const std::string& target) {
  for (const auto& [args, message] : cases) {
    int rc = 0;
    const std::string out = convert_weights(args, &rc);
    EXPECT_EQ(rc, 1) << args << "\n" << out;
    EXPECT_CONTAINS(out, message);
    EXPECT_FALSE(fs::exists(target)) << args;
  }
}

// The values both sides draw: randn(shape) from a CPU generator seeded `seed` (the same LibTorch).
at::Tensor drawn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator g = nt::make_generator(c10::Device(c10::kCPU), seed);
  return at::randn(shape, g);
}

nt::DiTConfig small_dit() {
  nt::DiTConfig c;
  c.input_size = 8;
  c.in_channels = 4;
  c.num_classes = 10;
  c.depth = 2;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.patch_size = 2;
  return c;
}

TEST(ConvertWeights, ReferenceCheckpointToWeightsThatLoad) {
  if (!have_torch()) GTEST_SKIP() << kPython << " with PyTorch is needed (Debian: python3-torch)";
  const std::string dir = nt::test::scratch_dir();
  nt::DiT model(small_dit());
  nlohmann::json params = nlohmann::json::array();  // [name, shape] in state_dict order
  for (const auto& p : model->named_parameters()) params.push_back({p.key(), p.value().sizes().vec()});
  nt::test::write_text(dir + "/params.json", params.dump());
  run_python(dir, "import json, torch\n"
                       "params = json.load(open('" + dir + "/params.json'))\n"
                       "def dict_of(base):\n"
                       "    return {'model.' + n: torch.randn(s, generator=torch.Generator().manual_seed(base + i))\n"
                       "            for i, (n, s) in enumerate(params)}\n"
                       "torch.save({'model_state_dict': dict_of(2000), 'ema_state_dict': dict_of(1000),\n"
                       "            'optimizer_state_dict': {'state': {}, 'param_groups': [{'lr': 1e-4}]}, 'step': 7},\n"
                       "           '" + dir + "/latest.pt')\n");

  // The optimizer state's floats: PyTorch 1.13's tensors-only loader refuses them, 2.x's takes them.
  int rc = 0;
  std::string out =
      convert_weights(dir + "/latest.pt " + dir + "/ema.safetensors --key ema_state_dict --strip-prefix model. --trusted", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_CONTAINS(out, std::to_string(params.size()) + " tensors");
  nt::DiT loaded(small_dit());
  nt::load_weights(loaded, dir + "/ema.safetensors");
  size_t i = 0;
  for (const auto& p : loaded->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), drawn(p.value().sizes(), 1000 + i))) << p.key();
    ++i;
  }
  EXPECT_EQ(i, params.size());

  // Without the prefix stripped the names are the wrapper's: the strict loader says which.
  out = convert_weights(dir + "/latest.pt " + dir + "/wrapped.safetensors --key ema_state_dict --trusted", &rc);
  ASSERT_EQ(rc, 0) << out;
  nt::DiT other(small_dit());
  EXPECT_CONTAINS(nt::test::thrown_message<nt::SafetensorsError>([&] { nt::load_weights(other, dir + "/wrapped.safetensors"); }),
                  "lacks the parameter 'pos_embed'");
}

TEST(ConvertWeights, PlainLegacyStateDictKeepsNamesDtypesAndBits) {
  if (!have_torch()) GTEST_SKIP() << kPython << " with PyTorch is needed (Debian: python3-torch)";
  const std::string dir = nt::test::scratch_dir();
  run_python(dir, "import collections, torch\n"
                       "g = torch.Generator().manual_seed(5)\n"
                       "sd = collections.OrderedDict()\n"
                       "sd['Conv2d_1a_3x3.conv.weight'] = torch.randn((4, 3, 3, 3), generator=g)\n"
                       "sd['Conv2d_1a_3x3.bn.num_batches_tracked'] = torch.tensor(12)\n"
                       "sd['half.weight'] = torch.randn((5,), generator=g).to(torch.bfloat16)\n"
                       "sd['scalar'] = torch.tensor(2.5, dtype=torch.float64)\n"
                       "torch.save(sd, '" + dir + "/w.pth', _use_new_zipfile_serialization=False)\n");
  int rc = 0;
  const std::string out = convert_weights(dir + "/w.pth " + dir + "/w.safetensors", &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto file = nt::load_safetensors(dir + "/w.safetensors");
  ASSERT_EQ(file.order, (std::vector<std::string>{"Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.num_batches_tracked",
                                                  "half.weight", "scalar"}));
  at::Generator g = nt::make_generator(c10::Device(c10::kCPU), 5);
  const auto w = at::randn({4, 3, 3, 3}, g), half = at::randn({5}, g).to(at::kBFloat16);
  EXPECT_TRUE(torch::equal(file.tensors.at("Conv2d_1a_3x3.conv.weight"), w));
  const auto& count = file.tensors.at("Conv2d_1a_3x3.bn.num_batches_tracked");
  EXPECT_EQ(count.scalar_type(), at::kLong);
  EXPECT_EQ(count.dim(), 0);
  EXPECT_EQ(count.item<int64_t>(), 12);
  EXPECT_EQ(file.tensors.at("half.weight").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(torch::equal(file.tensors.at("half.weight"), half));
  EXPECT_EQ(file.tensors.at("scalar").scalar_type(), at::kDouble);
  EXPECT_EQ(file.tensors.at("scalar").item<double>(), 2.5);
}

TEST(ConvertWeights, BadInputsExitOneWithAMessageAndNoOutput) {
  if (!have_torch()) GTEST_SKIP() << kPython << " with PyTorch is needed (Debian: python3-torch)";
  const std::string dir = nt::test::scratch_dir();
  run_python(dir, "import torch\ntorch.save({'ema_state_dict': {'a': torch.zeros(2)}, 'step': 3}, '" + dir + "/ck.pt')\n");
  nt::test::write_text(dir + "/garbage.pt", "not a checkpoint\n");
  const std::string target = dir + "/out.safetensors";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {dir + "/missing.pt " + target, "no such file"},
      {dir + "/ck.pt " + target + " --key ema", "has no entry 'ema' (it has: ema_state_dict, step)"},
      {dir + "/ck.pt " + target, "entry 'ema_state_dict' is not a tensor but a dict (pick the state dict with --key)"},
      {dir + "/garbage.pt " + target, "cannot read"},
  };
  expect_refusals(cases, target);
}

TEST(ConvertWeights, TrainingStateRefusesWhatItCannotMap) {
  if (!have_torch()) GTEST_SKIP() << kPython << " with PyTorch is needed (Debian: python3-torch)";
  const std::string dir = nt::test::scratch_dir();
  // A two-parameter model: its AdamW state after one update, then variants the converter refuses.
  run_python(dir, "import copy, torch\n"
                  "ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]\n"
                  "opt = torch.optim.AdamW(ps, lr=1e-3)\n"
                  "for p in ps: p.grad = torch.ones_like(p)\n"
                  "opt.step()\n"
                  "sd = {'model.a': ps[0].detach(), 'model.b': ps[1].detach()}\n"
                  "good = {'model_state_dict': sd, 'ema_state_dict': sd, 'optimizer_state_dict': opt.state_dict(), 'step': 0}\n"
                  "torch.save(good, '" + dir + "/good.pt')\n"
                  "short = copy.deepcopy(good); short['model_state_dict'] = {'model.a': ps[0].detach()}\n"
                  "short['ema_state_dict'] = short['model_state_dict']\n"
                  "torch.save(short, '" + dir + "/short.pt')\n"
                  "ams = copy.deepcopy(good); ams['optimizer_state_dict']['param_groups'][0]['amsgrad'] = True\n"
                  "torch.save(ams, '" + dir + "/ams.pt')\n"
                  "other = copy.deepcopy(good); other['ema_state_dict'] = {'model.a': ps[0].detach(), 'model.c': ps[1].detach()}\n"
                  "torch.save(other, '" + dir + "/other.pt')\n"
                  "bare = {'model_state_dict': sd, 'ema_state_dict': sd}\n"
                  "torch.save(bare, '" + dir + "/bare.pt')\n");
  const std::string target = dir + "/out.safetensors";
  int rc = 0;
  std::string out = convert_weights(dir + "/good.pt " + target + " --training-state --trusted", &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto file = nt::load_safetensors(target);
  EXPECT_EQ(file.order, (std::vector<std::string>{"param.a", "param.b", "ema.a", "ema.b", "exp_avg.a", "exp_avg.b",
                                                  "exp_avg_sq.a", "exp_avg_sq.b"}));
  EXPECT_EQ(file.metadata.at("format"), "nano-tread-training-state/1");
  EXPECT_EQ(file.metadata.at("step"), "1");
  EXPECT_EQ(file.metadata.at("lr"), "0.001");
  fs::remove(target);
  const std::string state = " " + target + " --training-state --trusted";
  expect_refusals({{dir + "/short.pt" + state, "the optimizer holds 2 parameters and the model dict 1 tensors"},
                   {dir + "/ams.pt" + state, "amsgrad"},
                   {dir + "/other.pt" + state, "ema_state_dict and model_state_dict name different tensors"},
                   {dir + "/bare.pt" + state, "has no entry 'optimizer_state_dict'"},
                   {dir + "/good.pt --key ema_state_dict" + state, "drop --key"},
                   {dir + "/good.pt --strip-prefix ema." + state, "does not start with 'ema.'"}},
                  target);
}

// --to-torch: safetensors (what tread_export writes) to a torch.save'd state dict, names with
// --add-prefix in front, dtypes and bits kept: back through the plain mode it is the same file
// content (names, order, bits) for a DiT's weights and for f32, bf16 and int64 tensors. A file
// that is not safetensors exits 1 and writes nothing; --add-prefix alone is refused.
TEST(ConvertWeights, ToTorchAndBackKeepNamesOrderAndBits) {
  if (!have_torch()) GTEST_SKIP() << kPython << " with PyTorch is needed (Debian: python3-torch)";
  const std::string dir = nt::test::scratch_dir();
  nt::DiT model(small_dit());
  nt::export_weights(model, dir + "/w.safetensors", {});
  nt::save_safetensors(dir + "/mixed.safetensors", {{"a", drawn({2, 3}, 3)},
                                                     {"b", drawn({5}, 4).to(at::kBFloat16)},
                                                     {"c", torch::arange(4, at::kLong) - 2}});
  for (const std::string name : {"w", "mixed"}) {
    int rc = 0;
    std::string out = convert_weights(dir + "/" + name + ".safetensors " + dir + "/" + name + ".pt --to-torch --add-prefix model.", &rc);
    ASSERT_EQ(rc, 0) << out;
    run_python(dir, "import torch\nsd = torch.load('" + dir + "/" + name + ".pt')\n"
                    "assert all(k.startswith('model.') for k in sd), list(sd)\n");
    out = convert_weights(dir + "/" + name + ".pt " + dir + "/" + name + ".back.safetensors --strip-prefix model.", &rc);
    ASSERT_EQ(rc, 0) << out;
    const auto a = nt::load_safetensors(dir + "/" + name + ".safetensors");
    const auto b = nt::load_safetensors(dir + "/" + name + ".back.safetensors");
    EXPECT_EQ(b.order, a.order) << name;
    for (const auto& n : a.order) {
      EXPECT_EQ(b.tensors.at(n).scalar_type(), a.tensors.at(n).scalar_type()) << n;
      EXPECT_TRUE(torch::equal(b.tensors.at(n), a.tensors.at(n))) << n;
    }
  }
  nt::test::write_text(dir + "/junk.safetensors", "not safetensors at all");
  expect_refusals({{dir + "/junk.safetensors " + dir + "/junk.pt --to-torch", "cannot read"},
                   {dir + "/w.safetensors " + dir + "/junk.pt --add-prefix model.", "--add-prefix goes with --to-torch"}},
                  dir + "/junk.pt");
}

}  // namespace
