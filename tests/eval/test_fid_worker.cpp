// End to end through the executables: `tread_data train-classifier` (accuracy line, same file for
// the same seed, refusal of latent data), `fid_worker --make-ref` then `--stats` of a file against
// itself, `--run-dir` (one eval line per checkpoint from the run's [eval] settings, none added on
// a second run, another cfg_scale adds lines, --watch ends on a finished run), `--checkpoint`
// (the same FID as the run's line), and the errors users cause (exit 1, a message on stderr).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "data/latent_dataset.h"
#include "dist/sharded_checkpoint.h"
#include "eval/feature_extractor.h"
#include "eval/frechet.h"
#include "eval/image_grid.h"
#include "eval/npz.h"
#include "models/classifier.h"
#include "eval/dataset_fixture.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nt::test::tool;
using nt::test::write_dataset;

std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}


// n pixel images [n,1,8,8] in [-1,1] of 4 classes: a bright 3x3 square in quadrant (label) on a
// dark noisy background, jittered by a pixel.
void write_quadrants(const std::string& path, int64_t n, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto x = torch::rand({n, 1, 8, 8}, g, torch::kFloat) * 0.4 - 1;
  auto y = torch::randint(0, 4, {n}, g, torch::kLong);
  auto jitter = torch::randint(0, 2, {n, 2}, g, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = y[i].item<int64_t>();
    x[i][0].narrow(0, (k / 2) * 4 + jitter[i][0].item<int64_t>(), 3).narrow(1, (k % 2) * 4 + jitter[i][1].item<int64_t>(), 3).fill_(0.9);
  }
  write_dataset(path, x, y, "pixels", 4);
}

std::vector<nlohmann::json> eval_lines(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.value("kind", std::string()) == "eval") out.push_back(j);
  }
  return out;
}

// One data set, a classifier trained on it, its reference statistics and a 4-step run of a
// one-block DiT (checkpoints at steps 2 and 4) whose [eval] section points at them. Made once
// per process.
struct World {
  std::string dir, data, classifier, ref, run;
  std::string train_out;
};

const World& world() {
  static World w = [] {
    World w;
    // Named after the first test that needs it: CTest runs each test in its own process, maybe
    // at the same time as the others.
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    w.dir = (fs::path(NT_BINARY_DIR) / "test_scratch" /
             (std::string("FidWorkerWorld.") + info->test_suite_name() + "." + info->name()))
                .string();
    fs::remove_all(w.dir);
    fs::create_directories(w.dir);
    w.data = w.dir + "/quad.h5";
    write_quadrants(w.data, 240, 1);
    w.classifier = w.dir + "/cls.safetensors";
    auto t = tool("data/tread_data", "train-classifier --data " + w.data + " --out " + w.classifier +
                                         " --epochs 10 --batch 16 --lr 3e-3 --width 4 --feature-dim 12 --seed 3",
                  w.dir);
    EXPECT_EQ(t.rc, 0) << t.out << t.err;
    w.train_out = t.out;
    w.ref = w.dir + "/ref.npz";
    auto m = tool("eval/fid_worker", "--make-ref --data " + w.data + " --out " + w.ref +
                                         " --extractor classifier --extractor-weights " + w.classifier,
                  w.dir);
    EXPECT_EQ(m.rc, 0) << m.out << m.err;
    std::ostringstream s;
    s << "[run]\nname = \"r\"\ndir = \"" << w.dir << "/runs\"\nseed = 1\n"
      << "[model]\nname = \"DiT-S/2\"\ninput_size = 8\nin_channels = 1\nnum_classes = 4\n"
      << "depth = 1\nhidden_size = 16\nnum_heads = 2\npatch_size = 4\n"
      << "[data]\npaths = [\"" << w.data << "\"]\nprefetch_threads = 1\n"
      << "[train]\nglobal_batch = 8\nsteps = 4\nprecision = \"fp32\"\nlog_every = 1\ndevice = \"cpu\"\nthreads = 1\n"
      << "[optim]\nlr = 1e-3\n[ema]\ndecay = 0.5\n[checkpoint]\nevery = 2\nkeep_last = 10\nkeep_every = 0\n"
      << "[eval]\nnum_samples = 8\nseeds = \"0-99\"\nsteps = 2\nextractor = \"classifier\"\n"
      << "extractor_weights = \"" << w.classifier << "\"\nref_stats = \"" << w.ref << "\"\n";
    nt::test::write_text(w.dir + "/train.toml", s.str());
    auto r = tool("launch/tread_run", "--config " + w.dir + "/train.toml", w.dir);
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    w.run = w.dir + "/runs/r";
    return w;
  }();
  return w;
}

