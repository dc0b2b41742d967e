// train.micro_batch, through tread_run (the fixture of run_fixture.h: batch 12, 10 steps, a TREAD
// route, class dropout, clipping): each rank's share of the global batch goes through forward and
// backward a micro-batch at a time and the gradients accumulate. Micro-batches on 1, 2 and 3
// ranks, with and without resharding, train what one batch on one rank trains, to 1e-5 per tensor
// (every micro-batch draws the step's randomness for the whole global batch and keeps its rows);
// a micro-batch of a rank's whole share changes no bit, nor does recomputing blocks in backward; a
// run resumes bit for bit, and may change its micro-batch when it resumes; a micro-batch that does
// not divide a rank's share is refused before anything is written.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "launch/run_fixture.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using namespace nt::test;

const char* const kKinds[] = {"param", "ema", "exp_avg", "exp_avg_sq"};

void expect_close(const RunSetup& s, const std::string& name, const std::string& reference) {
  for (const char* kind : kKinds) {
    double key = 0;
    const double d = max_rel_diff(ckpt(s, name, 10), ckpt(s, reference, 10), kind, &key);
    std::cout << "[ micro    ] " << name << " " << kind << ": max relative difference " << d << " (key biases " << key
              << ")\n";
    EXPECT_LE(d, 1e-5) << name << " " << kind;
    EXPECT_LE(key, 1e-5) << name << " " << kind << " key biases";
  }
}

// The "loss" of every line of a metrics.jsonl.
std::vector<double> losses(const std::string& path) {
  std::vector<double> v;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  return v;
}

TEST(MicroBatches, AccumulateToWhatOneBatchTrains) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run_single(s, "--set run.name=whole", &out), 0) << out;
  EXPECT_LACKS(out, "micro-batches");
  ASSERT_EQ(run_single(s, "--set run.name=m4 --set train.micro_batch=4", &out), 0) << out;
  EXPECT_CONTAINS(out, "3 micro-batches of 4 images per rank and step (train.micro_batch)");
  expect_close(s, "m4", "whole");
  // 2 ranks of 6 rows in 3 micro-batches, blocks gathered for each forward and backward; without
  // resharding; 3 ranks of 4 rows in micro-batches of one.
  ASSERT_EQ(run(s, 2, "--set run.name=w2m2 --set train.micro_batch=2 --set dist.reshard_after_forward=true", &out), 0)
      << out;
  EXPECT_CONTAINS(out, "3 micro-batches of 2 images per rank and step");
  expect_close(s, "w2m2", "whole");
  // Recomputing whole blocks in backward (their parameters gathered again) changes no bit.
  ASSERT_EQ(run(s, 2, "--set run.name=w2m2r --set train.micro_batch=2 --set train.recompute=blocks", &out), 0) << out;
  for (const char* kind : kKinds) EXPECT_TRUE(bit_equal(ckpt(s, "w2m2r", 10), ckpt(s, "w2m2", 10), kind)) << kind;
  ASSERT_EQ(run(s, 2, "--set run.name=w2m3 --set train.micro_batch=3 --set dist.reshard_after_forward=false", &out),
            0)
      << out;
  expect_close(s, "w2m3", "whole");
  ASSERT_EQ(run(s, 3, "--set run.name=w3m1 --set train.micro_batch=1", &out), 0) << out;
  expect_close(s, "w3m1", "whole");
  // A rank's whole share (or more) is one batch: the same code, bit for bit.
  ASSERT_EQ(run_single(s, "--set run.name=m12 --set train.micro_batch=64", &out), 0) << out;
  EXPECT_LACKS(out, "micro-batches");
  for (const char* kind : kKinds) EXPECT_TRUE(bit_equal(ckpt(s, "m12", 10), ckpt(s, "whole", 10), kind)) << kind;
  // The logged loss is the global batch's mean loss.
  const auto whole = losses(s.dir + "/runs/whole/metrics.jsonl"), m4 = losses(s.dir + "/runs/m4/metrics.jsonl"),
             w2m2 = losses(s.dir + "/runs/w2m2/metrics.jsonl");
  ASSERT_EQ(whole.size(), 10u);
  ASSERT_EQ(m4.size(), whole.size());
  ASSERT_EQ(w2m2.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_NEAR(m4[i], whole[i], 1e-5 * whole[i]) << "step " << i + 1;
    EXPECT_NEAR(w2m2[i], whole[i], 1e-5 * whole[i]) << "step " << i + 1;
  }
}

TEST(MicroBatches, ResumeIsBitExactAndMayChangeTheMicroBatch) {
  RunSetup s = make_setup();
  std::string out;
  const std::string m2 = " --set train.micro_batch=2";
  ASSERT_EQ(run(s, 2, "--set run.name=full" + m2, &out), 0) << out;
  ASSERT_EQ(run(s, 2, "--set run.name=part --set train.steps=5" + m2, &out), 0) << out;
  ASSERT_EQ(run(s, 2, "--set run.name=part" + m2, &out), 0) << out;
  EXPECT_CONTAINS(out, "resumed from");
  for (const char* kind : kKinds) EXPECT_TRUE(bit_equal(ckpt(s, "part", 10), ckpt(s, "full", 10), kind)) << kind;
  // Stopped with micro-batches of 2, resumed with whole shares: the same training, to rounding.
  ASSERT_EQ(run(s, 2, "--set run.name=switch --set train.steps=5" + m2, &out), 0) << out;
  ASSERT_EQ(run(s, 2, "--set run.name=switch", &out), 0) << out;
  expect_close(s, "switch", "full");
}

TEST(MicroBatches, OneThatDoesNotDivideARanksShareIsRefused) {
  RunSetup s = make_setup();
  std::string out;
  EXPECT_EQ(run_single(s, "--set run.name=bad --set train.micro_batch=5", &out), 1) << out;
  EXPECT_CONTAINS(out, "train.micro_batch = 5 does not divide the 12 images each of the 1 trainer rank(s) takes per "
                       "step (train.global_batch = 12); use a divisor of 12, or 0 for no micro-batches");
  // On 2 ranks a share is 6 rows: 4 divides the global batch but not the share.
  EXPECT_NE(run(s, 2, "--set run.name=bad2 --set train.micro_batch=4", &out), 0) << out;
  EXPECT_CONTAINS(out, "does not divide the 6 images each of the 2 trainer rank(s)");
  for (const char* name : {"bad", "bad2"}) {
    EXPECT_FALSE(fs::exists(s.dir + "/runs/" + name + "/config.toml")) << name;
    EXPECT_FALSE(fs::exists(s.dir + "/runs/" + name + "/ckpt/latest")) << name;
  }
  // A negative one is a config error that names the key.
  EXPECT_EQ(run_single(s, "--set run.name=neg --set train.micro_batch=-1", &out), 1) << out;
  EXPECT_CONTAINS(out, "key 'train.micro_batch' must be >= 0");
}

}  // namespace
