// Data-parallel training with sharded optimizer state, through tread_run under mpiexec:
// W = 1, 2, 3 trainer ranks train the same model (TREAD route, class dropout, clipping, a
// parameter count not divisible by 2 or 3) to within 1e-5 per tensor; a run stopped on 2 ranks
// and resumed on 3 ends within 1e-5 of the uninterrupted run, and resumed on 2 bit for bit; the
// evaluation ranks are the last ones; without clipping, 2 ranks log (summing over the ranks only
// when they log or checkpoint) the losses and gradient norms 1 rank logs. Every tensor is
// compared to 1e-5 relative, except the key third of attn.qkv.bias (see run_fixture.h), to 1e-5
// absolute.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "dist/sharded_checkpoint.h"
#include "launch/run_fixture.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using namespace nt::test;

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

// Without clipping the ranks sum their losses and squared gradient norms only when the loop logs
// or checkpoints (launch/trainer.cpp, StepLog): intervals of 3 steps with checkpoints every 4, so
// that a checkpoint's sum falls inside an interval. The logged mean losses and norms of 2 ranks
// are 1 rank's (to the models' own agreement).
TEST(Distributed, WithoutClippingTwoRanksLogOneRanksLossesAndNorms) {
  RunSetup s = make_setup();
  std::string out;
  const std::string sets = " --set train.grad_clip=0 --set train.log_every=3 --set checkpoint.every=4";
  ASSERT_EQ(run(s, 1, "--set run.name=c1" + sets, &out), 0) << out;
  ASSERT_EQ(run(s, 2, "--set run.name=c2" + sets, &out), 0) << out;
  const auto one = metrics(s, "c1"), two = metrics(s, "c2");
  ASSERT_EQ(one.size(), 4u);  // steps 3, 6, 9, 10
  ASSERT_EQ(two.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(two[i].at("step"), one[i].at("step"));
    for (const char* key : {"loss", "grad_norm"}) {
      const double a = one[i].at(key).get<double>(), b = two[i].at(key).get<double>();
      std::cout << "[ dist     ] step " << one[i].at("step") << " " << key << ": 1 rank " << a << ", 2 ranks " << b
                << "\n";
      EXPECT_NEAR(b, a, 1e-5 * std::abs(a)) << key << " at step " << one[i].at("step");
    }
  }
}

// dist.reshard_after_forward releases each block's gathered parameters after its forward and
// gathers them again for its backward: the same numbers as keeping them, bit for bit.
TEST(Distributed, ReshardAfterForwardChangesNothingButMemory) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run(s, 2, "--set run.name=keep --set dist.reshard_after_forward=false", &out), 0) << out;
  EXPECT_LACKS(out, "reshard_after_forward)");
  ASSERT_EQ(run(s, 2, "--set run.name=reshard --set dist.reshard_after_forward=true", &out), 0) << out;
  EXPECT_CONTAINS(out, "two blocks");  // the memory line: shard + root + at most two blocks
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"})
    EXPECT_TRUE(bit_equal(ckpt(s, "reshard", 10), ckpt(s, "keep", 10), kind)) << kind;
}

// train.recompute keeps fewer activations and recomputes them in backward: the same numbers as
// keeping them, bit for bit, also with blocks gathered and released around their recomputation.
TEST(Distributed, RecomputeChangesNothingButMemory) {
  RunSetup s = make_setup();
  std::string out;
  for (const char* mode : {"none", "norm", "norm+mlp", "blocks"})
    ASSERT_EQ(run(s, 2, std::string("--set run.name=") + mode + " --set train.recompute=" + mode, &out), 0) << out;
  for (const char* mode : {"norm", "norm+mlp", "blocks"})
    for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"})
      EXPECT_TRUE(bit_equal(ckpt(s, mode, 10), ckpt(s, "none", 10), kind)) << mode << " " << kind;
}

