// The evaluation pipeline (eval/scoring.h) and the feature extractors: seed shares, decoding
// samples to images (pixels and a stand-in latent decoder), extractor errors, statistics that do
// not depend on how seeds are split over ranks or batches, and score_checkpoint on tiny
// checkpoints made by tread_run (pixel space; latent space with and without a decoder; missing
// and corrupt folders).
#include "eval/scoring.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/checkpoint.h"
#include "dist/model_io.h"
#include "dist/sharded_checkpoint.h"
#include "eval/feature_extractor.h"
#include "core/safetensors.h"
#include "models/classifier.h"
#include "models/inception.h"
#include "eval/dataset_fixture.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nt::test::thrown_message;
using nt::test::write_dataset;
const c10::Device kCpu(c10::kCPU);

// ---- helpers --------------------------------------------------------------------------------


// A random classifier of the given input, saved where make_feature_extractor can load it.
std::string save_random_classifier(const std::string& path, int channels, int size) {
  nt::ClassifierConfig c;
  c.in_channels = channels;
  c.input_size = size;
  c.feature_dim = 6;
  c.width = 4;
  torch::manual_seed(99);
  nt::Classifier m(c);
  nt::save_classifier(m, path);
  return path;
}

// A tiny DiT on [1,8,8].
nt::DiT tiny_dit() {
  nt::DiTConfig c;
  c.input_size = 8;
  c.in_channels = 1;
  c.num_classes = 10;
  c.depth = 1;
  c.hidden_size = 16;
  c.num_heads = 2;
  c.patch_size = 4;
  torch::manual_seed(5);
  nt::DiT m(c);
  // adaLN-Zero starts as the identity; perturb every parameter so the samples depend on the model.
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.05);
  return m;
}

nt::ScoreOptions small_options() {
  nt::ScoreOptions o;
  o.num_samples = 6;
  o.seeds = "10-19";
  o.steps = 3;
  o.batch_size = 4;
  return o;
}

// ---- seeds and decoding ---------------------------------------------------------------------

TEST(Scoring, EvalSeedsSplitIntoContiguousShares) {
  EXPECT_EQ(nt::eval_seeds("0-9", 10, 0, 1), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(nt::eval_seeds("100-199", 4, 0, 1), (std::vector<int64_t>{100, 101, 102, 103}));
  EXPECT_EQ(nt::eval_seeds("1,5,7-9", 4, 0, 1), (std::vector<int64_t>{1, 5, 7, 8}));
  std::vector<int64_t> joined;
  for (int r = 0; r < 3; ++r) {
    auto part = nt::eval_seeds("0-9", 10, r, 3);
    EXPECT_EQ(part.size(), r == 2 ? 4u : 3u) << r;
    joined.insert(joined.end(), part.begin(), part.end());
  }
  EXPECT_EQ(joined, nt::eval_seeds("0-9", 10, 0, 1));
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([] { nt::eval_seeds("0-3", 5, 0, 1); }), "fewer than");
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([] { nt::eval_seeds("0-3", 1, 0, 1); }), "num_samples");
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([] { nt::eval_seeds("zero-3", 2, 0, 1); }), "eval.seeds");
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([] { nt::eval_seeds("0-3", 2, 2, 2); }), "rank");
}

TEST(Scoring, SamplesToImagesUndoTheNormalisation) {
  nt::DecodeInfo px;
  px.scale_factor = 2.0;
  px.shift_factor = 0.25;
  // x = 2 (v - 0.25): v = -1, 0, 1, 3 -> images 0, 0.5, 1, 1 (clamped).
  auto v = torch::tensor({-1.0f, 0.0f, 1.0f, 3.0f}).reshape({1, 1, 2, 2});
  auto img = nt::samples_to_images01(2.0 * (v - 0.25), px, nullptr);
  EXPECT_TRUE(torch::allclose(img, torch::tensor({0.0f, 0.5f, 1.0f, 1.0f}).reshape({1, 1, 2, 2}), 1e-6, 1e-6)) << img;

  nt::DecodeInfo lat;
  lat.latent_space = "sd-vae-ft-ema";
  lat.scale_factor = 0.18215;
  lat.shift_factor = 0.1;
  auto z = torch::randn({2, 4, 3, 3});
  auto msg = thrown_message<std::runtime_error>([&] { nt::samples_to_images01(z, lat, nullptr); });
  EXPECT_CONTAINS(msg, "sd-vae-ft-ema");
  EXPECT_CONTAINS(msg, "vae_weights");
  at::Tensor seen;
  nt::LatentDecoder dec = [&](const at::Tensor& v) {
    seen = v.clone();
    return torch::full({v.size(0), 3, 8 * v.size(2), 8 * v.size(3)}, -0.5);  // stand-in images
  };
  img = nt::samples_to_images01(z, lat, &dec);
  EXPECT_TRUE(torch::allclose(seen, z / 0.18215 + 0.1, 1e-5, 1e-6)) << "the decoder gets v = x/scale + shift";
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{2, 3, 24, 24}));
  EXPECT_NEAR(img.min().item<float>(), 0.25f, 1e-6);
  EXPECT_NEAR(img.max().item<float>(), 0.25f, 1e-6);
}

