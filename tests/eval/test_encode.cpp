// `tread_data encode` end to end: three PNGs (RGB 40x24, RGB 70x35, grey 16x16) in two class
// folders, encoded with the small golden VAE (tests/golden/vae.md) at --size 16. The expected
// moments come from PIL's center_crop_arr (ADM) and the LDM re-implementation, so they check
// the PNG reading, PIL's BOX/BICUBIC resampling to the bit (a pixel one level off moves the
// moments ~100x more than the tolerance), the [-1,1] mapping, the encoder and the file
// format (read back by LatentDataset). Bad inputs: exit 1, a message naming the input, no file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/safetensors.h"
#include "data/hdf5_check.h"
#include "data/latent_dataset.h"
#include "eval/image_file.h"
#include "eval/image_grid.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nt::test::scratch_dir;
using nt::test::tool;

const std::string kGolden = std::string(NT_SOURCE_DIR) + "/tests/golden/";
const std::string kSmallVae = " --vae-ch 32 --vae-ch-mult 2,1,1 --vae-res-blocks 1 --vae-z 4";
constexpr double kTol = 1e-5;  // max|got - want| / max|want|

struct Encode : ::testing::Test {
  void SetUp() override {
    dir = scratch_dir();
    cases = nt::load_safetensors(kGolden + "vae_small_cases.safetensors");
    fs::create_directories(dir + "/imgs/a_cats");
    fs::create_directories(dir + "/imgs/b_dogs");
    nt::write_png(dir + "/imgs/a_cats/x1.png", cases.tensors.at("png0"));
    nt::write_png(dir + "/imgs/a_cats/x2.png", cases.tensors.at("png1"));
    nt::write_png(dir + "/imgs/b_dogs/y.png", cases.tensors.at("png2"));
  }
  nt::test::ToolResult encode(const std::string& args) {
    return tool("data/tread_data", "encode " + args, dir);
  }
  // Expects a failed run: exit 1, `part` in the message, neither out.h5 nor out.h5.tmp.
  void expect_failure(const std::string& args, const std::string& part) {
    auto r = encode(args + " --out " + dir + "/out.h5");
    EXPECT_EQ(r.rc, 1) << args << "\n" << r.err;
    EXPECT_CONTAINS(r.err, part);
    EXPECT_FALSE(fs::exists(dir + "/out.h5")) << args;
    EXPECT_FALSE(fs::exists(dir + "/out.h5.tmp")) << args;
  }
  std::string dir;
  nt::SafetensorsFile cases;
};

double rel_err(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  if (got.sizes() != want.sizes()) return 1e30;
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = want.to(at::kDouble).abs().max().item<double>();
  std::cout << "[ golden   ] " << what << ": max abs err " << err << ", relative " << err / scale
            << "\n";
  return err / scale;
}

// The whole float32 dataset `name` of an HDF5 file.
at::Tensor read_h5(const std::string& path, const char* name) {
  nt::h5_silence();
  nt::H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  EXPECT_TRUE(file.valid()) << path;
  nt::H5Id ds(H5Dopen2(file.get(), name, H5P_DEFAULT));
  EXPECT_TRUE(ds.valid()) << name;
  nt::H5Id space(H5Dget_space(ds.get()));
  hsize_t dims[4] = {0, 0, 0, 0};
  const int rank = H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  EXPECT_EQ(rank, 4);
  at::Tensor t = at::empty({int64_t(dims[0]), int64_t(dims[1]), int64_t(dims[2]), int64_t(dims[3])});
  EXPECT_GE(H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr<float>()), 0);
  return t;
}

TEST_F(Encode, LatentsWithClassFolders) {
  // diffusers names, two batches (2 + 1)
  auto r = encode("--images " + dir + "/imgs --vae " + kGolden + "vae_small_diffusers.safetensors" +
                  kSmallVae + " --size 16 --labels-from-folders --batch 2 --out " + dir + "/lat.h5");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_CONTAINS(r.out, "a_cats=0, b_dogs=1");
  EXPECT_FALSE(fs::exists(dir + "/lat.h5.tmp"));

  nt::LatentDataset ds({dir + "/lat.h5"});
  const nt::DatasetInfo& info = ds.info();
  EXPECT_EQ(info.size, 3);
  EXPECT_EQ(info.channels, 4);
  EXPECT_EQ(info.height, 4);
  EXPECT_EQ(info.width, 4);
  EXPECT_FALSE(info.moments);
  EXPECT_EQ(info.num_classes, 2);
  EXPECT_EQ(info.dtype, "float32");
  EXPECT_EQ(info.read_path, "pread");
  EXPECT_EQ(info.latent_space, "sd-vae-ft-ema");
  EXPECT_DOUBLE_EQ(info.scale_factor, 0.18215);
  EXPECT_DOUBLE_EQ(info.shift_factor, 0.0);
  EXPECT_CONTAINS(info.source, "tread_data encode");
  EXPECT_CONTAINS(info.source, "posterior mean");

  at::Tensor x, y;
  ds.read({0, 1, 2}, 0, &x, &y);
  EXPECT_TRUE(at::equal(y, at::tensor({0, 0, 1}, at::kLong))) << y;
  const at::Tensor mean = cases.tensors.at("encode_moments").narrow(1, 0, 4);  // [3,4,4,4]
  EXPECT_LE(rel_err(x, 0.18215 * mean, "encode /latents (scaled) vs golden"), kTol);
}