// train.fused_kernels asks for the own CUDA kernels and train.fused_mlp for the cuBLASLt
// products; on the CPU neither applies: the log says so and the run trains what it trains
// without them (fused_mlp's one node runs LibTorch's ops, bit for bit those of the plain MLP).
TEST(Distributed, FusedKernelsAndMlpOnTheCpuSaySoAndChangeNothing) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run_single(s, "--set run.name=ops", &out), 0) << out;
  EXPECT_LACKS(out, "train.fused_kernels:");
  EXPECT_LACKS(out, "train.fused_mlp:");
  ASSERT_EQ(run_single(s, "--set run.name=fused --set train.fused_kernels=true", &out), 0) << out;
  EXPECT_CONTAINS(out, "train.fused_kernels: the kernels run on CUDA; this run is on cpu; LibTorch's ops run instead");
  ASSERT_EQ(run_single(s, "--set run.name=mlp --set train.fused_mlp=true", &out), 0) << out;
  EXPECT_CONTAINS(out, "train.fused_mlp: the cuBLASLt products serve bf16 compute on CUDA; this run computes in fp32 "
                       "on cpu; each MLP runs LibTorch's ops in one node");
  ASSERT_EQ(run_single(s, "--set run.name=attn --set train.attention=flash", &out), 0) << out;
  EXPECT_CONTAINS(out, "train.attention = \"flash\": it chooses CUDA kernels; this run is on cpu; its attention runs as "
                       "it would with \"auto\"");
  for (const char* run : {"fused", "mlp", "attn"})
    for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"})
      EXPECT_TRUE(bit_equal(ckpt(s, run, 10), ckpt(s, "ops", 10), kind)) << run << " " << kind;
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

// Resuming, each rank checks the digests of the files it reads (no rank hashes the whole
// checkpoint): a file only rank 1 reads, corrupted, makes rank 1 refuse the checkpoint, and every
// rank falls back to the previous one together (on 2 ranks and on 3); named explicitly, the same
// folder is an error.
TEST(Distributed, ACheckpointAnyRankRefusesIsPassedOverByAll) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run(s, 2, "--set run.name=c --set train.steps=10", &out), 0) << out;
  const std::string bad = ckpt(s, "c", 10) + "/" + nt::rank_file_name(1);
  {
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  fs::copy(s.dir + "/runs/c", s.dir + "/runs/c3", fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  fs::copy(ckpt(s, "c", 10), s.dir + "/bad10", fs::copy_options::recursive);
  ASSERT_EQ(run(s, 2, "--set run.name=c --set train.steps=12", &out), 0) << out;
  EXPECT_CONTAINS(out, "[rank 1] warning: checkpoint file '" + bad + "' is corrupted (SHA-256 mismatch); falling back");
  EXPECT_CONTAINS(out, "resumed from " + ckpt(s, "c", 5) + " at step 5 on 2 trainer ranks");
  ASSERT_EQ(run(s, 3, "--set run.name=c3 --set train.steps=12", &out), 0) << out;
  EXPECT_CONTAINS(out, "is corrupted (SHA-256 mismatch); falling back");
  EXPECT_CONTAINS(out, "resumed from " + ckpt(s, "c3", 5) + " at step 5 on 3 trainer ranks");
  // The run that fell back trained steps 6..10 again: what the uninterrupted run trained.
  ASSERT_EQ(run(s, 2, "--set run.name=ref --set train.steps=12", &out), 0) << out;
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"})
    EXPECT_TRUE(bit_equal(ckpt(s, "c", 12), ckpt(s, "ref", 12), kind)) << kind;
  // Named explicitly: an error on every rank, no fresh start.
  EXPECT_NE(run(s, 2, "--set run.name=x --set checkpoint.resume=" + s.dir + "/bad10", &out), 0) << out;
  EXPECT_CONTAINS(out, "rank_00001.safetensors' is corrupted");
  EXPECT_FALSE(fs::exists(s.dir + "/runs/x/ckpt/latest"));
}

// The last eval.ranks ranks evaluate (tests/launch/test_eval_rank.cpp): the trainers are the
// others, and eval.ranks must leave at least one.
TEST(Distributed, EvaluationRanksAreTheLastAndLeaveATrainer) {
  RunSetup s = make_setup();
  add_eval(s, 16, 2);
  std::string out;
  ASSERT_EQ(run(s, 3, "--set run.name=ev --set eval.ranks=1", &out), 0) << out;
  EXPECT_EQ(nt::read_verified_manifest(ckpt(s, "ev", 10)).at("world_size").get<int>(), 2);
  EXPECT_CONTAINS(out, "[rank 2] evaluator ready");
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
