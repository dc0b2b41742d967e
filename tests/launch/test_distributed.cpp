// Data-parallel training with sharded optimizer state, through tread_run under mpiexec:
// W = 1, 2, 3 trainer ranks train the same model (TREAD route, class dropout, clipping, a
// parameter count not divisible by 2 or 3) to within 1e-5 per tensor; a run stopped on 2 ranks
// and resumed on 3 ends within 1e-5 of the uninterrupted run, and resumed on 2 bit for bit; an
// evaluation rank waits and exits cleanly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "dist/sharded_checkpoint.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using nt::test::exe;
using nt::test::run_command;

const char* kMpiEnv = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 ";

struct RunSetup {
  std::string dir, config;
};

RunSetup make_setup() {
  RunSetup s;
  s.dir = nt::test::scratch_dir();
  const std::string data = s.dir + "/m8.h5";
  std::string out;
  const int rc = run_command(exe("data/tread_data") + " import-mnist --images " + std::string(NT_SOURCE_DIR) +
                                 "/data/mnist10k/images-idx3-ubyte.gz --labels " + NT_SOURCE_DIR +
                                 "/data/mnist10k/labels-idx1-ubyte.gz --out " + data + " --size 8",
                             &out);
  EXPECT_EQ(rc, 0) << out;
  s.config = s.dir + "/c.toml";
  std::ofstream f(s.config);
  // patch_size 1 on one channel with width 36: the root unit holds an odd number of
  // parameters, not divisible by 3 either, so the shards are padded.
  f << "[run]\nname = \"w\"\ndir = \"" << s.dir << "/runs\"\nseed = 3\n"
    << "[model]\nname = \"DiT-S/2\"\ninput_size = 8\nin_channels = 1\nnum_classes = 10\n"
    << "depth = 3\nhidden_size = 36\nnum_heads = 2\npatch_size = 1\n"
    << "[[model.routes]]\nselection_ratio = 0.5\nstart_layer = 1\nend_layer = 1\n"
    << "[diffusion]\nclass_drop_prob = 0.25\n"
    << "[data]\npaths = [\"" << data << "\"]\n"
    << "[train]\nglobal_batch = 12\nsteps = 10\nprecision = \"fp32\"\ngrad_clip = 0.5\nlog_every = 1\n"
    << "device = \"cpu\"\nthreads = 1\n"
    << "[optim]\nlr = 2e-3\nwarmup_steps = 2\nweight_decay = 0.01\n"
    << "[ema]\ndecay = 0.9\n"
    << "[checkpoint]\nevery = 5\nkeep_last = 10\nkeep_every = 0\n";
  return s;
}

// Runs tread_run on `ranks` processes with extra --set options; returns the exit code.
int run(const RunSetup& s, int ranks, const std::string& sets, std::string* out) {
  return run_command(std::string(kMpiEnv) + "mpiexec --oversubscribe -n " + std::to_string(ranks) + " " +
                         exe("launch/tread_run") + " --config " + s.config + " " + sets,
                     out);
}

std::map<std::string, at::Tensor> tensors(const std::string& ckpt, const std::string& kind) {
  auto m = nt::read_verified_manifest(ckpt);
  return nt::load_full_tensors(ckpt, m, kind);
}

// The key third of attn.qkv.bias has an exactly zero gradient (softmax is invariant to adding
// the same value to every key's logit): its values are accumulated rounding noise (about 1e-7),
// so a relative comparison means nothing. It is compared on its own, to 1e-5 absolute; every
// other tensor to 1e-5 relative.
bool is_key_bias(const std::string& name) {
  return name.size() > 14 && name.compare(name.size() - 14, 14, ".attn.qkv.bias") == 0;
}

// Largest relative difference over the tensors: max|a-b| / max|b| per tensor (for qkv.bias, the
// query and value thirds; the key third's largest absolute difference goes to *key_bias_diff).
double max_rel_diff(const std::string& a, const std::string& b, const std::string& kind,
                    double* key_bias_diff = nullptr) {
  auto ta = tensors(a, kind), tb = tensors(b, kind);
  EXPECT_EQ(ta.size(), tb.size());
  double worst = 0, worst_key = 0;
  auto rel = [](const at::Tensor& x, const at::Tensor& y) {
    return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-12);
  };
  for (const auto& [name, t] : tb) {
    const at::Tensor& u = ta.at(name);
    if (is_key_bias(name)) {
      const int64_t d = t.size(0) / 3;
      worst = std::max(worst, rel(at::cat({u.narrow(0, 0, d), u.narrow(0, 2 * d, d)}),
                                  at::cat({t.narrow(0, 0, d), t.narrow(0, 2 * d, d)})));
      worst_key = std::max(worst_key, (u.narrow(0, d, d) - t.narrow(0, d, d)).abs().max().item<double>());
    } else {
      worst = std::max(worst, rel(u, t));
    }
  }
  if (key_bias_diff) *key_bias_diff = worst_key;
  return worst;
}

bool bit_equal(const std::string& a, const std::string& b, const std::string& kind) {
  auto ta = tensors(a, kind), tb = tensors(b, kind);
  for (const auto& [name, t] : tb)
    if (!torch::equal(ta.at(name), t)) return false;
  return ta.size() == tb.size();
}

