// The evaluation ranks under mpiexec, end to end through tread_run: trainer rank 0 publishes
// checkpoints, the evaluator scores the newest one not yet scored (skipping stale ones) and
// the final one, writes "kind": "eval" lines and grids, and training never waits for it; two
// evaluators split the seeds and give the FID of one, also with stochastic sampling; a stop signal ends trainers and
// evaluators with exit code 0; bad evaluation settings end the job.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "launch/run_fixture.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using namespace nt::test;

// Checkpoints every 2 of 10 steps; one evaluation (256 samples, 8 Heun steps) takes far longer
// than the whole training, so the evaluator falls behind: it must skip to the newest checkpoint
// and end with the final one, and training must finish long before the first evaluation does.
TEST(EvalRank, PublishScoreSkipStaleAndFinal) {
  RunSetup s = make_setup();
  add_eval(s, 256, 8);
  std::string out;
  ASSERT_EQ(run(s, 2, "--set run.name=e --set eval.ranks=1 --set checkpoint.every=2", &out), 0) << out;
  const auto evals = metrics(s, "e", true), train = metrics(s, "e", false);
  ASSERT_FALSE(evals.empty()) << out;
  ASSERT_EQ(train.size(), 10u);
  std::set<int64_t> ckpts{2, 4, 6, 8, 10};
  int64_t prev = 0;
  for (const auto& e : evals) {
    const int64_t step = e.at("step").get<int64_t>();
    EXPECT_TRUE(ckpts.count(step)) << e.dump();
    EXPECT_GT(step, prev) << "each evaluation is of a newer checkpoint";
    prev = step;
    EXPECT_EQ(e.at("extractor").get<std::string>(), "classifier");
    EXPECT_EQ(e.at("num_samples").get<int64_t>(), 256);
    EXPECT_EQ(e.at("cfg_scale").get<double>(), 1.0);
    EXPECT_TRUE(std::isfinite(e.at("fid").get<double>()));
    EXPECT_TRUE(fs::exists(s.dir + "/runs/e/samples/eval_step_" + std::string(8 - std::to_string(step).size(), '0') +
                           std::to_string(step) + ".png"));
  }
  EXPECT_EQ(evals.back().at("step").get<int64_t>(), 10) << "the final checkpoint is scored";
  EXPECT_LT(evals.size(), 5u) << "a slow evaluator skips stale checkpoints";
  EXPECT_CONTAINS(out, "evaluator skips step(s)");
  EXPECT_CONTAINS(out, "evaluator done: training ended at step 10");
  // Training never waited: all 10 steps took less time than the first evaluation alone.
  const double train_s = train.back().at("elapsed_s").get<double>();
  const double eval_s = evals.front().at("seconds").get<double>();
  std::cout << "[ eval     ] training took " << train_s << " s; the first evaluation " << eval_s << " s; "
            << evals.size() << " of 5 checkpoints scored\n";
  EXPECT_LT(train_s, eval_s);
}