// The 8-bit images the reference scores: CompVis/tread's decode takes (images01 * 255).to(uint8), a
// truncation (a network output of 0, images01 0.5, is level 127, not 128).
TEST(Scoring, ImagesTo8BitTruncateAsTheReference) {
  const auto u = torch::tensor({0.0f, 0.5f, 1.0f, 1.25f, -0.1f, 0.999f, 0.003f, 0.004f, 200.0f / 255.0f});
  const auto want = torch::tensor({0.0f, 127.0f, 255.0f, 255.0f, 0.0f, 254.0f, 0.0f, 1.0f, 200.0f}) / 255.0f;
  const auto got = nt::images_to_8bit(u.reshape({1, 1, 3, 3}));
  EXPECT_TRUE(torch::equal(got, want.reshape({1, 1, 3, 3}))) << got;
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  // The sampler's float64 images too: the levels of their float32 values.
  EXPECT_TRUE(torch::equal(nt::images_to_8bit(u.to(at::kDouble).reshape({1, 1, 3, 3})), want.reshape({1, 1, 3, 3})));
}

TEST(Scoring, VaeDecoderErrorsNameTheFile) {
  const std::string dir = nt::test::scratch_dir();
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([] { nt::make_vae_decoder("", kCpu); }), "vae_weights");
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { nt::make_vae_decoder(dir + "/none.safetensors", kCpu); }),
                  "none.safetensors");
  nt::test::write_text(dir + "/junk.safetensors", "junk");
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { nt::make_vae_decoder(dir + "/junk.safetensors", kCpu); }),
                  "junk.safetensors");
}

TEST(Scoring, DecodeInfoFromManifestData) {
  nt::DatasetInfo d;
  d.latent_space = "sd-vae-ft-ema";
  d.scale_factor = 0.18215;
  d.shift_factor = 0.5;
  auto info = nt::decode_info_from_json(nt::data_info_to_json(d), "m.json");
  EXPECT_EQ(info.latent_space, "sd-vae-ft-ema");
  EXPECT_FALSE(info.pixels());
  EXPECT_DOUBLE_EQ(info.scale_factor, 0.18215);
  EXPECT_DOUBLE_EQ(info.shift_factor, 0.5);
  auto msg = thrown_message<std::runtime_error>([] { nt::decode_info_from_json(nlohmann::json(), "ck/manifest.json"); });
  EXPECT_CONTAINS(msg, "ck/manifest.json");
  EXPECT_CONTAINS(msg, "data");
  msg = thrown_message<std::runtime_error>(
      [] { nt::decode_info_from_json({{"latent_space", "pixels"}, {"scale_factor", 1.0}}, "m2.json"); });
  EXPECT_CONTAINS(msg, "m2.json");
  EXPECT_CONTAINS(msg, "shift_factor");
}

// ---- feature extractors ---------------------------------------------------------------------

