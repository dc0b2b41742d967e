// The FID feature classifier: shapes, training on a small synthetic set (it learns; the same
// seed gives the same weights), save/load round trip with its architecture metadata, and files
// that must be refused with the file and the tensor or key named.
#include "models/classifier.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string>

#include "core/safetensors.h"
#include "test_util.h"

namespace {

using nt::Classifier;
using nt::ClassifierConfig;
using nt::test::thrown_message;

// n images [n,1,16,16] in [0,1] of 4 classes: a bright 6x6 square in quadrant (label) of a dim
// noisy background, its position jittered by up to 2 pixels.
void synthetic(int64_t n, uint64_t seed, at::Tensor* x, at::Tensor* y) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  *x = torch::rand({n, 1, 16, 16}, g, torch::kFloat) * 0.3;
  *y = torch::randint(0, 4, {n}, g, torch::kLong);
  const auto jitter = torch::randint(0, 3, {n, 2}, g, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = (*y)[i].item<int64_t>();
    const int64_t r = (k / 2) * 8 + jitter[i][0].item<int64_t>(), c = (k % 2) * 8 + jitter[i][1].item<int64_t>();
    (*x)[i][0].narrow(0, r, 6).narrow(1, c, 6).fill_(0.9);
  }
}

TEST(Classifier, ShapesFor16And32) {
  for (int size : {16, 32}) {
    ClassifierConfig c;
    c.input_size = size;
    c.in_channels = size == 32 ? 3 : 1;
    Classifier m(c);
    auto x = torch::rand({5, c.in_channels, size, size});
    EXPECT_EQ(m->features(x).sizes(), (std::vector<int64_t>{5, 128})) << size;
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{5, 10})) << size;
    EXPECT_GE(m->features(x).min().item<float>(), 0.0f);  // after the ReLU
  }
  Classifier m(ClassifierConfig{});
  EXPECT_THROW(m->features(torch::rand({2, 1, 32, 32})), c10::Error);
  EXPECT_THROW(m->features(torch::rand({2, 3, 16, 16})), c10::Error);
  ClassifierConfig bad;
  bad.input_size = 18;
  EXPECT_THROW(Classifier{bad}, std::invalid_argument);
}

TEST(Classifier, LearnsSyntheticClassesDeterministically) {
  torch::set_num_threads(1);
  at::Tensor x, y, xv, yv;
  synthetic(512, 1, &x, &y);
  synthetic(128, 2, &xv, &yv);
  ClassifierConfig c;
  c.num_classes = 4;
  c.feature_dim = 32;
  c.width = 8;
  nt::ClassifierTraining t;
  t.epochs = 3;
  t.batch_size = 32;
  t.seed = 7;
  torch::manual_seed(3);
  Classifier a(c);
  const double before = nt::classifier_accuracy(a, xv, yv);
  int calls = 0;
  const auto losses = nt::train_classifier(a, x, y, t, [&](int epoch, double) { EXPECT_EQ(epoch, calls++); });
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(losses.size(), 3u);
  EXPECT_LT(losses.back(), losses.front());
  const double after = nt::classifier_accuracy(a, xv, yv);
  EXPECT_GT(after, 0.95) << "before training: " << before;
  EXPECT_EQ(a->features(xv).sizes(), (std::vector<int64_t>{128, 32}));

  torch::manual_seed(3);
  Classifier b(c);
  nt::train_classifier(b, x, y, t);
  for (const auto& p : a->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()])) << p.key() << " differs for the same seed";
  torch::manual_seed(3);
  Classifier d(c);
  t.seed = 8;  // another shuffling
  nt::train_classifier(d, x, y, t);
  EXPECT_FALSE(torch::equal(a->fc2->weight, d->fc2->weight));
  EXPECT_THROW(nt::train_classifier(d, x, y.narrow(0, 0, 5), t), std::invalid_argument);
}