// Two evaluators split the seeds and all-reduce float64 sums: the FID of the final checkpoint
// equals the one-evaluator FID (same training, one trainer each).
TEST(EvalRank, TwoEvaluatorsGiveTheFidOfOne) {
  RunSetup s = make_setup();
  add_eval(s, 96, 4);
  std::string out;
  ASSERT_EQ(run(s, 2, "--set run.name=one --set eval.ranks=1", &out), 0) << out;
  ASSERT_EQ(run(s, 3, "--set run.name=two --set eval.ranks=2", &out), 0) << out;
  EXPECT_CONTAINS(out, "on 2 evaluator(s)");
  const auto a = metrics(s, "one", true), b = metrics(s, "two", true);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  ASSERT_EQ(a.back().at("step").get<int64_t>(), 10);
  ASSERT_EQ(b.back().at("step").get<int64_t>(), 10);
  const double fa = a.back().at("fid").get<double>(), fb = b.back().at("fid").get<double>();
  std::cout << "[ eval     ] final FID, 1 evaluator: " << fa << ", 2 evaluators: " << fb << "\n";
  EXPECT_NEAR(fb, fa, 1e-6 * fa);
  EXPECT_EQ(b.back().at("num_samples").get<int64_t>(), 96);
  EXPECT_EQ(b.back().at("S_churn").get<double>(), 0.0);
  // Stochastic sampling (eval.S_churn) on two evaluators: recorded in the line, and the FID that
  // fid_worker gives the same checkpoint alone (its settings from the checkpoint's config).
  ASSERT_EQ(run(s, 3, "--set run.name=churn --set eval.ranks=2 --set eval.S_churn=0.7", &out), 0) << out;
  const auto c = metrics(s, "churn", true);
  ASSERT_FALSE(c.empty());
  ASSERT_EQ(c.back().at("step").get<int64_t>(), 10);
  EXPECT_EQ(c.back().at("S_churn").get<double>(), 0.7);
  const double fc = c.back().at("fid").get<double>();
  EXPECT_GT(std::abs(fc - fa), 1e-6 * fa) << "S_churn changes the samples";
  std::string alone;
  ASSERT_EQ(run_command(exe("eval/fid_worker") + " --checkpoint " + ckpt(s, "churn", 10), &alone), 0) << alone;
  const std::string last = alone.substr(alone.rfind("fid: "));
  std::cout << "[ eval     ] final FID with S_churn 0.7, 2 evaluators: " << fc << ", fid_worker alone: " << last << "\n";
  EXPECT_NEAR(std::stod(last.substr(5)), fc, 1e-6 * fc);
  EXPECT_TRUE(fs::exists(s.dir + "/runs/churn/samples/eval_step_00000010_churn0.7.png"));
}

// SIGUSR1 (Slurm's warning before a time limit; mpiexec forwards it) stops the trainers at a
// checkpoint and the evaluator too, in the middle of an evaluation if need be; the job exits 0.
TEST(EvalRank, StopSignalEndsTrainersAndEvaluators) {
  RunSetup s = make_setup();
  add_eval(s, 2000, 18);  // each evaluation takes seconds: the signal finds it busy
  const std::string log = s.dir + "/sig.log";
  const std::string job = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpiexec --oversubscribe -n 2 " +
                          exe("launch/tread_run") + " --config " + s.config +
                          " --set run.name=sig --set eval.ranks=1 --set train.steps=1000000 --set checkpoint.every=20";
  // Start the job, wait for its first checkpoint, then signal mpiexec and wait for the job.
  const std::string script = "(" + job + ") > " + log + " 2>&1 & pid=$!; "
                             "for i in $(seq 600); do [ -e " + s.dir + "/runs/sig/ckpt/latest ] && break; sleep 0.1; done; "
                             "sleep 1; kill -USR1 $pid; wait $pid";
  std::string out;
  const int rc = run_command("bash -c '" + script + "'", &out);
  const std::string text = read_text(log);
  EXPECT_EQ(rc, 0) << out << text;
  EXPECT_CONTAINS(text, "stopped by signal 10");
  EXPECT_CONTAINS(text, "evaluator stopped");
  EXPECT_LACKS(text, "fatal");
}

TEST(EvalRank, BadSettingsEndTheJob) {
  RunSetup s = make_setup();
  std::string out;
  // No reference statistics: the evaluator refuses at once and the job ends (no hang).
  EXPECT_NE(run(s, 2, "--set run.name=noref --set eval.ranks=1", &out), 0);
  EXPECT_CONTAINS(out, "eval.ref_stats");
  add_eval(s, 16, 2);
  EXPECT_NE(run(s, 2, "--set run.name=badref --set eval.ranks=1 --set eval.ref_stats=" + s.dir + "/none.npz", &out), 0);
  EXPECT_CONTAINS(out, "none.npz");
  EXPECT_NE(run(s, 2, "--set run.name=nocls --set eval.ranks=1 --set eval.extractor_weights=" + s.dir + "/no.safetensors",
                &out),
            0);
  EXPECT_CONTAINS(out, "no.safetensors");
  EXPECT_NE(run(s, 2, "--set run.name=fewseeds --set eval.ranks=1 --set eval.num_samples=20000", &out), 0);
  EXPECT_CONTAINS(out, "eval.seeds");
}

}  // namespace
