// End-to-end training through the executables: resuming is bit-identical to an uninterrupted
// run, resume = "never" and explicit folders, refusal of incomplete or corrupted checkpoints
// with a fallback, another model's checkpoint as an error, export with the reference names,
// and tread_sample's outputs (.h5 layout, batch invariance, class rows, PNG).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "data/hdf5_check.h"
#include "data/sample_file.h"
#include "dist/sharded_checkpoint.h"
#include "models/dit.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using nt::H5Id;
using nt::test::exe;
using nt::test::run_command;
using nt::test::read_text;
using nt::test::tool;
using nt::test::write_text;
using Result = nt::test::ToolResult;


void flip_byte(const fs::path& p) {
  std::string b = read_text(p);
  ASSERT_GT(b.size(), 100u) << p;
  b[b.size() - 17] = static_cast<char>(b[b.size() - 17] ^ 0x5a);  // inside the tensor data
  write_text(p, b);
}

// A /moments [20,2,8,8] float32 pixel-space dataset with labels i % 10 and 10 classes: with a
// global batch of 8, an epoch is 2 batches, so 12 steps cross several epochs, and every read
// draws fresh moment noise.
void write_data(const std::string& path) {
  nt::h5_silence();
  const int64_t n = 20;
  torch::manual_seed(42);
  auto mean = torch::rand({n, 1, 8, 8}) * 2 - 1;
  auto logvar = torch::full({n, 1, 8, 8}, -6.f);
  auto moments = torch::cat({mean, logvar}, 1).contiguous();  // [20,2,8,8]
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 10;
  H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  const hsize_t dims[4] = {hsize_t(n), 2, 8, 8};
  H5Id space(H5Screate_simple(4, dims, nullptr));
  H5Id d(H5Dcreate2(file.get(), "moments", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_GE(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, moments.data_ptr<float>()), 0);
  H5Id lspace(H5Screate_simple(1, dims, nullptr));
  H5Id l(H5Dcreate2(file.get(), "labels", H5T_STD_I64LE, lspace.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_GE(H5Dwrite(l.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data()), 0);
  H5Id scalar(H5Screate(H5S_SCALAR));
  H5Id a(H5Acreate2(file.get(), "num_classes", H5T_STD_I64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
  const int64_t k = 10;
  ASSERT_GE(H5Awrite(a.get(), H5T_NATIVE_INT64, &k), 0);
  const std::string space_name = "pixels";
  H5Id stype(H5Tcopy(H5T_C_S1));
  H5Tset_size(stype.get(), space_name.size() + 1);
  H5Id s(H5Acreate2(file.get(), "latent_space", stype.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_GE(H5Awrite(s.get(), stype.get(), space_name.c_str()), 0);
}

// The test config: a 3-block DiT on 8x8x1 with a TREAD route, class dropout, clipping and
// warm-up, checkpoints every 4 steps, every step logged.
std::string config_text(const std::string& dir, const std::string& data, int hidden = 32) {
  std::ostringstream s;
  s << "[run]\nname = \"r\"\ndir = \"" << dir << "/runs\"\nseed = 5\n"
    << "[model]\nname = \"DiT-S/2\"\ninput_size = 8\nin_channels = 1\nnum_classes = 10\n"
    << "depth = 3\nhidden_size = " << hidden << "\nnum_heads = 2\npatch_size = 2\n"
    << "[[model.routes]]\nselection_ratio = 0.5\nstart_layer = 1\nend_layer = 1\n"
    << "[diffusion]\nclass_drop_prob = 0.25\n"
    << "[data]\npaths = [\"" << data << "\"]\n"
    << "[train]\nglobal_batch = 8\nsteps = 12\nprecision = \"fp32\"\ngrad_clip = 0.5\nlog_every = 1\n"
    << "device = \"cpu\"\nthreads = 1\n"
    << "[optim]\nlr = 2e-3\nwarmup_steps = 2\nweight_decay = 0.01\n"
    << "[ema]\ndecay = 0.9\n"
    << "[checkpoint]\nevery = 4\nkeep_last = 100\nkeep_every = 0\n";
  return s.str();
}

struct Fixture {
  std::string dir, data, config;
  std::string run_dir(const std::string& name) const { return dir + "/runs/" + name; }
  std::string ckpt(const std::string& name, int64_t step) const {
    return run_dir(name) + "/ckpt/" + nt::checkpoint_name(step);
  }
};

Fixture make_fixture(int hidden = 32) {
  Fixture f;
  f.dir = nt::test::scratch_dir();
  f.data = f.dir + "/data.h5";
  write_data(f.data);
  f.config = f.dir + "/train.toml";
  write_text(f.config, config_text(f.dir, f.data, hidden));
  return f;
}

Result train(const Fixture& f, const std::string& name, const std::vector<std::string>& sets) {
  std::string args = "--config " + f.config + " --set run.name=" + name;
  for (const auto& s : sets) args += " --set '" + s + "'";
  return tool("launch/tread_run", args, f.dir);
}

// (step, loss) of each training line of metrics.jsonl, in file order.
std::vector<std::pair<int64_t, double>> loss_lines(const std::string& run_dir) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("kind")) continue;
    out.emplace_back(j.at("step").get<int64_t>(), j.at("loss").get<double>());
  }
  return out;
}

// step -> loss of the lines [begin, end) of loss_lines.
std::map<int64_t, double> losses(const std::string& run_dir, size_t begin = 0, size_t end = SIZE_MAX) {
  const auto lines = loss_lines(run_dir);
  std::map<int64_t, double> out;
  for (size_t i = begin; i < std::min(end, lines.size()); ++i) {
    EXPECT_FALSE(out.count(lines[i].first)) << "step " << lines[i].first << " logged twice";
    out[lines[i].first] = lines[i].second;
  }
  return out;
}

// Every tensor of two rank files is identical (names, dtypes, shapes, bits).
void expect_same_rank_files(const std::string& a, const std::string& b) {
  auto fa = nt::load_safetensors(a), fb = nt::load_safetensors(b);
  ASSERT_EQ(fa.tensors.size(), fb.tensors.size()) << a << " vs " << b;
  int kinds = 0;
  for (const auto& [name, t] : fa.tensors) {
    ASSERT_TRUE(fb.tensors.count(name)) << b << " lacks " << name;
    EXPECT_TRUE(torch::equal(t, fb.tensors.at(name))) << name << " differs between " << a << " and " << b;
    for (const char* kind : {".param", ".ema", ".exp_avg", ".exp_avg_sq"})
      if (name == std::string("root") + kind) ++kinds;
  }
  EXPECT_EQ(kinds, 4) << "the rank file should hold param, ema, exp_avg and exp_avg_sq";
  EXPECT_TRUE(fa.tensors.count("rng.train"));
}

void expect_same_checkpoint(const std::string& a, const std::string& b) {
  expect_same_rank_files(a + "/" + nt::rank_file_name(0), b + "/" + nt::rank_file_name(0));
  auto ma = nt::read_verified_manifest(a), mb = nt::read_verified_manifest(b);
  EXPECT_EQ(ma.at("step"), mb.at("step"));
  EXPECT_EQ(ma.at("loader"), mb.at("loader"));
  EXPECT_EQ(ma.at("optimizer"), mb.at("optimizer"));
  EXPECT_EQ(ma.at("layout"), mb.at("layout"));
}

TEST(Train, ResumeIsBitIdenticalToUninterrupted) {
  const Fixture f = make_fixture();
  // A: 12 steps in one go.
  Result a = train(f, "a", {});
  ASSERT_EQ(a.rc, 0) << a.out << a.err;
  EXPECT_LACKS(a.out, "resumed from");
  for (int64_t s : {4, 8, 12}) EXPECT_TRUE(fs::exists(f.ckpt("a", s) + "/manifest.json")) << s;
  // B: 8 steps, then the same config to 12 resumes by itself from step 8.
  Result b1 = train(f, "b", {"train.steps=8"});
  ASSERT_EQ(b1.rc, 0) << b1.out << b1.err;
  const size_t b1_lines = loss_lines(f.run_dir("b")).size();
  EXPECT_EQ(b1_lines, 8u);
  EXPECT_FALSE(fs::exists(f.ckpt("b", 12)));
  Result b2 = train(f, "b", {});
  ASSERT_EQ(b2.rc, 0) << b2.out << b2.err;
  EXPECT_CONTAINS(b2.out, "resumed from " + f.ckpt("b", 8) + " at step 8");
  expect_same_checkpoint(f.ckpt("a", 12), f.ckpt("b", 12));
  expect_same_checkpoint(f.ckpt("a", 8), f.ckpt("b", 8));

  // The losses after the resume are those of the uninterrupted run, bit for bit.
  const auto la = losses(f.run_dir("a"));
  const auto lb1 = losses(f.run_dir("b"), 0, b1_lines), lb2 = losses(f.run_dir("b"), b1_lines);
  ASSERT_EQ(la.size(), 12u);
  ASSERT_EQ(lb2.size(), 4u) << "the resumed invocation logs steps 9..12";
  for (const auto& [step, loss] : lb2) {
    EXPECT_GT(step, 8);
    EXPECT_EQ(loss, la.at(step)) << "step " << step;
  }
  for (const auto& [step, loss] : lb1) EXPECT_EQ(loss, la.at(step)) << "step " << step;
  // Not a constant: the training actually does something each step.
  EXPECT_NE(la.at(9), la.at(10));

  // C: an explicit folder (another run's checkpoint) as the starting point.
  Result c = train(f, "c", {"checkpoint.resume=\"" + f.ckpt("a", 4) + "\""});
  ASSERT_EQ(c.rc, 0) << c.out << c.err;
  EXPECT_CONTAINS(c.out, "resumed from " + f.ckpt("a", 4) + " at step 4");
  EXPECT_FALSE(fs::exists(f.ckpt("c", 4))) << "steps before the resume are not trained again";
  expect_same_checkpoint(f.ckpt("a", 12), f.ckpt("c", 12));
  const auto lc = losses(f.run_dir("c"));
  ASSERT_EQ(lc.size(), 8u);
  for (const auto& [step, loss] : lc) EXPECT_EQ(loss, la.at(step)) << "step " << step;
}

TEST(Train, ResumeNeverStartsFromScratch) {
  const Fixture f = make_fixture();
  Result r1 = train(f, "n", {"train.steps=4"});
  ASSERT_EQ(r1.rc, 0) << r1.out << r1.err;
  Result r2 = train(f, "n", {"train.steps=8", "checkpoint.resume=never"});
  ASSERT_EQ(r2.rc, 0) << r2.out << r2.err;
  EXPECT_LACKS(r2.out, "resumed from");
  const auto first = losses(f.run_dir("n"), 0, 4), second = losses(f.run_dir("n"), 4);
  ASSERT_EQ(first.size(), 4u);
  ASSERT_EQ(second.size(), 8u) << "the second run must train steps 1..8";
  EXPECT_EQ(second.begin()->first, 1);
  for (int64_t s = 1; s <= 4; ++s) EXPECT_EQ(second.at(s), first.at(s)) << "step " << s;
  EXPECT_EQ(nt::read_verified_manifest(f.ckpt("n", 8)).at("step").get<int64_t>(), 8);
  // With "auto" again, it resumes from the newest.
  Result r3 = train(f, "n", {"train.steps=9"});
  ASSERT_EQ(r3.rc, 0) << r3.out << r3.err;
  EXPECT_CONTAINS(r3.out, "resumed from " + f.ckpt("n", 8) + " at step 8");
}

TEST(Train, CheckpointWithoutManifestIsNotResumedFrom) {
  const Fixture f = make_fixture();
  ASSERT_EQ(train(f, "m", {"train.steps=8"}).rc, 0);
  ASSERT_TRUE(fs::remove(f.ckpt("m", 8) + "/manifest.json"));
  Result r = train(f, "m", {});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_CONTAINS(r.out, "resumed from " + f.ckpt("m", 4) + " at step 4");
  EXPECT_CONTAINS(r.err, f.ckpt("m", 8));
  EXPECT_CONTAINS(r.err, "manifest");
  // It trained steps 5..12 and rewrote step 8 completely.
  EXPECT_EQ(nt::read_verified_manifest(f.ckpt("m", 8)).at("step").get<int64_t>(), 8);
  EXPECT_EQ(nt::read_verified_manifest(f.ckpt("m", 12)).at("step").get<int64_t>(), 12);
  EXPECT_EQ(fs::canonical(f.run_dir("m") + "/ckpt/latest"), fs::canonical(f.ckpt("m", 12)));
}

TEST(Train, CorruptedRankFileFallsBackToThePrevious) {
  const Fixture f = make_fixture();
  ASSERT_EQ(train(f, "x", {"train.steps=8"}).rc, 0);
  const std::string bad = f.ckpt("x", 8) + "/" + nt::rank_file_name(0);
  flip_byte(bad);
  Result r = train(f, "x", {"train.steps=9"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_CONTAINS(r.out, "resumed from " + f.ckpt("x", 4) + " at step 4");
  EXPECT_CONTAINS(r.err, bad);
  EXPECT_CONTAINS(r.err, "corrupted");
  EXPECT_CONTAINS(r.err, "falling back");
  // An explicitly named corrupted folder is an error, not a silent fresh start.
  ASSERT_EQ(train(f, "y", {"train.steps=8"}).rc, 0);
  const std::string bad_y = f.ckpt("y", 8) + "/" + nt::rank_file_name(0);
  flip_byte(bad_y);
  Result e = train(f, "z", {"checkpoint.resume=\"" + f.ckpt("y", 8) + "\""});
  EXPECT_EQ(e.rc, 1) << e.out << e.err;
  EXPECT_CONTAINS(e.err, bad_y);
}

TEST(Train, AnotherModelsCheckpointIsAnError) {
  const Fixture f = make_fixture();
  ASSERT_EQ(train(f, "small", {"train.steps=4"}).rc, 0);
  // Explicit folder of a 32-wide model for a 64-wide run.
  Result r = train(f, "big", {"model.hidden_size=64", "checkpoint.resume=\"" + f.ckpt("small", 4) + "\""});
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_CONTAINS(r.err, f.ckpt("small", 4));
  EXPECT_CONTAINS(r.err, "another model");
  EXPECT_LACKS(r.err, "terminate called");
  EXPECT_FALSE(fs::exists(f.ckpt("big", 4)));
  // The same through automatic resume: a run folder reused with a changed model.
  Result a = train(f, "small", {"model.hidden_size=64", "train.steps=8"});
  EXPECT_EQ(a.rc, 1) << a.out << a.err;
  EXPECT_CONTAINS(a.err, f.ckpt("small", 4));
  EXPECT_FALSE(fs::exists(f.ckpt("small", 8)));
}

TEST(TreadExport, ReferenceNamesAndCheckpointValues) {
  const Fixture f = make_fixture();
  ASSERT_EQ(train(f, "e", {"train.steps=4"}).rc, 0);
  const std::string ck = f.run_dir("e") + "/ckpt/latest";
  const std::string ema_file = f.dir + "/ema.safetensors", raw_file = f.dir + "/raw.safetensors";
  Result ex = tool("launch/tread_export", "--checkpoint " + ck + " --out " + ema_file, f.dir);
  ASSERT_EQ(ex.rc, 0) << ex.out << ex.err;
  Result exr = tool("launch/tread_export", "--checkpoint " + ck + " --out " + raw_file + " --weights raw", f.dir);
  ASSERT_EQ(exr.rc, 0) << exr.out << exr.err;

  auto ema = nt::load_safetensors(ema_file);
  auto raw = nt::load_safetensors(raw_file);
  // Exactly the reference state_dict names.
  std::vector<std::string> expected = {"x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight",
                                       "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
                                       "y_embedder.embedding_table.weight", "pos_embed"};
  for (int i = 0; i < 3; ++i)
    for (const char* p : {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"})
      for (const char* wb : {".weight", ".bias"}) expected.push_back("blocks." + std::to_string(i) + "." + p + wb);
  for (const char* p : {"final_layer.linear.weight", "final_layer.linear.bias", "final_layer.adaLN_modulation.1.weight",
                        "final_layer.adaLN_modulation.1.bias"})
    expected.push_back(p);
  std::set<std::string> names(ema.order.begin(), ema.order.end());
  EXPECT_EQ(names, std::set<std::string>(expected.begin(), expected.end()));
  EXPECT_EQ(ema.tensors.at("blocks.0.attn.qkv.weight").sizes(), (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(ema.tensors.at("pos_embed").sizes(), (std::vector<int64_t>{1, 16, 32}));
  EXPECT_EQ(ema.tensors.at("y_embedder.embedding_table.weight").sizes(), (std::vector<int64_t>{11, 32}));

  // Values: the checkpoint's EMA (resp. raw) weights; pos_embed the fixed sin-cos table.
  const std::string dir = fs::canonical(ck).string();
  const auto m = nt::read_verified_manifest(dir);
  auto ck_ema = nt::load_full_tensors(dir, m, "ema");
  auto ck_raw = nt::load_full_tensors(dir, m, "param");
  ASSERT_EQ(ck_ema.size(), expected.size() - 1);
  for (const auto& [name, t] : ck_ema) {
    EXPECT_TRUE(torch::equal(ema.tensors.at(name), t)) << name;
    EXPECT_TRUE(torch::equal(raw.tensors.at(name), ck_raw.at(name))) << name;
  }
  EXPECT_FALSE(torch::equal(ema.tensors.at("blocks.1.mlp.fc1.weight"), raw.tensors.at("blocks.1.mlp.fc1.weight")))
      << "after 4 steps with decay 0.9 the EMA differs from the raw weights";
  auto table = nt::get_2d_sincos_pos_embed(32, 4).to(at::kFloat).unsqueeze(0);
  EXPECT_TRUE(torch::equal(ema.tensors.at("pos_embed"), table));

  // Sampling the exported file with the run's config gives exactly the checkpoint's samples.
  const std::string a = f.dir + "/from_ckpt.h5", b = f.dir + "/from_weights.h5";
  const std::string common = " --seeds 0-5 --steps 5 --device cpu --out ";
  Result s1 = tool("launch/tread_sample", "--checkpoint " + ck + common + a, f.dir);
  ASSERT_EQ(s1.rc, 0) << s1.out << s1.err;
  Result s2 = tool("launch/tread_sample",
                   "--config " + f.run_dir("e") + "/config.toml --weights " + ema_file + common + b, f.dir);
  ASSERT_EQ(s2.rc, 0) << s2.out << s2.err;
  EXPECT_TRUE(torch::equal(nt::read_sample_file(a).samples, nt::read_sample_file(b).samples));
  EXPECT_TRUE(torch::equal(nt::read_sample_file(a).labels, nt::read_sample_file(b).labels));
  // And the raw weights sample differently.
  const std::string c = f.dir + "/from_raw.h5";
  Result s3 = tool("launch/tread_sample", "--checkpoint " + ck + " --weights-kind raw" + common + c, f.dir);
  ASSERT_EQ(s3.rc, 0) << s3.out << s3.err;
  EXPECT_FALSE(torch::equal(nt::read_sample_file(a).samples, nt::read_sample_file(c).samples));
}

// PNG width and height from the IHDR chunk.
std::pair<uint32_t, uint32_t> png_size(const std::string& path) {
  const std::string b = read_text(path);
  EXPECT_GE(b.size(), 24u) << path;
  if (b.size() < 24) return {0, 0};
  EXPECT_EQ(b.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path << " is not a PNG";
  EXPECT_EQ(b.substr(12, 4), "IHDR");
  auto be32 = [&](size_t o) {
    return (uint32_t(uint8_t(b[o])) << 24) | (uint32_t(uint8_t(b[o + 1])) << 16) | (uint32_t(uint8_t(b[o + 2])) << 8) |
           uint32_t(uint8_t(b[o + 3]));
  };
  return {be32(16), be32(20)};
}

TEST(TreadSample, OutputLayoutBatchInvarianceClassesAndPng) {
  const Fixture f = make_fixture();
  ASSERT_EQ(train(f, "s", {"train.steps=4"}).rc, 0);
  const std::string ck = f.run_dir("s") + "/ckpt/latest";
  auto sample = [&](const std::string& args, const std::string& out) {
    Result r = tool("launch/tread_sample", "--checkpoint " + ck + " --steps 5 --device cpu " + args + " --out " + out, f.dir);
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    return r;
  };
  const std::string b1 = f.dir + "/b1.h5", b64 = f.dir + "/b64.h5", b4 = f.dir + "/b4.h5";
  sample("--seeds 0-5 --batch 1", b1);
  sample("--seeds 0-5 --batch 64", b64);
  sample("--seeds 0-5 --batch 4", b4);
  auto s1 = nt::read_sample_file(b1).samples, s64 = nt::read_sample_file(b64).samples;
  ASSERT_TRUE(s1.defined() && s64.defined());
  EXPECT_EQ(s1.sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_TRUE(torch::equal(s1, s64)) << "the batch size must not change a sample";
  EXPECT_TRUE(torch::equal(s1, nt::read_sample_file(b4).samples));
  EXPECT_TRUE(torch::isfinite(s1).all().item<bool>());
  EXPECT_GT(s1.std().item<float>(), 0.f);
  auto labels = nt::read_sample_file(b1).labels, seeds = nt::read_sample_file(b1).seeds;
  EXPECT_EQ(labels.sizes(), (std::vector<int64_t>{6}));
  EXPECT_TRUE(torch::equal(labels, nt::read_sample_file(b64).labels));
  EXPECT_TRUE((labels >= 0).all().item<bool>() && (labels < 10).all().item<bool>());
  EXPECT_TRUE(torch::equal(seeds, torch::arange(6, at::kLong)));
  // A sample depends on its seed only: seed 3 alone equals row 3.
  const std::string one = f.dir + "/one.h5";
  sample("--seeds 3", one);
  EXPECT_TRUE(torch::equal(nt::read_sample_file(one).samples[0], s1[3]));

  // One row per class.
  const std::string cls = f.dir + "/classes.h5";
  sample("--seeds 0-3 --classes 0-1", cls);
  EXPECT_TRUE(torch::equal(nt::read_sample_file(cls).labels, torch::tensor({0, 0, 1, 1}, at::kLong)));
  EXPECT_TRUE(torch::equal(nt::read_sample_file(cls).seeds, torch::arange(4, at::kLong)));

  // A PNG grid: 6 images of 8x8 zoomed 8x, 3 per row, 2-pixel borders -> 200 x 134.
  const std::string png = f.dir + "/grid/samples.png";
  Result r = sample("--seeds 0-5", png);
  ASSERT_TRUE(fs::exists(png)) << r.out << r.err;
  auto [w, h] = png_size(png);
  EXPECT_EQ(w, 3u * (8 * 8 + 2) + 2);
  EXPECT_EQ(h, 2u * (8 * 8 + 2) + 2);
}

// SIGUSR1 (Slurm's warning before the time limit) or SIGTERM: the trainer finishes its step,
// writes a checkpoint, exits 0; the same command resumes from there.
TEST(Train, StopSignalCheckpointsAndTheSameCommandResumes) {
  for (const char* sig : {"USR1", "TERM"}) {
    Fixture f = make_fixture();
    const std::string name = std::string("sig_") + sig;
    const std::string metrics = f.run_dir(name) + "/metrics.jsonl";
    const std::string cmd = exe("launch/tread_run") + " --config " + f.config + " --set run.name=" + name +
                            " --set train.steps=1000000 --set checkpoint.every=0";
    // Start, wait for three logged steps (at most 60 s), signal, wait for the exit code.
    std::string out;
    const int rc = run_command(
        "(" + cmd + " > " + f.dir + "/out.txt 2>&1 & pid=$!; for i in $(seq 600); do "
        "[ -f " + metrics + " ] && [ $(wc -l < " + metrics + ") -ge 3 ] && break; sleep 0.1; done; "
        "kill -" + sig + " $pid; wait $pid; echo rc=$?)", &out);
    ASSERT_EQ(rc, 0) << out;
    EXPECT_CONTAINS(out, "rc=0");
    const std::string log = read_text(f.dir + "/out.txt");
    EXPECT_CONTAINS(log, "stopped by signal");
    const auto m = nt::read_verified_manifest(f.run_dir(name) + "/ckpt/latest");
    const int64_t stopped = m.at("step").get<int64_t>();
    EXPECT_GE(stopped, 3);
    // The same command, asked for two more steps, resumes from the checkpoint.
    Result r = train(f, name, {"train.steps=" + std::to_string(stopped + 2)});
    ASSERT_EQ(r.rc, 0) << r.out << r.err;
    EXPECT_CONTAINS(r.out, "resumed from");
    EXPECT_EQ(nt::read_verified_manifest(f.run_dir(name) + "/ckpt/latest").at("step").get<int64_t>(), stopped + 2);
  }
}

}  // namespace