TEST(Classifier, SaveLoadRoundTrip) {
  const std::string dir = nt::test::scratch_dir();
  ClassifierConfig c;
  c.input_size = 32;
  c.num_classes = 7;
  c.feature_dim = 40;
  c.width = 6;
  Classifier m(c);
  nt::save_classifier(m, dir + "/c.safetensors", {{"val_accuracy", "0.5"}});
  auto f = nt::load_safetensors(dir + "/c.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "nt-classifier");
  EXPECT_EQ(f.metadata.at("feature_dim"), "40");
  EXPECT_EQ(f.metadata.at("val_accuracy"), "0.5");
  EXPECT_EQ(f.tensors.size(), 8u);
  Classifier l = nt::load_classifier(dir + "/c.safetensors", c10::Device(c10::kCPU));
  EXPECT_EQ(l->cfg.input_size, 32);
  EXPECT_EQ(l->cfg.num_classes, 7);
  EXPECT_EQ(l->cfg.feature_dim, 40);
  EXPECT_EQ(l->cfg.width, 6);
  EXPECT_FALSE(l->is_training());
  m->eval();
  auto x = torch::rand({3, 1, 32, 32});
  EXPECT_TRUE(torch::equal(m->features(x), l->features(x)));
}

TEST(Classifier, BadFilesNameTheFileAndTensor) {
  const std::string dir = nt::test::scratch_dir();
  const c10::Device cpu(c10::kCPU);
  Classifier m(ClassifierConfig{});
  const std::string good = dir + "/good.safetensors";
  nt::save_classifier(m, good);
  const auto file = nt::load_safetensors(good);
  auto rewrite = [&](const std::string& name, auto edit_tensors, auto edit_meta) {
    std::vector<nt::NamedTensor> ts;
    for (const auto& n : file.order) ts.push_back({n, file.tensors.at(n)});
    auto meta = file.metadata;
    edit_tensors(ts);
    edit_meta(meta);
    nt::save_safetensors(dir + "/" + name, ts, meta);
    return dir + "/" + name;
  };
  auto keep = [](auto&) {};

  auto msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(dir + "/none.safetensors", cpu); });
  EXPECT_CONTAINS(msg, "none.safetensors");

  const std::string nometa = rewrite("nometa.safetensors", keep, [](auto& m) { m.erase("format"); });
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(nometa, cpu); });
  EXPECT_CONTAINS(msg, "nometa.safetensors");
  EXPECT_CONTAINS(msg, "format");

  const std::string badint = rewrite("badint.safetensors", keep, [](auto& m) { m["input_size"] = "16x"; });
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(badint, cpu); });
  EXPECT_CONTAINS(msg, "input_size");

  const std::string nosize = rewrite("nosize.safetensors", keep, [](auto& m) { m.erase("feature_dim"); });
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(nosize, cpu); });
  EXPECT_CONTAINS(msg, "feature_dim");

  const std::string missing = rewrite(
      "missing.safetensors", [](auto& ts) { ts.erase(ts.begin() + 1); }, keep);
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(missing, cpu); });
  EXPECT_CONTAINS(msg, "missing.safetensors");
  EXPECT_CONTAINS(msg, file.order[1]);

  const std::string shape = rewrite(
      "shape.safetensors", [](auto& ts) { ts[0].tensor = torch::zeros({2, 2}); }, keep);
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(shape, cpu); });
  EXPECT_CONTAINS(msg, file.order[0]);
  EXPECT_CONTAINS(msg, "shape");

  const std::string extra = rewrite(
      "extra.safetensors", [](auto& ts) { ts.push_back({"fc3.weight", torch::zeros({2})}); }, keep);
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(extra, cpu); });
  EXPECT_CONTAINS(msg, "fc3.weight");

  // Metadata of another architecture than the tensors: the first mismatched tensor is named.
  const std::string other = rewrite("other.safetensors", keep, [](auto& m) { m["feature_dim"] = "64"; });
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(other, cpu); });
  EXPECT_CONTAINS(msg, "fc1.weight");

  nt::test::write_text(dir + "/junk.safetensors", "not a safetensors file at all");
  msg = thrown_message<nt::SafetensorsError>([&] { nt::load_classifier(dir + "/junk.safetensors", cpu); });
  EXPECT_CONTAINS(msg, "junk.safetensors");
}

}  // namespace
