// checkpoint.init_from: a new run starts from a file instead of fresh weights.
//   - reference-named weights (tread_export --weights raw) become the parameters and the EMA:
//     a first step with lr 0 and EMA decay 1 leaves both equal to them, bit for bit (bf16 weights:
//     their values in fp32);
//   - a training state in the reference's format (torch.save of model_state_dict, ema_state_dict
//     and torch.optim.AdamW's state_dict, names model.* from EDMPrecond; made here by
//     Debian's PyTorch after 3 AdamW updates), converted by scripts/convert-weights
//     --training-state, continues: the run's first checkpoint is step 3 with the reference's
//     parameters, EMA and AdamW moments by name, bit for bit (zero moments for pos_embed, which
//     has no state), also when two trainer ranks take their shards of it; its optimizer settings
//     that differ from the run's are named, the run goes on to step 5, and a restart resumes
//     from its own checkpoints;
//   - bad files (missing, another model, a name the model lacks, the reference's model.* names
//     with their prefix, a training state without its step) end the run with exit code 1 and a message naming the file and what is wrong, before
//     anything is written; --dry-run checks the file the same way.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "launch/python_torch.h"
#include "launch/run_fixture.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace nt::test;

// Trains run "a" for 5 steps and exports its raw weights (reference names and order).
std::string trained_weights(const RunSetup& s) {
  std::string out;
  EXPECT_EQ(run_single(s, "--set train.steps=5", &out), 0) << out;
  const std::string w = s.dir + "/w.safetensors";
  const ToolResult ex = tool("launch/tread_export", "--checkpoint " + ckpt(s, "w", 5) + " --out " + w + " --weights raw", s.dir);
  EXPECT_EQ(ex.rc, 0) << ex.out << ex.err;
  return w;
}

void expect_equal_by_name(const std::map<std::string, at::Tensor>& got, const nt::SafetensorsFile& want,
                          const std::string& prefix, const std::string& what) {
  EXPECT_FALSE(got.empty());
  for (const auto& [name, t] : got) {
    auto it = want.tensors.find(prefix + name);
    ASSERT_NE(it, want.tensors.end()) << what << ": " << prefix + name;
    EXPECT_TRUE(torch::equal(t, it->second)) << what << ": " << name;
  }
}