TEST(FeatureExtractor, ClassifierAndErrors) {
  const std::string dir = nt::test::scratch_dir();
  const std::string w = save_random_classifier(dir + "/c.safetensors", 1, 8);
  auto fx = nt::make_feature_extractor("classifier", w, kCpu);
  EXPECT_EQ(fx->name(), "classifier");
  EXPECT_EQ(fx->dim(), 6);
  auto f = fx->features(torch::rand({5, 1, 8, 8}));
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(f.scalar_type(), at::kFloat);
  auto msg = thrown_message<std::runtime_error>([&] { fx->features(torch::rand({5, 1, 16, 16})); });
  EXPECT_CONTAINS(msg, "c.safetensors");
  EXPECT_CONTAINS(msg, "[N, 1, 8, 8]");

  msg = thrown_message<std::runtime_error>([&] { nt::make_feature_extractor("resnet", w, kCpu); });
  EXPECT_CONTAINS(msg, "resnet");
  msg = thrown_message<std::runtime_error>([&] { nt::make_feature_extractor("classifier", "", kCpu); });
  EXPECT_CONTAINS(msg, "extractor_weights");
  for (const char* kind : {"classifier", "inception"}) {
    msg = thrown_message<std::runtime_error>([&] { nt::make_feature_extractor(kind, dir + "/none.safetensors", kCpu); });
    EXPECT_CONTAINS(msg, "none.safetensors");
    EXPECT_CONTAINS(msg, kind);
  }
  nt::test::write_text(dir + "/junk.safetensors", "junk");
  msg = thrown_message<std::runtime_error>([&] { nt::make_feature_extractor("classifier", dir + "/junk.safetensors", kCpu); });
  EXPECT_CONTAINS(msg, "junk.safetensors");
  // A classifier file is not an Inception: refused, naming the file.
  msg = thrown_message<std::runtime_error>([&] { nt::make_feature_extractor("inception", w, kCpu); });
  EXPECT_CONTAINS(msg, "c.safetensors");

  nt::FeatureStats ref{torch::zeros({7}, torch::kFloat64), torch::eye(7, torch::kFloat64), 0};
  msg = thrown_message<std::runtime_error>([&] { nt::check_reference(ref, *fx, "ref7.npz"); });
  EXPECT_CONTAINS(msg, "ref7.npz");
  EXPECT_CONTAINS(msg, "7 features");
}

TEST(FeatureExtractor, InceptionTakesGreyAndColourImages) {
  torch::set_num_threads(1);
  const std::string dir = nt::test::scratch_dir();
  // Random weights with pytorch-fid's names (parameters and BatchNorm statistics).
  torch::manual_seed(1);
  nt::InceptionV3Fid net;
  std::vector<nt::NamedTensor> ts;
  for (const auto& p : net->named_parameters()) ts.push_back({p.key(), p.value().detach()});
  for (const auto& b : net->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) ts.push_back({b.key(), b.value()});
  nt::save_safetensors(dir + "/inception.safetensors", ts);
  auto fx = nt::make_feature_extractor("inception", dir + "/inception.safetensors", kCpu);
  EXPECT_EQ(fx->name(), "inception");
  EXPECT_EQ(fx->dim(), 2048);
  auto grey = torch::rand({2, 1, 16, 16});
  auto f1 = fx->features(grey);
  EXPECT_EQ(f1.sizes(), (std::vector<int64_t>{2, 2048}));
  EXPECT_EQ(f1.scalar_type(), at::kFloat);
  // Grey images are the RGB images with three equal channels.
  EXPECT_TRUE(torch::allclose(f1, fx->features(grey.repeat({1, 3, 1, 1})), 1e-5, 1e-6));
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { fx->features(torch::rand({2, 2, 16, 16})); }), "[N,1|3,H,W]");
}

// ---- sample_features ------------------------------------------------------------------------

// What the extractor sees of the samples: 8-bit levels k/255, the images the reference scores.
TEST(Scoring, FeaturesAreTakenFrom8BitImages) {
  struct Recording : nt::FeatureExtractor {
    std::vector<at::Tensor> seen;
    std::string name() const override { return "recording"; }
    int64_t dim() const override { return 2; }
    int64_t channels() const override { return 1; }
    at::Tensor features(const at::Tensor& images01) override {
      seen.push_back(images01.to(at::kCPU));
      return images01.flatten(1).narrow(1, 0, 2).to(at::kCPU, at::kFloat);  // [N, 2]
    }
  } fx;
  nt::DiT model = tiny_dit();
  const nt::DecodeInfo px;
  auto acc = nt::sample_features(model, 0.5, px, fx, nullptr, small_options(), kCpu);
  ASSERT_FALSE(fx.seen.empty());
  const auto all = at::cat(fx.seen).to(at::kDouble) * 255;  // [6, C, H, W] levels
  EXPECT_EQ(all.size(0), acc.count());
  EXPECT_LT((all - all.round()).abs().max().item<double>(), 1e-4) << "not on the 8-bit levels";
  EXPECT_GT(std::get<0>(at::_unique(all)).numel(), 2) << "the samples' levels, not a constant";
}

