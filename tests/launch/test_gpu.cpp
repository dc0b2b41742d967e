// The CUDA training path, through tread_run (skipped without a CUDA device, i.e. in CI; run on
// the GPU machine by scripts/gpu-check):
//   - a CUDA run in fp32 trains what the CPU run trains (the same draws: training randomness is
//     drawn on the CPU), to fp32 tolerance per tensor after 3 steps, also in micro-batches;
//   - bf16 autocast and fp32 loss curves agree over 50 steps;
//   - gathering the parameters in bf16 (dist.param_dtype) trains what fp32 parameters under
//     autocast train: autocast rounds the same weights to bf16, and the blocks outside autocast
//     and the root stay fp32 (the same first loss; the states as close as a rerun's, see
//     expect_within_rerun_noise); in micro-batches, the same losses to 2 %;
//   - the fused kernels (train.fused_kernels: LayerNorm + modulate, gated residual) train what LibTorch's ops
//     train: to fp32 tolerance after 3 fp32 steps, and the same bf16 losses to 2 %; without
//     clipping, the gradient norm the fused run logs (computed when it logs, after its update in
//     place) is the norm LibTorch's ops log (computed within the step), to 1e-4;
//   - recomputation (train.recompute = norm+mlp: models/modulated_linear, models/gelu_linear)
//     trains under bf16 autocast what keeping the activations trains (as close as a rerun), with
//     LibTorch's ops and with the fused kernels (there, as close as the fused kernels are to
//     LibTorch's ops: the two modes run different kernels);
//   - the MLP with the GELU in its products' cuBLASLt epilogues (train.fused_mlp,
//     models/gelu_mlp) trains under bf16 autocast what the plain MLP trains: the same losses to
//     2 %, keeping or recomputing the GELU output (and the norm before it);
//   - parameter gradients added into their buffers in place (train.weight_grads_in_place: the
//     weight-gradient products' and the fused kernels' bias sums) log the gradient norm autograd's
//     adds log, in one batch and in micro-batches;
//   - sampling on CUDA (tread_sample --device cuda) draws each seed's latent and class as
//     PyTorch's CUDA generators do, and a sample does not depend on the batching.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "data/sample_file.h"
#include "launch/run_fixture.h"
#include "models/edm.h"
#include "test_util.h"

namespace {

using namespace nt::test;

// A logged quantity ("loss", "grad_norm") of each training-step record of run `name`.
std::vector<double> logged(const RunSetup& s, const std::string& name, const char* key = "loss") {
  std::vector<double> v;
  for (const auto& j : metrics(s, name))
    if (j.contains(key)) v.push_back(j.at(key).get<double>());
  return v;
}

// Two checkpoints of 3 fp32 steps that differ only by rounding: every tensor to 1e-4 relative.
// The key biases' gradients are rounding noise of either sign: AdamW moves them by up to about lr
// per step (lr 2e-3, warm-up 2 steps) whichever way the noise points, so in the parameters and
// the EMA they are held to 1.2e-2 absolute.
void expect_fp32_close(const std::string& a, const std::string& b, const std::string& what) {
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"}) {
    double key = 0;
    const double d = max_rel_diff(a, b, kind, &key);
    std::cout << "[ gpu      ] " << what << ", " << kind << ": max relative difference " << d << " (key biases "
              << key << ")\n";
    EXPECT_LE(d, 1e-4) << what << " " << kind;
    if (std::string(kind) == "param" || std::string(kind) == "ema") {
      EXPECT_LE(key, 1.2e-2) << what << " " << kind;
    }
  }
}