TEST(InitFrom, WeightsBecomeTheParametersAndTheEma) {
  const RunSetup s = make_setup();
  const std::string w = trained_weights(s);
  const auto file = nt::load_safetensors(w);
  std::string out;
  // One step that changes neither: lr 0 leaves the parameters, EMA decay 1 the EMA.
  ASSERT_EQ(run_single(s,
                       "--set run.name=b --set checkpoint.init_from=" + w +
                           " --set train.steps=1 --set optim.lr=0 --set ema.decay=1",
                       &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "initialised from " + w + ": weights (parameters and EMA); AdamW starts afresh");
  EXPECT_FALSE(fs::exists(ckpt(s, "b", 0))) << "weights alone start at step 0 without a checkpoint of their own";
  expect_equal_by_name(tensors(ckpt(s, "b", 1), "param"), file, "", "param");
  expect_equal_by_name(tensors(ckpt(s, "b", 1), "ema"), file, "", "ema");
  // Weights stored in bf16 start the fp32 parameters at their bf16 values.
  std::vector<nt::NamedTensor> half;
  for (const auto& name : file.order) half.push_back({name, file.tensors.at(name).to(at::kBFloat16)});
  nt::save_safetensors(s.dir + "/w16.safetensors", half);
  ASSERT_EQ(run_single(s,
                       "--set run.name=h --set checkpoint.init_from=" + s.dir +
                           "/w16.safetensors --set train.steps=1 --set optim.lr=0 --set ema.decay=1",
                       &out),
            0)
      << out;
  for (const auto& [name, t] : tensors(ckpt(s, "h", 1), "param"))
    EXPECT_TRUE(torch::equal(t, file.tensors.at(name).to(at::kBFloat16).to(at::kFloat))) << name;
  // The check can fail: a run without init_from starts elsewhere.
  ASSERT_EQ(run_single(s, "--set run.name=c --set train.steps=1 --set optim.lr=0 --set ema.decay=1", &out), 0) << out;
  EXPECT_FALSE(torch::equal(tensors(ckpt(s, "c", 1), "param").at("blocks.0.mlp.fc1.weight"),
                            file.tensors.at("blocks.0.mlp.fc1.weight")));
}

TEST(InitFrom, ReferenceTrainingStateContinuesTheRun) {
  if (!have_torch()) GTEST_SKIP() << kPython << " with PyTorch is needed (Debian: python3-torch)";
  const RunSetup s = make_setup();
  const std::string w = trained_weights(s), d = s.dir;
  // The reference's train.py: AdamW over model.parameters() (pos_embed included, without a
  // gradient), 3 updates, then torch.save of the EDMPrecond-wrapped dicts; and the expected
  // tensors under this project's names.
  int rc = 0;
  std::string out = convert_weights(w + " " + d + "/w.pt --to-torch", &rc);  // the weights in file order
  ASSERT_EQ(rc, 0) << out;
  run_python(d, "import collections, torch\n"
                "params = collections.OrderedDict((k, torch.nn.Parameter(t, requires_grad=(k != 'pos_embed')))\n"
                "                                 for k, t in torch.load('" + d + "/w.pt').items())\n"
                "opt = torch.optim.AdamW(params.values(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)\n"
                "g = torch.Generator().manual_seed(11)\n"
                "for _ in range(3):\n"
                "    for p in params.values():\n"
                "        if p.requires_grad: p.grad = torch.randn(p.shape, generator=g)\n"
                "    opt.step()\n"
                "ema = collections.OrderedDict((k, p.detach() * 0.5 + 0.25) for k, p in params.items())\n"
                "torch.save({'model_state_dict': collections.OrderedDict(('model.' + k, p.detach()) for k, p in params.items()),\n"
                "            'ema_state_dict': collections.OrderedDict(('model.' + k, v) for k, v in ema.items()),\n"
                "            'optimizer_state_dict': opt.state_dict(), 'step': 2}, '" + d + "/latest.pt')\n"
                "want = collections.OrderedDict()\n"
                "for k, p in params.items():\n"
                "    st = opt.state[p]\n"
                "    want['param.' + k] = p.detach()\n"
                "    want['ema.' + k] = ema[k]\n"
                "    want['exp_avg.' + k] = st['exp_avg'] if st else torch.zeros_like(p)\n"
                "    want['exp_avg_sq.' + k] = st['exp_avg_sq'] if st else torch.zeros_like(p)\n"
                "torch.save(want, '" + d + "/want.pt')\n");
  out = convert_weights(d + "/want.pt " + d + "/want.safetensors", &rc);
  ASSERT_EQ(rc, 0) << out;
  out = convert_weights(d + "/latest.pt " + d + "/state.safetensors --training-state --trusted", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_CONTAINS(out, "training state after 3 updates");
  const auto state = nt::load_safetensors(d + "/state.safetensors");
  EXPECT_EQ(state.metadata.at("step"), "3");
  EXPECT_EQ(state.metadata.at("reference_step"), "2");
  EXPECT_TRUE(torch::equal(state.tensors.at("exp_avg.pos_embed"), torch::zeros_like(state.tensors.at("param.pos_embed"))));

  const std::string init = " --set run.name=b --set checkpoint.init_from=" + d + "/state.safetensors";
  ASSERT_EQ(run_single(s, init + " --set train.steps=5", &out), 0) << out;
  EXPECT_CONTAINS(out, "a training state after 3 updates");
  EXPECT_CONTAINS(out, "was trained with lr = 0.001; this run uses 0.002 (optim.lr)");
  EXPECT_CONTAINS(out, "was trained with beta2 = 0.95; this run uses 0.999 (optim.betas)");
  EXPECT_LACKS(out, "was trained with weight_decay");
  const auto want = nt::load_safetensors(d + "/want.safetensors");
  const std::string first = ckpt(s, "b", 3);
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"})
    expect_equal_by_name(tensors(first, kind), want, std::string(kind) + ".", kind);
  const auto m = nt::read_verified_manifest(first);
  EXPECT_EQ(m.at("step").get<int64_t>(), 3);
  EXPECT_EQ(m.at("optimizer").at("step").get<int64_t>(), 3);
  EXPECT_TRUE(fs::exists(ckpt(s, "b", 5)));
  // Two trainer ranks take their shards of the same state.
  ASSERT_EQ(run(s, 2, init + " --set run.name=b2 --set train.steps=3", &out), 0) << out;
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"})
    EXPECT_TRUE(bit_equal(ckpt(s, "b2", 3), first, kind)) << kind;
  EXPECT_EQ(nt::read_verified_manifest(ckpt(s, "b2", 3)).at("world_size").get<int>(), 2);
  const std::string metrics = read_text(s.dir + "/runs/b/metrics.jsonl");
  EXPECT_EQ(metrics.rfind("{", 0), 0u);
  EXPECT_CONTAINS(metrics.substr(0, metrics.find('\n')), "\"step\":4");
  // The same command again: the run resumes from its own checkpoint; the file is not read again.
  fs::remove(d + "/state.safetensors");
  ASSERT_EQ(run_single(s, init + " --set train.steps=6", &out), 0) << out;
  EXPECT_CONTAINS(out, "resumed from " + ckpt(s, "b", 5));
  EXPECT_CONTAINS(out, "checkpoint.init_from applies only to a run's start");
  EXPECT_TRUE(fs::exists(ckpt(s, "b", 6)));
}

TEST(InitFrom, BadFilesEndTheRunWithAMessageBeforeAnythingIsWritten) {
  const RunSetup s = make_setup();
  const std::string w = trained_weights(s), d = s.dir;
  auto file = nt::load_safetensors(w);
  std::vector<nt::NamedTensor> extra;
  for (const auto& name : file.order) extra.push_back({name, file.tensors.at(name)});
  extra.push_back({"extra.weight", torch::zeros({2})});
  nt::save_safetensors(d + "/extra.safetensors", extra);
  std::vector<nt::NamedTensor> state;
  for (const auto& name : file.order)
    for (const char* kind : {"param.", "ema.", "exp_avg.", "exp_avg_sq."}) state.push_back({kind + name, file.tensors.at(name)});
  nt::save_safetensors(d + "/nostep.safetensors", state, {{"format", "nano-tread-training-state/1"}});
  nt::save_safetensors(d + "/badstep.safetensors", state, {{"format", "nano-tread-training-state/1"}, {"step", "3x"}});
  std::vector<nt::NamedTensor> wrapped;  // the reference's EDMPrecond names, prefix not stripped
  for (const auto& name : file.order) wrapped.push_back({"model." + name, file.tensors.at(name)});
  nt::save_safetensors(d + "/wrapped.safetensors", wrapped);

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--set checkpoint.init_from=" + d + "/missing.safetensors", "checkpoint.init_from: "},
      {"--set checkpoint.init_from=" + w + " --set model.hidden_size=40", "has shape"},
      {"--set checkpoint.init_from=" + d + "/extra.safetensors", "holds 'extra.weight', which this model does not have"},
      {"--set checkpoint.init_from=" + d + "/nostep.safetensors", "without a valid \"step\""},
      {"--set checkpoint.init_from=" + d + "/badstep.safetensors", "without a valid \"step\""},
      {"--set checkpoint.init_from=" + d + "/wrapped.safetensors", "--strip-prefix model."},
  };
  int k = 0;
  for (const auto& [sets, message] : cases) {
    const std::string name = "bad" + std::to_string(k++);
    std::string out;
    EXPECT_EQ(run_single(s, "--set run.name=" + name + " " + sets, &out), 1) << sets << "\n" << out;
    EXPECT_CONTAINS(out, message);
    EXPECT_CONTAINS(out, "checkpoint.init_from");
    EXPECT_LACKS(out, "terminate called");
    EXPECT_FALSE(fs::exists(d + "/runs/" + name + "/config.toml")) << sets;
    EXPECT_FALSE(fs::exists(d + "/runs/" + name + "/ckpt/latest")) << sets;
    EXPECT_EQ(run_single(s, "--dry-run " + sets, &out), 1) << "dry run: " << sets << "\n" << out;
    EXPECT_CONTAINS(out, message);
  }
  std::string out;
  ASSERT_EQ(run_single(s, "--dry-run --set checkpoint.init_from=" + w, &out), 0) << out;
  EXPECT_CONTAINS(out, "init_from: " + w + ": weights (parameters and EMA)");
}

}  // namespace
