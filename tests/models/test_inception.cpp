// pytorch-fid's FID Inception-v3: pool3 features against pytorch-fid's own `inception.py` run on
// weights from a deterministic recipe (tests/golden/inception.md) — every pytorch-fid state_dict
// name and shape, 64x64 and 45x70 inputs resized to 299 — and the strict loader's errors.
#include "models/inception.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "test_util.h"

namespace {

const std::string kCases = std::string(NT_SOURCE_DIR) + "/tests/golden/inception_fid_cases.safetensors";

// Measured max errors are printed: LibTorch 1.13.1 (channels-last convolutions) against Debian's
// PyTorch 1.13.1 (contiguous NCHW), both on the CPU with one thread, differ by 3.7e-7 relative.
// The tolerance leaves room for other convolution kernels (another oneDNN, cuDNN without TF32,
// thread count) over ~95 layers. Each mistake tried
// in pytorch-fid's forward moves these features by 6e-3 (relative) or more: padding counted in
// the Mixed_5b/c/d (6.2e-3), 6b-e (2.2e-2) or 7b (3.2e-2) average pools, an average instead of
// the max pool in Mixed_7c (0.28), BatchNorm eps 1e-5 (1.7e-2), align_corners=True (1.7e-2),
// bicubic resizing (0.22), no [-1,1] scaling (0.29).
constexpr double kFeatureTol = 1e-4;  // max|got - want| / max|want|

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---- the weight recipe (tests/golden/inception.md), bit for bit as the Python generator ----
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

// u_i in [0,1): the splitmix64 finaliser of seed + (i+1)*0x9E3779B97F4A7C15, top 53 bits.
double recipe_uniform(uint64_t seed, int64_t i) {
  uint64_t z = seed + uint64_t(i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 11) * std::ldexp(1.0, -53);
}

at::Tensor recipe_tensor(const std::string& name, const std::vector<int64_t>& shape) {
  if (ends_with(name, ".num_batches_tracked")) return torch::zeros(shape, torch::kInt64);
  at::Tensor t = torch::empty(shape, torch::kFloat32);
  float* out = t.data_ptr<float>();
  const uint64_t seed = fnv1a64(name);
  const int64_t n = t.numel();
  double scale = 0.0, offset = 0.0;  // v = (2u - 1) * scale, or v = offset + u
  if (ends_with(name, "conv.weight")) {
    scale = std::sqrt(6.0 / double(n / shape[0]));  // fan_in = in * kh * kw
  } else if (ends_with(name, "bn.weight") || ends_with(name, "bn.running_var")) {
    offset = 0.5;
  } else if (ends_with(name, "bn.bias") || ends_with(name, "bn.running_mean")) {
    scale = 0.25;
  } else if (name.rfind("fc.", 0) == 0) {
    scale = 0.01;
  } else {
    ADD_FAILURE() << "no recipe for " << name;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double u = recipe_uniform(seed, i);
    out[i] = float(scale != 0.0 ? (2.0 * u - 1.0) * scale : offset + u);
  }
  return t;
}

double rel_err(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_EQ(got.scalar_type(), at::kFloat) << what;
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = want.to(at::kDouble).abs().max().item<double>();
  std::cout << "[ golden   ] " << what << ": max abs err " << err << ", relative " << err / scale
            << "\n";
  return err / scale;
}

// Removes a scratch weights file (~90 MB) when the test ends.
struct RemovedAtExit {
  std::string path;
  ~RemovedAtExit() { std::remove(path.c_str()); }
};

// The golden cases and the recipe weights under every pytorch-fid state_dict name (including
// fc.* and num_batches_tracked, which the loader must accept and ignore), built once.
class InceptionFid : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cases = new nt::SafetensorsFile(nt::load_safetensors(kCases));
    weights = new std::vector<nt::NamedTensor>();
    for (const auto& key : cases->order) {
      if (key.rfind("shape/", 0) != 0) continue;
      const std::string name = key.substr(6);
      at::Tensor s = cases->tensors.at(key);
      std::vector<int64_t> shape(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
      weights->push_back({name, recipe_tensor(name, shape)});
    }
  }
  static void TearDownTestSuite() {
    delete cases;
    delete weights;
  }
  // Writes the recipe weights, minus `drop` and with `replace` swapped in, into a scratch file.
  static std::string write_weights(const std::string& dir, const std::string& drop = "",
                                   const nt::NamedTensor& replace = {}) {
    std::vector<nt::NamedTensor> out;
    for (const auto& w : *weights) {
      if (w.name == drop) continue;
      out.push_back(w.name == replace.name ? replace : w);
    }
    if (!replace.name.empty() && replace.name != drop) {
      bool present = false;
      for (const auto& w : *weights) present |= w.name == replace.name;
      if (!present) out.push_back(replace);
    }
    const std::string path = dir + "/inception_fid_recipe.safetensors";
    nt::save_safetensors(path, out);
    return path;
  }
  static nt::SafetensorsFile* cases;
  static std::vector<nt::NamedTensor>* weights;
};
nt::SafetensorsFile* InceptionFid::cases = nullptr;
std::vector<nt::NamedTensor>* InceptionFid::weights = nullptr;