TEST(TrainClassifier, AccuracyLastSameFileForSameSeedRefusesLatents) {
  const World& w = world();
  const std::string line = last_line(w.train_out);
  ASSERT_EQ(line.rfind("accuracy: ", 0), 0u) << w.train_out;
  EXPECT_GT(std::stod(line.substr(10)), 0.9) << w.train_out;
  EXPECT_CONTAINS(w.train_out, "216 training and 24 validation samples");
  auto model = nt::load_classifier(w.classifier, c10::Device(c10::kCPU));
  EXPECT_EQ(model->cfg.feature_dim, 12);
  EXPECT_EQ(model->cfg.input_size, 8);
  EXPECT_EQ(model->cfg.num_classes, 4);

  const std::string dir = nt::test::scratch_dir();
  auto again = tool("data/tread_data", "train-classifier --data " + w.data + " --out " + dir + "/again.safetensors" +
                                           " --epochs 10 --batch 16 --lr 3e-3 --width 4 --feature-dim 12 --seed 3",
                    dir);
  ASSERT_EQ(again.rc, 0) << again.err;
  EXPECT_EQ(nt::test::read_text(dir + "/again.safetensors"), nt::test::read_text(w.classifier))
      << "the same seed must give the same weights";

  write_dataset(dir + "/lat.h5", torch::randn({8, 4, 4, 4}), torch::arange(8) % 4, "sd-vae-ft-ema", 4);
  auto lat = tool("data/tread_data", "train-classifier --data " + dir + "/lat.h5 --out " + dir + "/x.safetensors", dir);
  EXPECT_EQ(lat.rc, 1);
  EXPECT_CONTAINS(lat.err, "sd-vae-ft-ema");
  EXPECT_CONTAINS(lat.err, "pixels");
  EXPECT_FALSE(fs::exists(dir + "/x.safetensors"));
  auto noout = tool("data/tread_data", "train-classifier --data " + w.data, dir);
  EXPECT_EQ(noout.rc, 1);
  EXPECT_CONTAINS(noout.err, "--out");
  auto help = tool("data/tread_data", "--help", dir);
  EXPECT_CONTAINS(help.out, "train-classifier");
}

TEST(FidWorker, MakeRefThenStatsAgainstItselfIsZero) {
  const World& w = world();
  const std::string dir = nt::test::scratch_dir();
  auto same = tool("eval/fid_worker", "--stats " + w.ref + " --ref " + w.ref, dir);
  ASSERT_EQ(same.rc, 0) << same.err;
  EXPECT_NEAR(std::stod(last_line(same.out).substr(5)), 0.0, 1e-9);
  const auto stats = nt::read_stats_npz(w.ref);
  EXPECT_EQ(stats.mu.size(0), 12);

  // Again: the same bytes; fewer samples: other statistics.
  const std::string args = " --extractor classifier --extractor-weights " + w.classifier + " --data " + w.data;
  auto again = tool("eval/fid_worker", "--make-ref --out " + dir + "/again.npz" + args, dir);
  ASSERT_EQ(again.rc, 0) << again.err;
  const auto again_stats = nt::read_stats_npz(dir + "/again.npz");
  EXPECT_TRUE(torch::equal(again_stats.mu, stats.mu));
  EXPECT_TRUE(torch::equal(again_stats.sigma, stats.sigma));
  auto part = tool("eval/fid_worker", "--make-ref --num 60 --batch 7 --out " + dir + "/part.npz" + args, dir);
  ASSERT_EQ(part.rc, 0) << part.err;
  auto diff = tool("eval/fid_worker", "--stats " + dir + "/part.npz --ref " + w.ref, dir);
  ASSERT_EQ(diff.rc, 0) << diff.err;
  EXPECT_GT(std::stod(last_line(diff.out).substr(5)), 1e-6);

  auto num = tool("eval/fid_worker", "--make-ref --num 100000 --out " + dir + "/x.npz" + args, dir);
  EXPECT_EQ(num.rc, 1);
  EXPECT_CONTAINS(num.err, "--num");
  auto nodata = tool("eval/fid_worker", "--make-ref --out " + dir + "/x.npz", dir);
  EXPECT_EQ(nodata.rc, 1);
  EXPECT_CONTAINS(nodata.err, "--data");
  auto noweights = tool("eval/fid_worker", "--make-ref --data " + w.data + " --out " + dir + "/x.npz --extractor classifier", dir);
  EXPECT_EQ(noweights.rc, 1);
  EXPECT_CONTAINS(noweights.err, "extractor_weights");
}