TEST(Scoring, StatisticsDoNotDependOnRanksOrBatches) {
  torch::set_num_threads(1);
  const std::string dir = nt::test::scratch_dir();
  auto fx = nt::make_feature_extractor("classifier", save_random_classifier(dir + "/c.safetensors", 1, 8), kCpu);
  nt::DiT model = tiny_dit();
  const nt::DecodeInfo px;
  auto opt = small_options();
  opt.grid_png = dir + "/grid_w1.png";
  std::vector<std::pair<int64_t, int64_t>> calls;
  auto one = nt::sample_features(model, 0.5, px, *fx, nullptr, opt, kCpu,
                                 [&](int64_t done, int64_t total) { calls.emplace_back(done, total); });
  EXPECT_EQ(one.count(), 6);
  EXPECT_EQ(calls, (std::vector<std::pair<int64_t, int64_t>>{{0, 6}, {4, 6}, {6, 6}}));
  EXPECT_TRUE(fs::exists(dir + "/grid_w1.png"));

  // Two ranks, their sums added up: the statistics of one rank. With the same batches (3 seeds
  // each) the very same sums; with other batches, equal to float32 rounding of the features.
  for (int batch : {3, 2}) {
    auto o1 = small_options();
    o1.batch_size = batch;
    auto single = nt::sample_features(model, 0.5, px, *fx, nullptr, o1, kCpu);
    nt::FeatureAccumulator merged;
    for (int r = 0; r < 2; ++r) {
      auto o = small_options();
      o.eval_rank = r;
      o.eval_world = 2;
      o.batch_size = 3;
      o.grid_png = dir + "/grid_w2_r" + std::to_string(r) + ".png";
      auto part = nt::sample_features(model, 0.5, px, *fx, nullptr, o, kCpu);
      EXPECT_EQ(part.count(), 3);
      merged.add_sums(part.sum(), part.outer(), part.count());
    }
    EXPECT_TRUE(fs::exists(dir + "/grid_w2_r0.png"));
    EXPECT_FALSE(fs::exists(dir + "/grid_w2_r1.png")) << "only rank 0 writes the grid";
    if (batch == 3) {
      EXPECT_TRUE(torch::equal(merged.sum(), single.sum()));
      EXPECT_TRUE(torch::equal(merged.outer(), single.outer()));
    }
    EXPECT_TRUE(torch::allclose(merged.sum(), one.sum(), 1e-6, 1e-7)) << batch;
    EXPECT_TRUE(torch::allclose(merged.outer(), one.outer(), 1e-6, 1e-7)) << batch;
    EXPECT_NEAR(nt::frechet_distance(single.finalize(), merged.finalize()), 0.0, 1e-8) << batch;
  }
  nt::FeatureAccumulator merged;
  for (int r = 0; r < 2; ++r) {
    auto o = small_options();
    o.eval_rank = r;
    o.eval_world = 2;
    auto part = nt::sample_features(model, 0.5, px, *fx, nullptr, o, kCpu);
    merged.add_sums(part.sum(), part.outer(), part.count());
  }
  const auto a = one.finalize(), b = merged.finalize();
  EXPECT_NEAR(nt::frechet_distance(a, b), 0.0, 1e-6);
  EXPECT_NEAR(nt::frechet_distance(a, a), 0.0, 1e-10);
  EXPECT_GT(a.sigma.diagonal().sum().item<double>(), 0.0) << "features should vary between samples";

  // Guidance and other seeds change the statistics.
  auto g = small_options();
  g.cfg_scale = 3.0;
  EXPECT_GT(nt::frechet_distance(a, nt::sample_features(model, 0.5, px, *fx, nullptr, g, kCpu).finalize()), 1e-9);
  auto s = small_options();
  s.seeds = "20-29";
  EXPECT_GT(nt::frechet_distance(a, nt::sample_features(model, 0.5, px, *fx, nullptr, s, kCpu).finalize()), 1e-9);

  // Stochastic sampling (S_churn): other statistics, and still the same whatever the split, each
  // seed's noise coming from its own generator.
  auto churn = small_options();
  churn.S_churn = 2.0;
  churn.batch_size = 3;
  const auto stochastic = nt::sample_features(model, 0.5, px, *fx, nullptr, churn, kCpu);
  EXPECT_GT(nt::frechet_distance(a, stochastic.finalize()), 1e-9);
  nt::FeatureAccumulator split;
  for (int r = 0; r < 2; ++r) {
    auto o = churn;
    o.eval_rank = r;
    o.eval_world = 2;
    auto part = nt::sample_features(model, 0.5, px, *fx, nullptr, o, kCpu);
    split.add_sums(part.sum(), part.outer(), part.count());
  }
  EXPECT_TRUE(torch::equal(split.sum(), stochastic.sum()));
  EXPECT_TRUE(torch::equal(split.outer(), stochastic.outer()));

  auto bad = small_options();
  bad.steps = 1;
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { nt::sample_features(model, 0.5, px, *fx, nullptr, bad, kCpu); }),
                  "steps");
  nt::DecodeInfo lat;
  lat.latent_space = "sd-vae-ft-ema";
  EXPECT_CONTAINS(thrown_message<std::runtime_error>(
                      [&] { nt::sample_features(model, 0.5, lat, *fx, nullptr, small_options(), kCpu); }),
                  "vae_weights");
}

