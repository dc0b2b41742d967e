// LatentDataset and the MNIST importer: exact values (float16/float32, scale/shift, prescaled), order and
// repeats, moments noise (formula, reproducibility, statistics), several files, bad inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

#include "data/hdf5_check.h"
#include "data/latent_dataset.h"
#include "data/mnist_import.h"
#include "test_util.h"

namespace {

using nt::DataError;
using nt::H5Id;
using nt::LatentDataset;

// ---- a small HDF5 writer for the tests -------------------------------------------------------

struct Spec {
  std::string data_name = "latents";  // "latents", "moments" or "" (none)
  std::vector<hsize_t> dims;          // of the data set
  std::vector<float> values;          // row-major, product(dims) values
  std::string dtype = "float32";      // "float16", "float32" or "float64"
  bool also_moments = false;          // write a /moments next to /latents
  std::optional<std::vector<int64_t>> labels;
  std::optional<std::vector<hsize_t>> label_dims;  // default [labels.size()]
  std::optional<double> scale, shift;
  std::optional<int64_t> num_classes = 10;
  std::optional<int64_t> prescaled;
  std::optional<std::string> latent_space, source;
};

// IEEE half in HDF5 (as h5py makes it): 1 sign, 5 exponent (bias 15), 10 mantissa bits.
H5Id half_type() {
  H5Id t(H5Tcopy(H5T_IEEE_F32LE));
  H5Tset_fields(t.get(), 15, 10, 5, 0, 10);
  H5Tset_precision(t.get(), 16);
  H5Tset_size(t.get(), 2);
  H5Tset_ebias(t.get(), 15);
  return t;
}

void write_data(hid_t file, const char* name, const Spec& s) {
  H5Id space(H5Screate_simple(static_cast<int>(s.dims.size()), s.dims.data(), nullptr));
  if (s.dtype == "float16") {
    H5Id type = half_type();
    std::vector<uint16_t> bits;
    for (float v : s.values) bits.push_back(c10::Half(v).x);
    H5Id d(H5Dcreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, bits.data()), 0);
  } else {
    hid_t type = s.dtype == "float64" ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
    H5Id d(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_GE(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.values.data()),
              0);
  }
}

void write_attr_double(hid_t file, const char* name, double v) {
  H5Id space(H5Screate(H5S_SCALAR));
  H5Id a(H5Acreate2(file, name, H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &v);
}

void write_attr_string(hid_t file, const char* name, const std::string& v, bool variable) {
  H5Id type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), variable ? H5T_VARIABLE : v.size());
  H5Id space(H5Screate(H5S_SCALAR));
  H5Id a(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  const char* text = v.c_str();
  if (variable) H5Awrite(a.get(), type.get(), &text);
  else H5Awrite(a.get(), type.get(), text);
}

void write_h5(const std::string& path, const Spec& s) {
  nt::h5_silence();
  H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  if (!s.data_name.empty()) write_data(file.get(), s.data_name.c_str(), s);
  if (s.also_moments) write_data(file.get(), "moments", s);
  if (s.labels) {
    std::vector<hsize_t> ld = s.label_dims ? *s.label_dims
                                           : std::vector<hsize_t>{hsize_t(s.labels->size())};
    H5Id space(H5Screate_simple(static_cast<int>(ld.size()), ld.data(), nullptr));
    // Stored as int32 on purpose: the reader converts any integer type to int64.
    H5Id d(H5Dcreate2(file.get(), "labels", H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                      H5P_DEFAULT));
    ASSERT_GE(H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                       s.labels->data()),
              0);
  }
  if (s.scale) write_attr_double(file.get(), "scale_factor", *s.scale);
  if (s.shift) write_attr_double(file.get(), "shift_factor", *s.shift);
  for (const auto& [name, v] : {std::make_pair("num_classes", s.num_classes), std::make_pair("prescaled", s.prescaled)})
    if (v) {
      H5Id space(H5Screate(H5S_SCALAR));
      H5Id a(H5Acreate2(file.get(), name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
      H5Awrite(a.get(), H5T_NATIVE_INT64, &*v);
    }
  if (s.latent_space) write_attr_string(file.get(), "latent_space", *s.latent_space, true);
  if (s.source) write_attr_string(file.get(), "source", *s.source, false);
}

// Value of element j of sample i: exact in float16 for the sizes used here.
float value_of(int64_t i, int64_t j) { return float(i) * 0.5f + float(j) * 0.25f - 3.0f; }

// A latents file of n samples [c,h,w] with value_of() values and labels i % 10.
Spec latents_spec(int64_t n, int c, int h, int w, const std::string& dtype = "float32") {
  Spec s;
  s.dims = {hsize_t(n), hsize_t(c), hsize_t(h), hsize_t(w)};
  s.dtype = dtype;
  const int64_t row = int64_t(c) * h * w;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < row; ++j) s.values.push_back(value_of(i, j));
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) labels.push_back(i % 10);
  s.labels = labels;
  return s;
}