TEST_F(Encode, MomentsWithoutLabels) {
  // LDM names, one batch; without --labels-from-folders: sorted paths, label 0, 1 class.
  auto r = encode("--images " + dir + "/imgs --vae " + kGolden + "vae_small_ldm.safetensors" +
                  kSmallVae + " --size 16 --moments --out " + dir + "/mom.h5");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  // The stored moments themselves (read before LatentDataset holds the file open).
  EXPECT_LE(rel_err(read_h5(dir + "/mom.h5", "moments"), cases.tensors.at("encode_moments"),
                    "encode /moments vs golden"),
            kTol);
  nt::LatentDataset ds({dir + "/mom.h5"});
  EXPECT_TRUE(ds.info().moments);
  EXPECT_EQ(ds.info().channels, 4);
  EXPECT_EQ(ds.info().num_classes, 1);
  at::Tensor x, y;
  ds.read({0, 1, 2}, 0, &x, &y);
  EXPECT_TRUE(at::equal(y, at::zeros({3}, at::kLong))) << y;
}

// JPEG files encode exactly as the PNGs of what PIL decodes them to (tests/golden/jpeg.md):
// 4:2:0, 4:4:4, progressive 4:2:2, grey, Adobe CMYK, and a PNG named .jpg.
TEST_F(Encode, JpegImagesEncodeAsTheirPilDecodedPngs) {
  if (!nt::jpeg_supported()) GTEST_SKIP() << "this build reads no JPEG";
  fs::create_directories(dir + "/jpg");
  fs::create_directories(dir + "/pil");
  for (const char* name : {"rgb420", "rgb444", "rgb422_progressive", "gray", "cmyk", "png_named"}) {
    fs::copy_file(kGolden + "jpeg/" + name + ".jpg", dir + "/jpg/" + name + ".jpg");
    fs::copy_file(kGolden + "jpeg/" + name + ".pil.png", dir + "/pil/" + name + ".png");
  }
  const std::string vae = " --vae " + kGolden + "vae_small_ldm.safetensors" + kSmallVae + " --size 16 --moments";
  auto r = encode("--images " + dir + "/jpg" + vae + " --out " + dir + "/jpg.h5");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  r = encode("--images " + dir + "/pil" + vae + " --out " + dir + "/pil.h5");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const at::Tensor a = read_h5(dir + "/jpg.h5", "moments"), b = read_h5(dir + "/pil.h5", "moments");
  ASSERT_EQ(a.size(0), 6);
  EXPECT_TRUE(torch::equal(a, b));
}

TEST_F(Encode, BadInputs) {
  const std::string vae_no_size = " --vae " + kGolden + "vae_small_ldm.safetensors" + kSmallVae;
  const std::string vae = vae_no_size + " --size 16";
  expect_failure("--images " + dir + "/nowhere" + vae, dir + "/nowhere");
  fs::create_directories(dir + "/empty");
  expect_failure("--images " + dir + "/empty" + vae, "no PNG or JPEG images");
  expect_failure("--images " + dir + "/empty" + vae + " --labels-from-folders", "no sub-folders");
  expect_failure("--images " + dir + "/imgs --vae " + dir + "/missing.safetensors" + kSmallVae + " --size 16",
                 dir + "/missing.safetensors");
  // The default (sd-vae-ft-ema) config does not fit the small weights.
  expect_failure("--images " + dir + "/imgs --vae " + kGolden + "vae_small_ldm.safetensors",
                 "vae_small_ldm.safetensors");  // --size 256 of the default config is fine
  expect_failure("--images " + dir + "/imgs" + vae_no_size + " --size 10",
                 "--size must be a positive multiple of 4");
  expect_failure("--images " + dir + "/imgs" + vae + " --device tpu", "--device");
  auto r = encode("--images " + dir + "/imgs" + vae + " --out " + dir + "/no/such/folder/x.h5");
  EXPECT_EQ(r.rc, 1);
  EXPECT_CONTAINS(r.err, dir + "/no/such/folder");

  // A broken JPEG among the PNGs fails the run, not skipped; so does an image of another format.
  nt::test::write_text(dir + "/imgs/b_dogs/z.jpg", "\xff\xd8\xff\xe0");
  expect_failure("--images " + dir + "/imgs" + vae, "z.jpg");
  fs::remove(dir + "/imgs/b_dogs/z.jpg");
  nt::test::write_text(dir + "/imgs/b_dogs/z.bmp", "BM");
  expect_failure("--images " + dir + "/imgs" + vae, "z.bmp");
  fs::remove(dir + "/imgs/b_dogs/z.bmp");

  // A file that is no PNG, and a truncated PNG in the second batch (after OUT.tmp exists).
  nt::test::write_text(dir + "/imgs/b_dogs/zz.png", "not a png at all");
  expect_failure("--images " + dir + "/imgs" + vae, "zz.png");
  const std::string png = nt::test::read_text(dir + "/imgs/a_cats/x2.png");
  nt::test::write_text(dir + "/imgs/b_dogs/zz.png", png.substr(0, png.size() / 2));
  expect_failure("--images " + dir + "/imgs" + vae + " --batch 1", "zz.png");
  fs::remove(dir + "/imgs/b_dogs/zz.png");
  // An empty class folder.
  fs::create_directories(dir + "/imgs/c_none");
  expect_failure("--images " + dir + "/imgs" + vae + " --labels-from-folders", "c_none");
}

TEST(EncodeHelp, Listed) {
  const std::string dir = scratch_dir();
  auto r = tool("data/tread_data", "--help", dir);
  EXPECT_EQ(r.rc, 0);
  EXPECT_CONTAINS(r.out, "encode");
  r = tool("data/tread_data", "encode --help", dir);
  EXPECT_EQ(r.rc, 0);
  EXPECT_CONTAINS(r.out, "usage: tread_data encode");
  EXPECT_CONTAINS(r.out, "center_crop_arr");
}

}  // namespace