// ---- score_checkpoint on tread_run checkpoints ------------------------------------------------

// Trains `steps` steps of a one-block DiT on the dataset; checkpoints every 2 steps.
std::string train_run(const std::string& dir, const std::string& data, int channels, int size, int steps) {
  std::ostringstream s;
  s << "[run]\nname = \"r\"\ndir = \"" << dir << "/runs\"\nseed = 1\n"
    << "[model]\nname = \"DiT-S/2\"\ninput_size = " << size << "\nin_channels = " << channels << "\nnum_classes = 10\n"
    << "depth = 1\nhidden_size = 16\nnum_heads = 2\npatch_size = 2\n"
    << "[diffusion]\nsigma_data = 0.5\n"
    << "[data]\npaths = [\"" << data << "\"]\nprefetch_threads = 1\n"
    << "[train]\nglobal_batch = 4\nsteps = " << steps << "\nprecision = \"fp32\"\nlog_every = 1\ndevice = \"cpu\"\nthreads = 1\n"
    << "[optim]\nlr = 1e-3\n[ema]\ndecay = 0.5\n[checkpoint]\nevery = 2\nkeep_last = 10\nkeep_every = 0\n";
  nt::test::write_text(dir + "/train.toml", s.str());
  auto r = nt::test::tool("launch/tread_run", "--config " + dir + "/train.toml", dir);
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  return dir + "/runs/r";
}