template <typename F>
std::string data_error(F&& f) {
  return nt::test::thrown_message<DataError>(std::forward<F>(f));
}


// ---- exact values ----------------------------------------------------------------------------

void check_exact(const std::string& dtype) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/a.h5";
  Spec s = latents_spec(6, 2, 3, 4, dtype);
  s.scale = 2.0;
  s.shift = 0.5;
  s.latent_space = "sd-vae-ft-ema";
  s.source = "unit test";
  write_h5(path, s);

  LatentDataset ds({path});
  const nt::DatasetInfo& info = ds.info();
  EXPECT_EQ(info.size, 6);
  EXPECT_EQ(info.channels, 2);
  EXPECT_EQ(info.height, 3);
  EXPECT_EQ(info.width, 4);
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_FALSE(info.moments);
  EXPECT_EQ(info.scale_factor, 2.0);
  EXPECT_EQ(info.shift_factor, 0.5);
  EXPECT_EQ(info.latent_space, "sd-vae-ft-ema");
  EXPECT_EQ(info.source, "unit test");
  EXPECT_EQ(info.dtype, dtype);

  // Any order, repeats, a contiguous run (0,1) and gaps.
  const std::vector<int64_t> idx = {4, 0, 4, 5, 1, 3};
  at::Tensor x, y;
  ds.read(idx, 0, &x, &y);
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{6, 2, 3, 4}));
  ASSERT_EQ(x.scalar_type(), at::kFloat);
  ASSERT_EQ(y.sizes(), (at::IntArrayRef{6}));
  ASSERT_EQ(y.scalar_type(), at::kLong);
  for (size_t k = 0; k < idx.size(); ++k) {
    EXPECT_EQ(y[k].item<int64_t>(), idx[k] % 10);
    at::Tensor row = x[k].reshape({-1});
    for (int64_t j = 0; j < 24; ++j)
      ASSERT_EQ(row[j].item<float>(), 2.0f * (value_of(idx[k], j) - 0.5f))
          << dtype << " sample " << idx[k] << " element " << j;
  }
}

TEST(LatentDataset, ReadsFloat32ExactlyInRequestedOrder) { check_exact("float32"); }
TEST(LatentDataset, ReadsFloat16ExactlyInRequestedOrder) { check_exact("float16"); }

TEST(LatentDataset, AttributeDefaultsAndEmptyRead) {
  const std::string path = nt::test::scratch_dir() + "/plain.h5";
  write_h5(path, latents_spec(3, 1, 2, 2));
  LatentDataset ds({path});
  EXPECT_EQ(ds.info().scale_factor, 1.0);
  EXPECT_EQ(ds.info().shift_factor, 0.0);
  EXPECT_EQ(ds.info().latent_space, "unknown");
  EXPECT_EQ(ds.info().source, "");
  at::Tensor x, y;
  ds.read({2}, 0, &x, &y);
  EXPECT_EQ(x[0][0][1][1].item<float>(), value_of(2, 3));
  ds.read({}, 0, &x, &y);
  EXPECT_EQ(x.sizes(), (at::IntArrayRef{0, 1, 2, 2}));
  EXPECT_EQ(y.numel(), 0);
}