// What two configurations that compute the same thing under bf16 autocast can agree to on a GPU.
// Kernels that add in a nondeterministic order (the attention's backward accumulates dQ with
// atomics) make two runs of one configuration differ by bf16 roundings, which AdamW turns into
// visible relative differences of near-zero parameters after a few steps. So `a_again`, the
// configuration of `a` run again, measures that noise: `b` may differ from `a` by no more than 4
// times as much (a margin for the maximum of noise), and by at most `tol` where runs repeat
// exactly. Their first losses (the forward alone, before any update) must agree to 1e-4 (kernels
// chosen for other operand addresses may round a few bf16 outputs the other way). `other_sums`
// (optional): a configuration that computes what `a` computes with other kernels, summing in other
// orders; where `b` necessarily sums in other orders than `a` too, it may differ from `a` as far as
// `other_sums` does.
void expect_within_rerun_noise(const RunSetup& s, const std::string& a, const std::string& a_again,
                               const std::string& b, int step, double tol, const std::string& what,
                               const std::string& other_sums = "") {
  const auto la = logged(s, a), lb = logged(s, b);
  ASSERT_FALSE(la.empty());
  ASSERT_FALSE(lb.empty());
  std::cout << "[ gpu      ] " << what << ": first loss " << lb[0] << " vs " << la[0] << "\n";
  EXPECT_NEAR(lb[0], la[0], 1e-4 * la[0]) << what << ": the forwards differ";
  for (const char* kind : {"param", "ema", "exp_avg", "exp_avg_sq"}) {
    const double d = max_rel_diff(ckpt(s, b, step), ckpt(s, a, step), kind);
    const double noise = max_rel_diff(ckpt(s, a_again, step), ckpt(s, a, step), kind);
    const double sums = other_sums.empty() ? 0.0 : max_rel_diff(ckpt(s, other_sums, step), ckpt(s, a, step), kind);
    std::cout << "[ gpu      ] " << what << ", " << kind << ": max relative difference " << d
              << (bit_equal(ckpt(s, b, step), ckpt(s, a, step), kind) ? " (bit for bit)" : "") << "; rerun of "
              << a << ": " << noise;
    if (!other_sums.empty()) std::cout << "; " << other_sums << ": " << sums;
    std::cout << "\n";
    EXPECT_LE(d, std::max({tol, 4 * noise, sums})) << what << " " << kind;
  }
}

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(Gpu, CudaStepEqualsCpuStep) {
  RunSetup s = make_setup();
  std::string out;
  const std::string common = " --set train.steps=3 --set checkpoint.every=3 --set train.precision=fp32";
  ASSERT_EQ(run_single(s, "--set run.name=cpu --set train.device=cpu" + common, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=cuda --set train.device=cuda" + common, &out), 0) << out;
  EXPECT_CONTAINS(out, "device cuda");
  const auto lc = logged(s, "cpu"), lg = logged(s, "cuda");
  ASSERT_EQ(lc.size(), 3u);
  ASSERT_EQ(lg.size(), 3u);
  for (size_t i = 0; i < lc.size(); ++i) {
    std::cout << "[ gpu      ] step " << i + 1 << " loss cpu " << lc[i] << " cuda " << lg[i] << "\n";
    EXPECT_NEAR(lg[i], lc[i], 1e-5 * std::abs(lc[i])) << "step " << i + 1;
  }
  expect_fp32_close(ckpt(s, "cuda", 3), ckpt(s, "cpu", 3), "cuda vs cpu");
  // Micro-batches (train.micro_batch) on CUDA: gradients accumulated over 3 micro-batches of 4.
  ASSERT_EQ(run_single(s, "--set run.name=micro --set train.device=cuda --set train.micro_batch=4" + common, &out), 0)
      << out;
  EXPECT_CONTAINS(out, "3 micro-batches of 4 images");
  expect_fp32_close(ckpt(s, "micro", 3), ckpt(s, "cpu", 3), "cuda micro-batches vs cpu");
}

TEST_F(Gpu, Bf16AndFp32LossCurvesAgree) {
  RunSetup s = make_setup();
  std::string out;
  const std::string common = " --set train.device=cuda --set train.steps=50 --set checkpoint.every=50";
  ASSERT_EQ(run_single(s, "--set run.name=fp32 --set train.precision=fp32" + common, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=bf16 --set train.precision=bf16" + common, &out), 0) << out;
  const auto a = logged(s, "fp32"), b = logged(s, "bf16");
  ASSERT_EQ(a.size(), 50u);
  ASSERT_EQ(b.size(), 50u);
  double worst = 0, mean = 0, first_a = 0, last_a = 0, first_b = 0, last_b = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = std::abs(a[i] - b[i]) / a[i];
    worst = std::max(worst, r);
    mean += r / a.size();
    if (i < 10) first_a += a[i] / 10, first_b += b[i] / 10;
    if (i >= 40) last_a += a[i] / 10, last_b += b[i] / 10;
  }
  std::cout << "[ gpu      ] bf16 vs fp32 over 50 steps: mean relative difference " << mean << ", largest " << worst
            << "; fp32 " << first_a << " -> " << last_a << ", bf16 " << first_b << " -> " << last_b << "\n";
  EXPECT_LE(mean, 0.03);
  EXPECT_LE(worst, 0.15);
  EXPECT_LT(last_a, first_a);  // both learn
  EXPECT_LT(last_b, first_b);
}

TEST_F(Gpu, Bf16GatheredParametersTrainWhatAutocastTrains) {
  RunSetup s = make_setup();
  std::string out;
  const std::string common = " --set train.device=cuda --set train.precision=bf16 --set train.steps=5"
                             " --set checkpoint.every=5";
  ASSERT_EQ(run_single(s, "--set run.name=p32 --set dist.param_dtype=fp32" + common, &out), 0) << out;
  EXPECT_CONTAINS(out, "parameters gathered in fp32");
  ASSERT_EQ(run_single(s, "--set run.name=p32again --set dist.param_dtype=fp32" + common, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=p16 --set dist.param_dtype=bf16" + common, &out), 0) << out;
  EXPECT_CONTAINS(out, "parameters gathered in bf16");
  expect_within_rerun_noise(s, "p32", "p32again", "p16", 5, 1e-6, "param_dtype bf16 vs fp32");
  // bf16 gathers with micro-batches: bf16 gradients added up in the fp32 shard; the same losses
  // to bf16 rounding.
  ASSERT_EQ(run_single(s, "--set run.name=m16 --set dist.param_dtype=bf16 --set train.micro_batch=3" + common, &out), 0)
      << out;
  const auto a = logged(s, "p16"), b = logged(s, "m16");
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 0.02 * a[i]) << "micro-batches, step " << i + 1;
}

TEST_F(Gpu, FusedKernelsTrainWhatLibTorchOpsTrain) {
  RunSetup s = make_setup();
  std::string out;
  const std::string fp32 = " --set train.device=cuda --set train.precision=fp32 --set train.steps=3 --set checkpoint.every=3";
  ASSERT_EQ(run_single(s, "--set run.name=ops" + fp32, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=fused --set train.fused_kernels=true" + fp32, &out), 0) << out;
  EXPECT_LACKS(out, "train.fused_kernels:");  // no "not applied" warning
  expect_fp32_close(ckpt(s, "fused", 3), ckpt(s, "ops", 3), "fused kernels");
  // Without clipping the fused run updates in place and computes the logged gradient norm when it
  // logs, from the gradients the step left; LibTorch's ops compute it within the step.
  const std::string no_clip = fp32 + " --set train.grad_clip=0";
  ASSERT_EQ(run_single(s, "--set run.name=ops_nc" + no_clip, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=fused_nc --set train.fused_kernels=true" + no_clip, &out), 0) << out;
  const auto na = logged(s, "ops_nc", "grad_norm");
  const auto nb = logged(s, "fused_nc", "grad_norm");
  ASSERT_EQ(na.size(), 3u);
  ASSERT_EQ(nb.size(), 3u);
  for (size_t i = 0; i < na.size(); ++i) {
    std::cout << "[ gpu      ] step " << i + 1 << " grad_norm ops " << na[i] << " fused " << nb[i] << "\n";
    EXPECT_NEAR(nb[i], na[i], 1e-4 * na[i]) << "step " << i + 1;
  }
  const std::string bf16 = " --set train.device=cuda --set train.precision=bf16 --set train.steps=5 --set checkpoint.every=5";
  ASSERT_EQ(run_single(s, "--set run.name=ops16" + bf16, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=fused16 --set train.fused_kernels=true" + bf16, &out), 0) << out;
  const auto a = logged(s, "ops16"), b = logged(s, "fused16");
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 0.02 * a[i]) << "step " << i + 1;
}

TEST_F(Gpu, RecomputeUnderAutocastTrainsWhatKeepingTrains) {
  RunSetup s = make_setup();
  std::string out;
  const std::string bf16 = " --set train.device=cuda --set train.precision=bf16 --set train.steps=5"
                           " --set checkpoint.every=5";
  for (const std::string fused : {"false", "true"}) {
    const std::string keep = "keep_" + fused, rec = "rec_" + fused, f = " --set train.fused_kernels=" + fused;
    ASSERT_EQ(run_single(s, "--set run.name=" + keep + f + bf16, &out), 0) << out;
    ASSERT_EQ(run_single(s, "--set run.name=" + keep + "_again" + f + bf16, &out), 0) << out;
    ASSERT_EQ(run_single(s, "--set run.name=" + rec + " --set train.recompute=norm+mlp" + f + bf16, &out), 0) << out;
    // With the fused kernels the two modes run different kernels: without the recomputation x's
    // two gradients meet in the norm's backward kernel and the bias gradients come from the
    // residual-and-norm kernel; with it autograd adds them and the gated residual's kernel sums.
    // The first H200 run of that (2026-11-27) found 3.4e-4 in the parameters, 1.8e-7 in v. So
    // they may differ as far as the fused kernels differ from LibTorch's ops (keep_false).
    expect_within_rerun_noise(s, keep, keep + "_again", rec, 5, 1e-4,
                              "recompute norm+mlp vs none (fused_kernels " + fused + ")",
                              fused == "true" ? "keep_false" : "");
  }
}

TEST_F(Gpu, FusedMlpTrainsWhatThePlainMlpTrains) {
  RunSetup s = make_setup();
  std::string out;
  // Width 64: the cuBLASLt products take widths that are multiples of 8 (the fixture's 36 is not).
  const std::string bf16 = " --set train.device=cuda --set train.precision=bf16 --set train.steps=5"
                           " --set checkpoint.every=5 --set model.hidden_size=64";
  ASSERT_EQ(run_single(s, "--set run.name=mlp_plain" + bf16, &out), 0) << out;
  const auto a = logged(s, "mlp_plain");
  ASSERT_EQ(a.size(), 5u);
  for (const std::string r : {"none", "mlp", "norm+mlp"}) {
    ASSERT_EQ(run_single(s, "--set run.name=mlp_" + r + " --set train.fused_mlp=true --set train.recompute=" + r + bf16,
                         &out),
              0)
        << out;
    EXPECT_LACKS(out, "train.fused_mlp:");  // no "not applied" warning: this build has cuBLASLt
    const auto b = logged(s, "mlp_" + r);
    ASSERT_EQ(b.size(), 5u);
    for (size_t i = 0; i < a.size(); ++i) {
      std::cout << "[ gpu      ] fused_mlp (recompute " << r << ") step " << i + 1 << ": loss " << b[i] << " vs "
                << a[i] << "\n";
      EXPECT_NEAR(b[i], a[i], 0.02 * a[i]) << r << " step " << i + 1;
    }
  }
}

// The own attention kernels (train.attention = "fused") against LibTorch's choice ("auto"): the
// same losses over 5 bf16 steps to 2 % (and not the same bits: other kernels ran), with the fused
// kernels (the qkv bias's gradient from the attention's node) and without (the bias in the
// product); no warning, where a head width the kernels do not have gets one.
TEST_F(Gpu, FusedAttentionTrainsWhatLibTorchsAttentionTrains) {
  RunSetup s = make_setup();
  std::string out;
  // Width 64 in 2 heads: head width 32, one the kernels have (the fixture's 36 is not).
  const std::string bf16 = " --set train.device=cuda --set train.precision=bf16 --set train.steps=5"
                           " --set checkpoint.every=5 --set model.hidden_size=64 --set model.num_heads=2";
  for (const std::string fused : {"false", "true"}) {
    const std::string f = " --set train.fused_kernels=" + fused;
    ASSERT_EQ(run_single(s, "--set run.name=att_auto_" + fused + f + bf16, &out), 0) << out;
    ASSERT_EQ(run_single(s, "--set run.name=att_fused_" + fused + " --set train.attention=fused" + f + bf16, &out), 0)
        << out;
    EXPECT_LACKS(out, "train.attention");  // no warning: it applies
    const auto a = logged(s, "att_auto_" + fused), b = logged(s, "att_fused_" + fused);
    ASSERT_EQ(a.size(), 5u);
    ASSERT_EQ(b.size(), 5u);
    for (size_t i = 0; i < a.size(); ++i) {
      std::cout << "[ gpu      ] attention fused (fused_kernels " << fused << ") step " << i + 1 << ": loss " << b[i]
                << " vs " << a[i] << "\n";
      EXPECT_NEAR(b[i], a[i], 0.02 * a[i]) << "fused_kernels " << fused << " step " << i + 1;
    }
    // Other kernels round otherwise: equal losses would mean the own kernels did not run.
    EXPECT_NE(a, b) << "fused_kernels " << fused << ": the same losses as LibTorch's attention";
  }
  // The fixture's own width (36 in 2 heads: 18) is not one the kernels have: the log says so.
  ASSERT_EQ(run_single(s, "--set run.name=att_fused_18 --set train.attention=fused --set train.device=cuda"
                          " --set train.precision=bf16 --set train.steps=2",
                       &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "train.attention = \"fused\": its kernels take bf16");
  EXPECT_CONTAINS(out, "head width 18");
}

// Parameter gradients added into their buffers in place (train.weight_grads_in_place,
// models/linear_backward.h: the weight-gradient products, and the bias gradients the project's
// kernels sum: the residuals' and norm's, qkv's, fc1's after cuBLASLt's product) against
// autograd's adds: bf16 with the fused kernels, the fused MLP and the fused attention, in one
// batch and in three micro-batches of 4 (each adds to the sums before it). Without clipping, the
// gradient norm each logs agrees to 2e-3 (each sum rounded once to bf16 where autograd's add
// rounds twice; test_fused_autograd_emulated checks each node's add on the CPU). The first losses
// agree to 1e-4 (the same forward), the later ones to 2 %.
TEST_F(Gpu, GradsInPlaceTrainWhatAutogradsAddsTrain) {
  RunSetup s = make_setup();
  std::string out;
  const std::string bf16 = " --set train.device=cuda --set train.precision=bf16 --set train.steps=3"
                           " --set checkpoint.every=3 --set train.grad_clip=0 --set model.hidden_size=64"
                           " --set model.num_heads=2 --set train.fused_kernels=true --set train.fused_mlp=true"
                           " --set train.attention=fused";
  for (const std::string micro : {"0", "4"}) {
    const std::string m = " --set train.micro_batch=" + micro, adds = "adds_" + micro, in_place = "in_place_" + micro;
    ASSERT_EQ(run_single(s, "--set run.name=" + adds + " --set train.weight_grads_in_place=false" + m + bf16, &out), 0)
        << out;
    ASSERT_EQ(run_single(s, "--set run.name=" + in_place + " --set train.weight_grads_in_place=true" + m + bf16, &out),
              0)
        << out;
    const auto na = logged(s, adds, "grad_norm"), nb = logged(s, in_place, "grad_norm");
    const auto la = logged(s, adds), lb = logged(s, in_place);
    ASSERT_EQ(na.size(), 3u);
    ASSERT_EQ(nb.size(), 3u);
    ASSERT_EQ(lb.size(), 3u);
    std::cout << "[ gpu      ] gradients in place (micro_batch " << micro << "): step 1 grad_norm " << nb[0]
              << " vs " << na[0] << ", loss " << lb[0] << " vs " << la[0] << "\n";
    EXPECT_NEAR(nb[0], na[0], 2e-3 * na[0]) << "micro_batch " << micro;
    EXPECT_NEAR(lb[0], la[0], 1e-4 * la[0]) << "micro_batch " << micro;  // the same forward
    for (size_t i = 1; i < la.size(); ++i) EXPECT_NEAR(lb[i], la[i], 0.02 * la[i]) << "step " << i + 1;
  }
}

// The own 3xTF32 attention kernels on fp32 inputs (train.fp32_attention = "fused"; every block of
// an fp32 run, as TREAD's block after a route in a bf16 one) against fp32 products ("products"):
// the same losses over 5 steps to fp32's accuracy (1e-4), not the same bits; no warning, where a
// head width the kernels do not have gets one.
TEST_F(Gpu, Fp32FusedAttentionTrainsWhatFp32ProductsTrain) {
  RunSetup s = make_setup();
  std::string out;
  const std::string fp32 = " --set train.device=cuda --set train.precision=fp32 --set train.steps=5"
                           " --set checkpoint.every=5 --set model.hidden_size=64 --set model.num_heads=2";
  ASSERT_EQ(run_single(s, "--set run.name=fp32_products" + fp32, &out), 0) << out;
  ASSERT_EQ(run_single(s, "--set run.name=fp32_fused --set train.fp32_attention=fused" + fp32, &out), 0) << out;
  EXPECT_LACKS(out, "train.fp32_attention");  // no warning: it applies
  const auto a = logged(s, "fp32_products"), b = logged(s, "fp32_fused");
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) {
    std::cout << "[ gpu      ] fp32 attention fused step " << i + 1 << ": loss " << b[i] << " vs " << a[i] << "\n";
    EXPECT_NEAR(b[i], a[i], 1e-4 * a[i]) << "step " << i + 1;
  }
  EXPECT_NE(a, b) << "the same losses as the fp32 products: the own kernels did not run";
  ASSERT_EQ(run_single(s, "--set run.name=fp32_fused_18 --set train.fp32_attention=fused --set train.device=cuda"
                          " --set train.precision=fp32 --set train.steps=2",
                       &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "train.fp32_attention = \"fused\": its kernels take");
  EXPECT_CONTAINS(out, "head width 18");
}

// Sampling on CUDA (an evaluation rank's GPU, tread_sample --device cuda): each seed's generator
// is a CUDA generator seeded as PyTorch's torch.Generator('cuda').manual_seed(seed), drawing the
// latent randn([C,H,W]) first and then the class randint(0, num_classes, []), as the reference's
// per-seed generators do on a GPU (checked against this machine's PyTorch, where it has CUDA);
// the samples are finite and do not depend on how the seeds are batched (to fp32 rounding: other
// batch sizes may run other kernels), and a seed alone gives its row of the batch.
TEST_F(Gpu, SamplingOnCudaDrawsPyTorchsSeedsAndIsBatchInvariant) {
  RunSetup s = make_setup();
  std::string out;
  ASSERT_EQ(run_single(s, "--set train.steps=3 --set checkpoint.every=3", &out), 0) << out;
  const std::string ck = ckpt(s, "w", 3);
  auto sample = [&](const std::string& args, const std::string& file) {
    const ToolResult r = tool("launch/tread_sample", "--checkpoint " + ck + " --steps 5 --device cuda " + args + " --out " + file, s.dir);
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    return nt::read_sample_file(file);
  };
  const auto b1 = sample("--seeds 0-5 --batch 1", s.dir + "/b1.h5");
  const auto b64 = sample("--seeds 0-5 --batch 64", s.dir + "/b64.h5");
  const auto one = sample("--seeds 3", s.dir + "/one.h5");
  ASSERT_EQ(b1.samples.sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_TRUE(torch::isfinite(b1.samples).all().item<bool>());
  EXPECT_TRUE(torch::equal(b1.labels, b64.labels));
  const double scale = b1.samples.abs().max().item<double>(), diff = (b1.samples - b64.samples).abs().max().item<double>();
  std::cout << "[ gpu      ] CUDA samples, batch 1 vs 64: max difference " << diff << " of max " << scale << "\n";
  EXPECT_LE(diff, 1e-3 * scale);
  EXPECT_TRUE(torch::equal(one.samples[0], b1.samples[3]));

  const nt::SeedBatch seeds = nt::make_seed_batch({0, 1, 2, 3, 4, 5}, 1, 8, 10, c10::Device(c10::kCUDA, 0));
  EXPECT_TRUE(torch::equal(seeds.labels.cpu(), b1.labels));
  if (run_command("python3 -c 'import torch; assert torch.cuda.is_available()'") != 0) {
    std::cout << "[ gpu      ] python3 without CUDA PyTorch: the draws are not compared with PyTorch's\n";
    return;
  }
  write_text(s.dir + "/draw.py",
             "import torch\n"
             "lat, lab = [], []\n"
             "for s in range(6):\n"
             "    g = torch.Generator('cuda').manual_seed(s)\n"
             "    lat.append(torch.randn([1, 8, 8], generator=g, device='cuda'))\n"
             "    lab.append(torch.randint(0, 10, [], generator=g, device='cuda'))\n"
             "open('" + s.dir + "/lat.bin', 'wb').write(torch.stack(lat).cpu().numpy().tobytes())\n"
             "open('" + s.dir + "/lab.bin', 'wb').write(torch.stack(lab).cpu().numpy().tobytes())\n");
  ASSERT_EQ(run_command("python3 " + s.dir + "/draw.py", &out), 0) << out;
  const std::string lat = read_text(s.dir + "/lat.bin"), lab = read_text(s.dir + "/lab.bin");
  ASSERT_EQ(lat.size(), 6u * 64 * 4);
  ASSERT_EQ(lab.size(), 6u * 8);
  const at::Tensor want_lat = torch::from_blob(const_cast<char*>(lat.data()), {6, 1, 8, 8}, at::kFloat).clone();
  const at::Tensor want_lab = torch::from_blob(const_cast<char*>(lab.data()), {6}, at::kLong).clone();
  EXPECT_TRUE(torch::equal(seeds.latents.cpu(), want_lat)) << "the initial latents differ from PyTorch's CUDA draws";
  EXPECT_TRUE(torch::equal(seeds.labels.cpu(), want_lab)) << "the classes differ from PyTorch's CUDA draws";
}

}  // namespace