TEST(Scoring, ScoreCheckpointPixels) {
  torch::set_num_threads(1);
  const std::string dir = nt::test::scratch_dir();
  torch::manual_seed(3);
  write_dataset(dir + "/px.h5", torch::rand({16, 1, 8, 8}) * 2 - 1, torch::arange(16) % 10, "pixels", 10);
  const std::string run = train_run(dir, dir + "/px.h5", 1, 8, 2);
  const std::string ckpt = run + "/ckpt/" + nt::checkpoint_name(2);
  ASSERT_TRUE(fs::exists(ckpt + "/manifest.json"));
  auto fx = nt::make_feature_extractor("classifier", save_random_classifier(dir + "/c.safetensors", 1, 8), kCpu);

  // The reference: the same samples scored by hand from the checkpoint's EMA model -> FID 0.
  auto ck = nt::load_checkpoint_model(ckpt, "ema");
  const auto ref = nt::sample_features(ck.model, 0.5, nt::DecodeInfo{}, *fx, nullptr, small_options(), kCpu).finalize();
  auto opt = small_options();
  opt.grid_png = dir + "/grid.png";
  auto r = nt::score_checkpoint(ckpt, ref, "ref.npz", *fx, nullptr, opt, kCpu);
  EXPECT_EQ(r.step, 2);
  EXPECT_NEAR(r.fid, 0.0, 1e-8);
  EXPECT_EQ(r.extractor, "classifier");
  EXPECT_EQ(r.num_samples, 6);
  EXPECT_EQ(r.cfg_scale, 1.0);
  EXPECT_GT(r.seconds, 0.0);
  EXPECT_TRUE(fs::exists(dir + "/grid.png"));
  const auto j = r.to_json();
  EXPECT_EQ(j.at("kind"), "eval");
  for (const char* k : {"step", "fid", "extractor", "num_samples", "cfg_scale", "seconds"}) EXPECT_TRUE(j.contains(k)) << k;

  // Another model's statistics are far from these.
  nt::DiT other_model = tiny_dit();
  auto other = nt::sample_features(other_model, 0.5, nt::DecodeInfo{}, *fx, nullptr, small_options(), kCpu).finalize();
  EXPECT_GT(nt::score_checkpoint(ckpt, other, "other.npz", *fx, nullptr, small_options(), kCpu).fid, 1e-6);

  // Wrong reference size, missing and corrupt checkpoints.
  nt::FeatureStats ref7{torch::zeros({7}, torch::kFloat64), torch::eye(7, torch::kFloat64), 0};
  EXPECT_CONTAINS(thrown_message<std::runtime_error>(
                      [&] { nt::score_checkpoint(ckpt, ref7, "ref7.npz", *fx, nullptr, small_options(), kCpu); }),
                  "ref7.npz");
  EXPECT_CONTAINS(thrown_message<nt::CheckpointError>(
                      [&] { nt::score_checkpoint(run + "/ckpt/nope", ref, "r", *fx, nullptr, small_options(), kCpu); }),
                  "nope");
  const std::string rank_file = ckpt + "/" + nt::rank_file_name(0);
  std::string bytes = nt::test::read_text(rank_file);
  bytes[bytes.size() - 9] ^= 0x21;
  nt::test::write_text(rank_file, bytes);
  auto msg = thrown_message<nt::CheckpointError>(
      [&] { nt::score_checkpoint(ckpt, ref, "r", *fx, nullptr, small_options(), kCpu); });
  EXPECT_CONTAINS(msg, nt::rank_file_name(0));
  EXPECT_CONTAINS(msg, "corrupt");
}

TEST(Scoring, ScoreCheckpointLatentsNeedTheDecoder) {
  torch::set_num_threads(1);
  const std::string dir = nt::test::scratch_dir();
  torch::manual_seed(4);
  write_dataset(dir + "/lat.h5", torch::randn({16, 4, 4, 4}), torch::arange(16) % 10, "sd-vae-ft-ema", 10);
  const std::string run = train_run(dir, dir + "/lat.h5", 4, 4, 2);
  const std::string ckpt = run + "/ckpt/" + nt::checkpoint_name(2);
  auto fx = nt::make_feature_extractor("classifier", save_random_classifier(dir + "/c.safetensors", 3, 8), kCpu);
  nt::FeatureStats ref{torch::zeros({6}, torch::kFloat64), torch::eye(6, torch::kFloat64), 0};
  auto msg = thrown_message<std::runtime_error>(
      [&] { nt::score_checkpoint(ckpt, ref, "r", *fx, nullptr, small_options(), kCpu); });
  EXPECT_CONTAINS(msg, "sd-vae-ft-ema");
  EXPECT_CONTAINS(msg, "vae_weights");
  // A stand-in decoder: the first three latent channels, upsampled 2x -> [N,3,8,8].
  int64_t decoded = 0;
  nt::LatentDecoder dec = [&](const at::Tensor& v) {
    decoded += v.size(0);
    EXPECT_EQ(v.sizes(), (std::vector<int64_t>{v.size(0), 4, 4, 4}));
    return torch::upsample_nearest2d(v.narrow(1, 0, 3), std::vector<int64_t>{8, 8});
  };
  auto r = nt::score_checkpoint(ckpt, ref, "r", *fx, &dec, small_options(), kCpu);
  EXPECT_EQ(decoded, 6);
  EXPECT_TRUE(std::isfinite(r.fid));
  EXPECT_GT(r.fid, 0.0);
}

}  // namespace