// The C++ recipe reproduces the Python one (per-tensor float64 sums), for all 566 entries.
TEST_F(InceptionFid, RecipeMatchesGenerator) {
  ASSERT_EQ(weights->size(), 566u);  // 94 BasicConv2d x (conv.weight + 5 bn entries) + fc
  int64_t params = 0;
  for (const auto& w : *weights) {
    const double want = cases->tensors.at("sum/" + w.name).item<double>();
    const double got = w.tensor.to(at::kDouble).sum().item<double>();
    EXPECT_NEAR(got, want, 1e-9 * (1.0 + std::abs(want))) << w.name;
    if (w.name.rfind("fc.", 0) != 0 && !ends_with(w.name, "num_batches_tracked"))
      params += w.tensor.numel();
  }
  EXPECT_EQ(params, 21820000);  // conv weights + BN weight/bias/mean/var: what pool3 uses
}

// pool3 features of pytorch-fid's InceptionV3([3]) (resize to 299, 2x-1, FID blocks).
TEST_F(InceptionFid, FeaturesMatchPytorchFid) {
  const std::string path = write_weights(nt::test::scratch_dir());
  RemovedAtExit cleanup{path};
  nt::InceptionV3Fid net = nt::load_inception_fid(path, torch::kCPU);
  EXPECT_FALSE(net->is_training());

  const at::Tensor images = cases->tensors.at("images");  // [2,3,64,64]
  const at::Tensor feats = net->forward(images);
  ASSERT_EQ(feats.sizes(), (std::vector<int64_t>{2, 2048}));
  EXPECT_TRUE(feats.is_contiguous());
  EXPECT_FALSE(feats.requires_grad());
  EXPECT_LE(rel_err(feats, cases->tensors.at("features"), "features 2x3x64x64"), kFeatureTol);

  // Non-square input, another batch size.
  const at::Tensor odd = net->forward(cases->tensors.at("images_odd"));  // [1,3,45,70]
  EXPECT_LE(rel_err(odd, cases->tensors.at("features_odd"), "features 1x3x45x70"), kFeatureTol);

  // Double input goes through as float32.
  const at::Tensor from_double = net->forward(images.narrow(0, 1, 1).to(at::kDouble));
  EXPECT_EQ(from_double.scalar_type(), at::kFloat);
  EXPECT_LE(rel_err(from_double, cases->tensors.at("features").narrow(0, 1, 1), "double input"),
            kFeatureTol);
}