TEST(LatentDataset, ConcatenatesFilesInOrder) {
  const std::string dir = nt::test::scratch_dir();
  Spec a = latents_spec(3, 1, 2, 2), b = latents_spec(4, 1, 2, 2);
  for (float& v : b.values) v += 100.0f;  // tell the files apart
  b.labels = std::vector<int64_t>{9, 8, 7, 6};
  write_h5(dir + "/a.h5", a);
  write_h5(dir + "/b.h5", b);
  LatentDataset ds({dir + "/a.h5", dir + "/b.h5"});
  EXPECT_EQ(ds.info().size, 7);
  at::Tensor x, y;
  const std::vector<int64_t> idx = {6, 0, 3, 2, 4, 3};
  ds.read(idx, 0, &x, &y);
  const std::vector<int64_t> labels = {6, 0, 9, 2, 8, 9};
  for (size_t k = 0; k < idx.size(); ++k) {
    const bool second = idx[k] >= 3;
    const int64_t row = second ? idx[k] - 3 : idx[k];
    EXPECT_EQ(y[k].item<int64_t>(), labels[k]);
    for (int64_t j = 0; j < 4; ++j)
      EXPECT_EQ(x[k].reshape({-1})[j].item<float>(), value_of(row, j) + (second ? 100.0f : 0.0f));
  }
}

// ---- moments ---------------------------------------------------------------------------------