// --make-ref --images DIR: the statistics the reference's fid.py ref makes of a folder, i.e. of its
// images (recursively) sorted by relative path, each as k / 255, here through the classifier (grey
// images); --num N: EDM's subset. The expected statistics come from the extractor itself, in the
// same batches.
TEST(FidWorker, MakeRefOfAFolderOfImagesAsTheReference) {
  const World& w = world();
  const std::string dir = nt::test::scratch_dir();
  const std::string images = dir + "/images";
  fs::create_directories(images);
  nt::LatentDataset ds({w.data});
  at::Tensor x, y;
  ds.read({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0, &x, &y);                  // [11,1,8,8] in [-1,1]
  const at::Tensor k = ((x + 1) * 127.5).round().clamp(0, 255).to(torch::kUInt8);  // 8-bit levels
  // Written as img_<i>.png, so that name order (img_0, img_1, img_10, img_2, ...) is not index order,
  // the last two in a sub-folder.
  fs::create_directories(images + "/more");
  for (int64_t i = 0; i < 11; ++i)
    nt::write_png(images + (i < 9 ? "/img_" : "/more/img_") + std::to_string(i) + ".png", k[i].permute({1, 2, 0}));
  nt::test::write_text(images + "/list.txt", "not an image");
  const std::vector<int64_t> order = {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9};

  auto expected = [&](const std::vector<int64_t>& files, int64_t batch) {  // positions in name order
    auto fx = nt::make_feature_extractor("classifier", w.classifier, c10::Device(c10::kCPU));
    nt::FeatureAccumulator acc;
    const int64_t num = static_cast<int64_t>(files.size());
    for (int64_t b0 = 0; b0 < num; b0 += batch) {
      std::vector<at::Tensor> rows;
      for (int64_t i = b0; i < std::min(num, b0 + batch); ++i) rows.push_back(k[order[files[i]]].to(torch::kFloat).div(255));
      acc.add(fx->features(torch::stack(rows)));  // [B,1,8,8] -> [B,D]
    }
    return acc.finalize();
  };
  const std::string args = " --extractor classifier --extractor-weights " + w.classifier + " --images " + images;
  auto all = tool("eval/fid_worker", "--make-ref --batch 4 --out " + dir + "/all.npz" + args, dir);
  ASSERT_EQ(all.rc, 0) << all.err;
  EXPECT_CONTAINS(all.out, "of 11 samples of " + images);
  const nt::FeatureStats want = expected({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 4), got = nt::read_stats_npz(dir + "/all.npz");
  EXPECT_TRUE(torch::equal(got.mu, want.mu)) << got.mu - want.mu;
  EXPECT_TRUE(torch::equal(got.sigma, want.sigma));
  // --num 5: the 5 of 11 that EDM's Dataset(max_size=5, random_seed=0) keeps (numpy's choice,
  // tests/eval/test_image_folder.cpp).
  auto part = tool("eval/fid_worker", "--make-ref --batch 4 --num 5 --out " + dir + "/part.npz" + args, dir);
  ASSERT_EQ(part.rc, 0) << part.err;
  const nt::FeatureStats want5 = expected({2, 4, 6, 9, 10}, 4), got5 = nt::read_stats_npz(dir + "/part.npz");
  EXPECT_TRUE(torch::equal(got5.mu, want5.mu));
  EXPECT_TRUE(torch::equal(got5.sigma, want5.sigma));

  // --images DIR without --make-ref: the FID of the folder against --ref (fid.py calc), the same
  // number as the statistics written above scored with --stats.
  for (const std::string& num : {std::string(), std::string(" --num 5")}) {
    const std::string stats = dir + (num.empty() ? "/all.npz" : "/part.npz");
    auto calc = tool("eval/fid_worker", "--batch 4 --ref " + w.ref + num + args, dir);
    ASSERT_EQ(calc.rc, 0) << calc.err;
    EXPECT_CONTAINS(calc.out, (num.empty() ? "11 images of " : "5 images of ") + images);
    auto direct = tool("eval/fid_worker", "--stats " + stats + " --ref " + w.ref, dir);
    ASSERT_EQ(direct.rc, 0) << direct.err;
    EXPECT_EQ(last_line(calc.out), last_line(direct.out));
    EXPECT_GT(std::stod(last_line(calc.out).substr(5)), 1e-6);
  }
  auto other_subset = tool("eval/fid_worker", "--batch 4 --num 5 --subset-seed 1 --ref " + dir + "/part.npz" + args, dir);
  ASSERT_EQ(other_subset.rc, 0) << other_subset.err;
  EXPECT_GT(std::stod(last_line(other_subset.out).substr(5)), 1e-6) << "another seed, another subset";
  auto same_subset = tool("eval/fid_worker", "--batch 4 --num 5 --subset-seed 0 --ref " + dir + "/part.npz" + args, dir);
  ASSERT_EQ(same_subset.rc, 0) << same_subset.err;
  EXPECT_NEAR(std::stod(last_line(same_subset.out).substr(5)), 0.0, 1e-9);

  // A colour image for a grey extractor, --data with --images, a folder of BMPs: exit 1, a message,
  // no file written.
  nt::write_png(images + "/more/colour.PNG", torch::zeros({8, 8, 3}, torch::kUInt8).index_fill_(2, torch::tensor({0}), 255));
  auto colour = tool("eval/fid_worker", "--make-ref --out " + dir + "/colour.npz" + args, dir);
  EXPECT_EQ(colour.rc, 1);
  EXPECT_CONTAINS(colour.err, "colour.PNG' is a colour image");
  EXPECT_FALSE(fs::exists(dir + "/colour.npz"));
  auto both = tool("eval/fid_worker", "--make-ref --data " + w.data + " --out " + dir + "/both.npz" + args, dir);
  EXPECT_EQ(both.rc, 1);
  EXPECT_CONTAINS(both.err, "one of them");
  fs::create_directories(dir + "/bmp");
  nt::test::write_text(dir + "/bmp/a.bmp", "BM");
  auto bmp = tool("eval/fid_worker", "--make-ref --out " + dir + "/bmp.npz --extractor classifier --extractor-weights " +
                                         w.classifier + " --images " + dir + "/bmp",
                  dir);
  EXPECT_EQ(bmp.rc, 1);
  EXPECT_CONTAINS(bmp.err, "a.bmp");
  EXPECT_FALSE(fs::exists(dir + "/bmp.npz"));
}

TEST(FidWorker, RunDirScoresEachCheckpointOnce) {
  const World& w = world();
  // A copy of the run, so that other tests see the original.
  const std::string dir = nt::test::scratch_dir();
  const std::string run = dir + "/run";
  fs::copy(w.run, run, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  ASSERT_TRUE(fs::exists(run + "/ckpt/" + nt::checkpoint_name(2)));
  ASSERT_TRUE(fs::exists(run + "/ckpt/" + nt::checkpoint_name(4)));
  const size_t lines_before = [&] {
    std::ifstream in(run + "/metrics.jsonl");
    return static_cast<size_t>(std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n'));
  }();

  auto first = tool("eval/fid_worker", "--run-dir " + run, dir);
  ASSERT_EQ(first.rc, 0) << first.out << first.err;
  auto evals = eval_lines(run);
  ASSERT_EQ(evals.size(), 2u) << first.out;
  EXPECT_EQ(evals[0].at("step"), 2);
  EXPECT_EQ(evals[1].at("step"), 4);
  for (const auto& e : evals) {
    EXPECT_EQ(e.at("extractor"), "classifier");
    EXPECT_EQ(e.at("num_samples"), 8);
    EXPECT_EQ(e.at("cfg_scale"), 1.0);
    EXPECT_GT(e.at("fid").get<double>(), 0.0);
    EXPECT_TRUE(e.contains("seconds"));
  }
  EXPECT_TRUE(fs::exists(run + "/samples/eval_step_00000002.png"));
  EXPECT_TRUE(fs::exists(run + "/samples/eval_step_00000004.png"));

  auto second = tool("eval/fid_worker", "--run-dir " + run, dir);
  ASSERT_EQ(second.rc, 0) << second.err;
  EXPECT_EQ(eval_lines(run).size(), 2u) << "a second invocation scores nothing again";

  // --watch on a finished run (train.steps = 4 is checkpointed and scored) ends by itself.
  std::string out;
  const int rc = nt::test::run_command("timeout 60 " + nt::test::exe("eval/fid_worker") + " --run-dir " + run +
                                           " --watch --poll 0.1",
                                       &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(eval_lines(run).size(), 2u);

  // Another guidance scale is another evaluation.
  auto cfg = tool("eval/fid_worker", "--run-dir " + run + " --cfg-scale 2", dir);
  ASSERT_EQ(cfg.rc, 0) << cfg.err;
  evals = eval_lines(run);
  ASSERT_EQ(evals.size(), 4u);
  EXPECT_EQ(evals[2].at("cfg_scale"), 2.0);
  EXPECT_TRUE(fs::exists(run + "/samples/eval_step_00000004_cfg2.png"));
  // So is stochastic sampling (S_churn, as the reference's eval.S_churn): recorded in the line.
  for (int i = 0; i < 2; ++i) {  // the second time: already scored
    auto churn = tool("eval/fid_worker", "--run-dir " + run + " --s-churn 1.5", dir);
    ASSERT_EQ(churn.rc, 0) << churn.err;
  }
  evals = eval_lines(run);
  ASSERT_EQ(evals.size(), 6u);
  EXPECT_EQ(evals[4].at("step"), 2);
  EXPECT_EQ(evals[5].at("S_churn"), 1.5);
  EXPECT_EQ(evals[1].at("S_churn"), 0.0);
  EXPECT_NE(evals[5].at("fid").get<double>(), evals[1].at("fid").get<double>());
  EXPECT_TRUE(fs::exists(run + "/samples/eval_step_00000004_churn1.5.png"));

  // --checkpoint: the same FID as the run's line (same settings from the checkpoint's config).
  auto one = tool("eval/fid_worker", "--checkpoint " + run + "/ckpt/" + nt::checkpoint_name(4), dir);
  ASSERT_EQ(one.rc, 0) << one.err;
  const std::string line = last_line(one.out);
  ASSERT_EQ(line.rfind("fid: ", 0), 0u) << one.out;
  EXPECT_NEAR(std::stod(line.substr(5)), evals[1].at("fid").get<double>(), 1e-5);
  EXPECT_CONTAINS(one.err, "samples");

  // The training lines are untouched.
  std::ifstream in(run + "/metrics.jsonl");
  const size_t lines_after = std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  EXPECT_EQ(lines_after, lines_before + 6);
}

TEST(FidWorker, ErrorsExitOneWithAMessage) {
  const World& w = world();
  const std::string dir = nt::test::scratch_dir();
  const std::string ck = w.run + "/ckpt/" + nt::checkpoint_name(2);
  auto expect_error = [&](const std::string& args, const std::string& part) {
    auto r = tool("eval/fid_worker", args, dir);
    EXPECT_EQ(r.rc, 1) << args << "\n" << r.out << r.err;
    EXPECT_CONTAINS(r.err, part);
    EXPECT_LACKS(r.out, "fid:");
  };
  expect_error("--checkpoint " + dir + "/nope", "nope");
  expect_error("--checkpoint " + ck + " --extractor-weights " + dir + "/none.safetensors", "none.safetensors");
  expect_error("--checkpoint " + ck + " --ref " + dir + "/none.npz", "none.npz");
  expect_error("--checkpoint " + ck + " --ref ''", "eval.ref_stats");
  expect_error("--checkpoint " + ck + " --extractor inception", "cls.safetensors");
  expect_error("--checkpoint " + ck + " --num-samples 200", "fewer than");
  expect_error("--checkpoint " + ck + " --run-dir " + w.run, "exactly one");
  nt::write_stats_npz(dir + "/d3.npz", {torch::zeros({3}, torch::kFloat64), torch::eye(3, torch::kFloat64), 0});
  expect_error("--checkpoint " + ck + " --ref " + dir + "/d3.npz", "d3.npz");

  // A corrupt checkpoint: --checkpoint fails; --run-dir scores the good one, reports the bad one.
  const std::string run = dir + "/run";
  fs::copy(w.run, run, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  const std::string rank_file = run + "/ckpt/" + nt::checkpoint_name(2) + "/" + nt::rank_file_name(0);
  std::string bytes = nt::test::read_text(rank_file);
  bytes[bytes.size() - 9] ^= 0x21;
  nt::test::write_text(rank_file, bytes);
  expect_error("--checkpoint " + run + "/ckpt/" + nt::checkpoint_name(2), "corrupt");
  auto r = tool("eval/fid_worker", "--run-dir " + run, dir);
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, nt::rank_file_name(0));
  const auto evals = eval_lines(run);
  ASSERT_EQ(evals.size(), 1u);
  EXPECT_EQ(evals[0].at("step"), 4);
}

}  // namespace