// The same on CUDA (an evaluation rank's GPU; skipped without one): cuDNN's convolutions, TF32
// where LibTorch allows it by default, so to 1e-2 of the features' scale rather than kFeatureTol.
TEST_F(InceptionFid, CudaFeaturesMatchPytorchFid) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::string path = write_weights(nt::test::scratch_dir());
  RemovedAtExit cleanup{path};
  nt::InceptionV3Fid net = nt::load_inception_fid(path, torch::kCUDA);
  const at::Tensor feats = net->forward(cases->tensors.at("images").to(torch::kCUDA));
  ASSERT_TRUE(feats.is_cuda());
  const double err = rel_err(feats.cpu(), cases->tensors.at("features"), "CUDA features 2x3x64x64");
  std::cout << "[ gpu      ] Inception features on CUDA: relative difference " << err << "\n";
  EXPECT_LE(err, 1e-2);
}

TEST_F(InceptionFid, RejectsWrongChannelCount) {
  nt::InceptionV3Fid net;
  const std::string msg = nt::test::thrown_message<std::runtime_error>(
      [&] { net->forward(torch::rand({1, 1, 32, 32})); });
  std::cout << "[ message  ] " << msg << "\n";
  EXPECT_CONTAINS(msg, "[N,3,H,W]");
  EXPECT_CONTAINS(msg, "[1, 1, 32, 32]");
  const std::string msg3 = nt::test::thrown_message<std::runtime_error>(
      [&] { net->forward(torch::rand({3, 32, 32})); });
  EXPECT_CONTAINS(msg3, "[3, 32, 32]");
}

TEST_F(InceptionFid, MissingTensorNamesFileAndTensor) {
  const std::string name = "Mixed_6c.branch7x7dbl_3.bn.running_var";
  const std::string path = write_weights(nt::test::scratch_dir(), name);
  RemovedAtExit cleanup{path};
  const std::string msg = nt::test::thrown_message<std::runtime_error>(
      [&] { nt::load_inception_fid(path, torch::kCPU); });
  std::cout << "[ message  ] " << msg << "\n";
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, name);
  EXPECT_CONTAINS(msg, "lack");
  EXPECT_CONTAINS(msg, "1 of 470");
}

TEST_F(InceptionFid, WrongShapeNamesFileTensorAndShapes) {
  // A 3x1 kernel where pytorch-fid has 1x3.
  const std::string name = "Mixed_7b.branch3x3_2a.conv.weight";
  const std::string path =
      write_weights(nt::test::scratch_dir(), "", {name, torch::zeros({384, 384, 3, 1})});
  RemovedAtExit cleanup{path};
  const std::string msg = nt::test::thrown_message<std::runtime_error>(
      [&] { nt::load_inception_fid(path, torch::kCPU); });
  std::cout << "[ message  ] " << msg << "\n";
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, name);
  EXPECT_CONTAINS(msg, "[384, 384, 3, 1]");
  EXPECT_CONTAINS(msg, "[384, 384, 1, 3]");
}

TEST_F(InceptionFid, UnexpectedTensorIsAnError) {
  // torchvision's ImageNet Inception has the same blocks plus AuxLogits: not the FID network.
  const std::string name = "AuxLogits.conv0.conv.weight";
  const std::string path =
      write_weights(nt::test::scratch_dir(), "", {name, torch::zeros({128, 768, 1, 1})});
  RemovedAtExit cleanup{path};
  const std::string msg = nt::test::thrown_message<std::runtime_error>(
      [&] { nt::load_inception_fid(path, torch::kCPU); });
  std::cout << "[ message  ] " << msg << "\n";
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, name);
  EXPECT_CONTAINS(msg, "torchvision");
}

TEST_F(InceptionFid, MissingFileIsNamed) {
  const std::string path = nt::test::scratch_dir() + "/no_such_inception.safetensors";
  const std::string msg = nt::test::thrown_message<std::runtime_error>(
      [&] { nt::load_inception_fid(path, torch::kCPU); });
  std::cout << "[ message  ] " << msg << "\n";
  EXPECT_CONTAINS(msg, path);
}

}  // namespace