// The documented per-sample seed, written out independently of core/rng.
uint64_t documented_seed(uint64_t s, uint64_t i) {
  uint64_t z = s * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// n samples of moments [2c,h,w]: mean channels = mean, logvar channels = logvar.
Spec moments_spec(int64_t n, int c, int h, int w, float mean, float logvar) {
  Spec s;
  s.data_name = "moments";
  s.dims = {hsize_t(n), hsize_t(2 * c), hsize_t(h), hsize_t(w)};
  for (int64_t i = 0; i < n; ++i)
    for (int ch = 0; ch < 2 * c; ++ch)
      for (int j = 0; j < h * w; ++j) s.values.push_back(ch < c ? mean : logvar);
  s.labels = std::vector<int64_t>(n, 1);
  return s;
}

// prescaled = 1: the stored latents are the model's x already (the reference's WebDataset values):
// read bit for bit, scale_factor and shift_factor kept for decoding only. 0 is the formula.
TEST(LatentDataset, PrescaledLatentsReadAsStored) {
  const std::string dir = nt::test::scratch_dir();
  for (const std::string dtype : {"float32", "float16"})
    for (int64_t flag : {0, 1}) {
      Spec s = latents_spec(3, 1, 2, 2);
      s.dtype = dtype;
      s.scale = 0.18215;
      s.shift = 0.25;
      s.prescaled = flag;
      const std::string path = dir + "/" + dtype + std::to_string(flag) + ".h5";
      write_h5(path, s);
      LatentDataset ds({path});
      EXPECT_EQ(ds.info().prescaled, flag == 1);
      EXPECT_EQ(ds.info().scale_factor, 0.18215);
      at::Tensor x, y;
      ds.read({2, 0}, 0, &x, &y);
      for (int64_t j = 0; j < 4; ++j) {
        const float v = dtype == "float16" ? static_cast<float>(c10::Half(value_of(2, j))) : value_of(2, j);
        const float want = flag ? v : (v - 0.25f) * static_cast<float>(0.18215);
        ASSERT_EQ(x[0].reshape({-1})[j].item<float>(), want) << dtype << " prescaled " << flag << " element " << j;
      }
    }
  Spec two = latents_spec(3, 1, 2, 2);
  two.prescaled = 2;
  write_h5(dir + "/two.h5", two);
  EXPECT_CONTAINS(data_error([&] { LatentDataset ds({dir + "/two.h5"}); }), "prescaled = 2 must be 0 or 1");
  Spec moments = moments_spec(2, 1, 2, 2, 0.f, 0.f);
  moments.prescaled = 1;
  write_h5(dir + "/moments.h5", moments);
  EXPECT_CONTAINS(data_error([&] { LatentDataset ds({dir + "/moments.h5"}); }), "prescaled = 1 goes with /latents");
}

TEST(LatentDataset, MomentsFollowTheDocumentedFormula) {
  const std::string path = nt::test::scratch_dir() + "/m.h5";
  Spec s = moments_spec(5, 2, 4, 4, 0.0f, 0.0f);
  // Sample 3: mean 1.5, logvar 2 ln 0.5 (std 0.5); scale 0.25, shift -1.
  const int64_t row = 4 * 16;
  for (int64_t j = 0; j < row; ++j) s.values[3 * row + j] = j < 32 ? 1.5f : 2.0f * std::log(0.5f);
  s.scale = 0.25;
  s.shift = -1.0;
  write_h5(path, s);
  LatentDataset ds({path});
  EXPECT_TRUE(ds.info().moments);
  EXPECT_EQ(ds.info().channels, 2);

  at::Tensor x, y;
  ds.read({3, 1}, 77, &x, &y);
  at::Tensor eps3 = at::randn({2, 4, 4}, at::detail::createCPUGenerator(documented_seed(77, 3)));
  at::Tensor expect3 = 0.25 * ((1.5 + 0.5 * eps3) - (-1.0));
  EXPECT_TRUE(at::allclose(x[0], expect3, 1e-5, 1e-6));
  at::Tensor eps1 = at::randn({2, 4, 4}, at::detail::createCPUGenerator(documented_seed(77, 1)));
  EXPECT_TRUE(at::allclose(x[1], 0.25 * (eps1 + 1.0), 1e-5, 1e-6));
}

TEST(LatentDataset, MomentsNoiseDependsOnlyOnSeedAndIndex) {
  const std::string path = nt::test::scratch_dir() + "/m.h5";
  write_h5(path, moments_spec(8, 1, 4, 4, 0.0f, 0.0f));
  LatentDataset ds({path});
  at::Tensor a, b, c, d, y;
  ds.read({5}, 7, &a, &y);
  ds.read({5}, 7, &b, &y);
  EXPECT_TRUE(at::equal(a, b));  // same (seed, index): same sample
  ds.read({2, 5, 0, 5}, 7, &c, &y);
  EXPECT_TRUE(at::equal(c[1], a[0]));  // independent of the batch it is read in
  EXPECT_TRUE(at::equal(c[3], a[0]));
  EXPECT_FALSE(at::equal(c[0], a[0]));  // another index: other noise
  ds.read({5}, 8, &d, &y);
  EXPECT_FALSE(at::equal(d, a));  // another seed: other noise
}

TEST(LatentDataset, MomentsNoiseStatisticsAndClamp) {
  const std::string dir = nt::test::scratch_dir();
  write_h5(dir + "/std1.h5", moments_spec(128, 1, 8, 8, 0.0f, 0.0f));
  write_h5(dir + "/std05.h5", moments_spec(128, 1, 8, 8, 3.0f, 2.0f * std::log(0.5f)));
  write_h5(dir + "/tiny.h5", moments_spec(4, 1, 8, 8, 2.0f, -100.0f));   // clamped to -30
  write_h5(dir + "/huge.h5", moments_spec(64, 1, 8, 8, 0.0f, 100.0f));  // clamped to 20
  std::vector<int64_t> all(128);
  for (int64_t i = 0; i < 128; ++i) all[i] = i;
  at::Tensor x, y;

  LatentDataset(std::vector<std::string>{dir + "/std1.h5"}).read(all, 3, &x, &y);
  EXPECT_NEAR(x.mean().item<double>(), 0.0, 0.05);  // 8192 values: s.e. 0.011
  EXPECT_NEAR(x.std().item<double>(), 1.0, 0.05);
  LatentDataset(std::vector<std::string>{dir + "/std05.h5"}).read(all, 3, &x, &y);
  EXPECT_NEAR(x.mean().item<double>(), 3.0, 0.025);
  EXPECT_NEAR(x.std().item<double>(), 0.5, 0.025);
  LatentDataset(std::vector<std::string>{dir + "/tiny.h5"}).read({0, 1, 2, 3}, 3, &x, &y);
  EXPECT_LT((x - 2.0).abs().max().item<double>(), 1e-5);  // exp(-15) * |eps|
  std::vector<int64_t> first64(all.begin(), all.begin() + 64);
  LatentDataset(std::vector<std::string>{dir + "/huge.h5"}).read(first64, 3, &x, &y);
  EXPECT_NEAR(x.std().item<double>() / std::exp(10.0), 1.0, 0.1);
}

// ---- bad inputs ------------------------------------------------------------------------------

TEST(LatentDataset, MissingAndNonHdf5Files) {
  const std::string dir = nt::test::scratch_dir();
  std::string msg = data_error([&] { LatentDataset ds({dir + "/nope.h5"}); });
  EXPECT_CONTAINS(msg, "data file '" + dir + "/nope.h5' not found");
  {
    std::ofstream(dir + "/text.h5") << "this is not HDF5\n";
  }
  msg = data_error([&] { LatentDataset ds({dir + "/text.h5"}); });
  EXPECT_CONTAINS(msg, "'" + dir + "/text.h5' is not an HDF5 file");
  {  // a damaged HDF5 file: the signature is there, the rest is cut off
    write_h5(dir + "/whole.h5", latents_spec(64, 4, 8, 8));
    std::ifstream in(dir + "/whole.h5", std::ios::binary);
    std::string head(1000, '\0');
    in.read(head.data(), head.size());
    std::ofstream(dir + "/cut.h5", std::ios::binary) << head;
  }
  msg = data_error([&] { LatentDataset ds({dir + "/cut.h5"}); });
  EXPECT_CONTAINS(msg, "opening '" + dir + "/cut.h5'");
  EXPECT_CONTAINS(msg, "HDF5 call H5Fopen(");
  EXPECT_CONTAINS(msg, "latent_dataset.cpp:");  // where(file, line, ...)
  msg = data_error([&] { LatentDataset ds(std::vector<std::string>{}); });
  EXPECT_CONTAINS(msg, "no data files");
}

TEST(LatentDataset, StructuralErrorsNameTheFile) {
  const std::string dir = nt::test::scratch_dir();
  struct Case {
    std::string name, expect;
    std::function<void(Spec&)> edit;
  };
  const std::vector<Case> cases = {
      {"nolabels", "no /labels", [](Spec& s) { s.labels.reset(); }},
      {"nodata", "has neither /latents", [](Spec& s) { s.data_name = ""; }},
      {"both", "both /latents and /moments", [](Spec& s) { s.also_moments = true; }},
      {"rank3", "expected rank 4",
       [](Spec& s) { s.dims = {s.dims[0], s.dims[1] * s.dims[2], s.dims[3]}; }},
      {"labelrank", "/labels has shape [2,2]",
       [](Spec& s) { s.label_dims = std::vector<hsize_t>{2, 2}; }},
      {"labelcount", "/labels has 3 entries",
       [](Spec& s) { s.labels = std::vector<int64_t>{1, 2, 3}; }},
      {"oddmoments", "even count",
       [](Spec& s) {
         s.data_name = "moments";
         s.dims[1] = 3;
         s.values.resize(4 * 3 * 2 * 2);
       }},
      {"float64", "must be float16 or float32", [](Spec& s) { s.dtype = "float64"; }},
      {"noclasses", "no root attribute num_classes", [](Spec& s) { s.num_classes.reset(); }},
      {"zeroclasses", "num_classes = 0", [](Spec& s) { s.num_classes = 0; }},
  };
  for (const Case& c : cases) {
    Spec s = latents_spec(4, 2, 2, 2);  // labels: 4 entries
    c.edit(s);
    const std::string path = dir + "/" + c.name + ".h5";
    write_h5(path, s);
    std::string msg = data_error([&] { LatentDataset ds({path}); });
    EXPECT_CONTAINS(msg, "'" + path + "'");
    EXPECT_CONTAINS(msg, c.expect);
  }
}

TEST(LatentDataset, MismatchedFilesNameBoth) {
  const std::string dir = nt::test::scratch_dir();
  const std::string a = dir + "/a.h5";
  write_h5(a, latents_spec(4, 2, 2, 2));
  struct Case {
    std::string name, expect;
    std::function<void(Spec&)> edit;
  };
  const std::vector<Case> cases = {
      {"channels", "sample shape", [](Spec& s) { s = latents_spec(4, 1, 2, 2); }},
      {"size", "sample shape", [](Spec& s) { s = latents_spec(4, 2, 2, 4); }},
      {"classes", "num_classes", [](Spec& s) { s.num_classes = 12; }},
      {"space", "latent_space", [](Spec& s) { s.latent_space = "pixels"; }},
      {"scale", "scale_factor", [](Spec& s) { s.scale = 0.18215; }},
      {"shift", "shift_factor", [](Spec& s) { s.shift = 0.1; }},
      {"moments", "storage", [](Spec& s) { s = moments_spec(4, 2, 2, 2, 0.f, 0.f); }},
      {"dtype", "dtype", [](Spec& s) { s.dtype = "float16"; }},
      {"prescaled", "prescaled", [](Spec& s) { s.prescaled = 1; }},
  };
  for (const Case& c : cases) {
    Spec s = latents_spec(4, 2, 2, 2);
    c.edit(s);
    const std::string b = dir + "/" + c.name + ".h5";
    write_h5(b, s);
    std::string msg = data_error([&] { LatentDataset ds({a, b}); });
    EXPECT_CONTAINS(msg, "'" + a + "'");
    EXPECT_CONTAINS(msg, "'" + b + "'");
    EXPECT_CONTAINS(msg, c.expect);
  }
}

TEST(LatentDataset, LabelOutOfRangeAndBadIndexOnRead) {
  const std::string dir = nt::test::scratch_dir();
  Spec s = latents_spec(5, 1, 2, 2);
  s.labels = std::vector<int64_t>{0, 1, 10, 3, -1};
  const std::string good = dir + "/good.h5", bad = dir + "/bad.h5";
  write_h5(good, latents_spec(3, 1, 2, 2));
  write_h5(bad, s);
  LatentDataset ds({good, bad});
  at::Tensor x, y;
  ds.read({0, 3, 4, 6}, 0, &x, &y);  // rows 0, 1, 3 of bad.h5 are fine
  std::string msg = data_error([&] { ds.read({1, 5}, 0, &x, &y); });
  EXPECT_CONTAINS(msg, "'" + bad + "'");
  EXPECT_CONTAINS(msg, "label 10 of sample 2 (global index 5)");
  msg = data_error([&] { ds.read({7}, 0, &x, &y); });
  EXPECT_CONTAINS(msg, "label -1 of sample 4");
  msg = data_error([&] { ds.read({8}, 0, &x, &y); });
  EXPECT_CONTAINS(msg, "sample index 8");
  msg = data_error([&] { ds.read({-1}, 0, &x, &y); });
  EXPECT_CONTAINS(msg, "sample index -1");
}

// ---- MNIST import ----------------------------------------------------------------------------

const std::string kMnist = std::string(NT_SOURCE_DIR) + "/data/mnist10k/";

void check_mnist(int size) {
  const std::string out = nt::test::scratch_dir() + "/mnist.h5";
  nt::import_mnist(kMnist + "images-idx3-ubyte.gz", kMnist + "labels-idx1-ubyte.gz", out, size);
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
  LatentDataset ds({out});
  const nt::DatasetInfo& info = ds.info();
  EXPECT_EQ(info.size, 10000);
  EXPECT_EQ(info.channels, 1);
  EXPECT_EQ(info.height, size);
  EXPECT_EQ(info.width, size);
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(info.dtype, "float32");
  EXPECT_EQ(info.latent_space, "pixels");
  EXPECT_EQ(info.scale_factor, 1.0);
  EXPECT_EQ(info.shift_factor, 0.0);
  std::string source = "MNIST (mnist10k, 10000 digits), padded to 32x32";
  if (size != 32) source += ", downsampled to 16x16";
  EXPECT_EQ(info.source, source);

  std::vector<int64_t> all(10000);
  for (int64_t i = 0; i < 10000; ++i) all[i] = i;
  at::Tensor x, y;
  ds.read(all, 0, &x, &y);
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_EQ(x.min().item<float>(), -1.0f);
  EXPECT_GT(x.max().item<float>(), 0.9f);
  at::Tensor hist = at::bincount(y, {}, 10);
  const std::vector<int64_t> readme = {1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978};
  for (int c = 0; c < 10; ++c) EXPECT_EQ(hist[c].item<int64_t>(), readme[c]) << "class " << c;
  // The padding: border rows and columns are -1 (two pixels at 32, one at 16).
  const int border = size == 32 ? 2 : 1;
  EXPECT_TRUE(at::all(x.narrow(2, 0, border) == -1.0f).item<bool>());
  EXPECT_TRUE(at::all(x.narrow(3, size - border, border) == -1.0f).item<bool>());
}

TEST(MnistImport, Size32) { check_mnist(32); }
TEST(MnistImport, Size16) { check_mnist(16); }

TEST(MnistImport, Size16IsTheBoxAverageOfSize32) {
  const std::string dir = nt::test::scratch_dir();
  nt::import_mnist(kMnist + "images-idx3-ubyte.gz", kMnist + "labels-idx1-ubyte.gz",
                   dir + "/m32.h5", 32);
  nt::import_mnist(kMnist + "images-idx3-ubyte.gz", kMnist + "labels-idx1-ubyte.gz",
                   dir + "/m16.h5", 16);
  at::Tensor x32, x16, y;
  LatentDataset(std::vector<std::string>{dir + "/m32.h5"}).read({0, 17, 9999}, 0, &x32, &y);
  LatentDataset(std::vector<std::string>{dir + "/m16.h5"}).read({0, 17, 9999}, 0, &x16, &y);
  // Pixel (0,0,7,9) of size 16 is the mean of the 2x2 box (14..15, 18..19) at size 32.
  at::Tensor box = x32.index({at::indexing::Slice(), 0, at::indexing::Slice(14, 16),
                              at::indexing::Slice(18, 20)});
  EXPECT_TRUE(at::allclose(x16.index({at::indexing::Slice(), 0, 7, 9}), box.mean({1, 2})));
  // And the first image is a digit at all: some pixel at full intensity range.
  EXPECT_GT(x32[0].max().item<float>(), 0.5f);
}

TEST(MnistImport, BadInputs) {
  const std::string dir = nt::test::scratch_dir();
  const std::string images = kMnist + "images-idx3-ubyte.gz";
  const std::string labels = kMnist + "labels-idx1-ubyte.gz";
  std::string msg = data_error([&] { nt::import_mnist(images, labels, dir + "/o.h5", 12); });
  EXPECT_CONTAINS(msg, "size 12");
  msg = data_error([&] { nt::import_mnist(images, labels, dir + "/o.h5", 64); });
  EXPECT_CONTAINS(msg, "size 64");
  msg = data_error([&] { nt::import_mnist(labels, images, dir + "/o.h5", 16); });  // swapped
  EXPECT_CONTAINS(msg, "magic");
  EXPECT_CONTAINS(msg, labels);
  msg = data_error([&] { nt::import_mnist(dir + "/none.gz", labels, dir + "/o.h5", 16); });
  EXPECT_CONTAINS(msg, "'" + dir + "/none.gz' not found");
  msg = data_error([&] { nt::import_mnist(images, labels, dir + "/no/such/dir/o.h5", 16); });
  EXPECT_CONTAINS(msg, "does not exist");
  {  // a plain (uncompressed) IDX file whose data stop early
    std::ofstream f(dir + "/short.idx", std::ios::binary);
    const unsigned char head[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3};
    f.write(reinterpret_cast<const char*>(head), sizeof(head));
  }
  msg = data_error([&] { nt::import_mnist(dir + "/short.idx", labels, dir + "/o.h5", 16); });
  EXPECT_CONTAINS(msg, "truncated");
  {  // labels count differs from images count
    std::ofstream f(dir + "/labels3.idx", std::ios::binary);
    const unsigned char head[] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
    f.write(reinterpret_cast<const char*>(head), sizeof(head));
  }
  msg = data_error([&] { nt::import_mnist(images, dir + "/labels3.idx", dir + "/o.h5", 16); });
  EXPECT_CONTAINS(msg, "must match");
  EXPECT_FALSE(std::filesystem::exists(dir + "/o.h5"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/o.h5.tmp"));
}

}  // namespace