std::string ckpt(const RunSetup& s, const std::string& name, int step) {
  return s.dir + "/runs/" + name + "/ckpt/" + nt::checkpoint_name(step);
}

TEST(Distributed, OneTwoAndThreeRanksTrainTheSameModel) {
  RunSetup s = make_setup();
  std::string out;
  for (int w : {1, 2, 3}) {
    ASSERT_EQ(run(s, w, "--set run.name=w" + std::to_string(w), &out), 0) << out;
    EXPECT_EQ(nt::read_verified_manifest(ckpt(s, "w" + std::to_string(w), 10)).at("world_size").get<int>(), w);
  }
  for (int w : {2, 3})
    for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"}) {
      double key = 0;
      const double d = max_rel_diff(ckpt(s, "w" + std::to_string(w), 10), ckpt(s, "w1", 10), kind, &key);
      std::cout << "[ dist     ] W=" << w << " " << kind << ": max relative difference " << d
                << " (key biases " << key << ")\n";
      EXPECT_LE(d, 1e-5) << "W=" << w << " " << kind;
      EXPECT_LE(key, 1e-5) << "W=" << w << " " << kind << " key biases";
    }
  // The check can fail: another seed trains another model.
  ASSERT_EQ(run(s, 1, "--set run.name=other --set run.seed=4", &out), 0) << out;
  EXPECT_GT(max_rel_diff(ckpt(s, "other", 10), ckpt(s, "w1", 10), "param"), 1e-3);
}

TEST(Distributed, ResumeOnAnotherWorldSizeAndBitExactOnTheSame) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run(s, 2, "--set run.name=full", &out), 0) << out;
  // Stopped at step 5 on 2 ranks, then resumed on 3 (and, separately, on 2) to step 10.
  for (int w : {3, 2}) {
    const std::string name = "part" + std::to_string(w);
    ASSERT_EQ(run(s, 2, "--set run.name=" + name + " --set train.steps=5", &out), 0) << out;
    ASSERT_EQ(run(s, w, "--set run.name=" + name, &out), 0) << out;
    EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
  }
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"}) {
    double key = 0;
    const double d = max_rel_diff(ckpt(s, "part3", 10), ckpt(s, "full", 10), kind, &key);
    std::cout << "[ dist     ] 2 -> 3 ranks " << kind << ": max relative difference " << d << " (key biases "
              << key << ")\n";
    EXPECT_LE(d, 1e-5) << kind;
    EXPECT_LE(key, 1e-5) << kind << " key biases";
    EXPECT_TRUE(bit_equal(ckpt(s, "part2", 10), ckpt(s, "full", 10), kind)) << kind;
  }
}

TEST(Distributed, EvaluationRankWaitsAndEveryRankExits) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run(s, 3, "--set run.name=ev --set eval.ranks=1", &out), 0) << out;
  EXPECT_EQ(nt::read_verified_manifest(ckpt(s, "ev", 10)).at("world_size").get<int>(), 2);
  EXPECT_NE(out.find("evaluation ranks have no work yet"), std::string::npos) << out;
  // eval.ranks must leave a trainer.
  EXPECT_NE(run(s, 2, "--set run.name=bad --set eval.ranks=2", &out), 0);
  EXPECT_NE(out.find("eval"), std::string::npos) << out;
}

TEST(Distributed, AFailingRankEndsTheJob) {
  RunSetup s = make_setup();
  std::string out;
  // A global batch that 3 ranks cannot split: every rank fails at once; the job ends (no hang).
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(run(s, 3, "--set run.name=f --set train.global_batch=8", &out), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
  EXPECT_NE(out.find("not divisible by the 3 trainer ranks"), std::string::npos) << out;
}

// train.rank_metrics: each trainer rank writes its own JSONL; the ranks' local losses average to
// the global loss rank 0 logs.
TEST(Distributed, EveryRankWritesItsOwnMetrics) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run(s, 2, "--set run.name=rm --set train.rank_metrics=true", &out), 0) << out;
  auto lines = [](const std::string& path) {
    std::vector<nlohmann::json> v;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
    return v;
  };
  const std::string dir = s.dir + "/runs/rm/";
  auto global = lines(dir + "metrics.jsonl"), r0 = lines(dir + "metrics.rank0.jsonl"),
       r1 = lines(dir + "metrics.rank1.jsonl");
  ASSERT_EQ(global.size(), 10u);
  ASSERT_EQ(r0.size(), 10u);
  ASSERT_EQ(r1.size(), 10u);
  for (size_t i = 0; i < global.size(); ++i) {
    EXPECT_EQ(r1[i].at("rank").get<int>(), 1);
    EXPECT_EQ(r0[i].at("step"), global[i].at("step"));
    const double mean = 0.5 * (r0[i].at("local_loss").get<double>() + r1[i].at("local_loss").get<double>());
    EXPECT_NEAR(mean, global[i].at("loss").get<double>(), 1e-9) << "step " << i + 1;
    EXPECT_NE(r0[i].at("local_loss").get<double>(), r1[i].at("local_loss").get<double>());
  }
  EXPECT_FALSE(fs::exists(s.dir + "/runs/w/metrics.rank0.jsonl"));
}

}  // namespace
