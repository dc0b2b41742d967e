// tread_sample on a latent-space model: a grid.png of its samples decoded by the VAE given with
// --vae (and the architecture flags), the same picture as decoding the samples it writes to
// .h5 through eval's decoder; --out DIR/ writes one PNG per seed as the reference's generate does
// (<seed:06d>.png, --subdirs <s - s % 1000:06d>/), the same 8-bit levels; without --vae, or with a
// malformed architecture, a clear error.
// The VAE is the small golden one of tests/golden (vae.md), 4x4x4 latents -> 16x16 images.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset_writer.h"
#include "data/sample_file.h"
#include "eval/image_file.h"
#include "eval/image_grid.h"
#include "eval/scoring.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using nt::test::read_text;
using nt::test::tool;
using nt::test::write_text;

const std::string kGolden = std::string(NT_SOURCE_DIR) + "/tests/golden/";
const std::string kVae = kGolden + "vae_small_ldm.safetensors";
const std::string kSmallVae = " --vae-ch 32 --vae-ch-mult 2,1,1 --vae-res-blocks 1 --vae-z 4";

// 32 random 4x4x4 latents in the sd-vae-ft-ema space, 4 classes.
std::string write_latents(const std::string& dir) {
  const std::string path = dir + "/latents.h5";
  torch::manual_seed(5);
  const at::Tensor latents = torch::randn({32, 4, 4, 4}) * 4;
  nt::DatasetWriter w(path, "latents", latents.sizes().vec(), at::kFloat);
  w.write_rows(0, latents);
  std::vector<int64_t> labels(32);
  for (int64_t i = 0; i < 32; ++i) labels[i] = i % 4;
  w.write_labels(labels);
  w.set_int_attr("num_classes", 4);
  w.set_string_attr("latent_space", "sd-vae-ft-ema");
  w.set_double_attr("scale_factor", 0.18215);
  w.commit();
  return path;
}

std::string config(const std::string& dir, const std::string& data) {
  std::ostringstream s;
  s << "[run]\nname = \"lat\"\ndir = \"" << dir << "/runs\"\n"
    << "[model]\nname = \"DiT-S/2\"\ninput_size = 4\nin_channels = 4\nnum_classes = 4\n"
    << "depth = 1\nhidden_size = 32\nnum_heads = 2\npatch_size = 2\n"
    << "[data]\npaths = [\"" << data << "\"]\n"
    << "[train]\nglobal_batch = 4\nsteps = 2\nprecision = \"fp32\"\nlog_every = 1\ndevice = \"cpu\"\nthreads = 1\n"
    << "[checkpoint]\nevery = 2\n";
  write_text(dir + "/lat.toml", s.str());
  return dir + "/lat.toml";
}

TEST(SampleVae, LatentSamplesDecodedIntoTheGridAndPngs) {
  const std::string dir = nt::test::scratch_dir();
  const auto run = tool("launch/tread_run", "--config " + config(dir, write_latents(dir)), dir);
  ASSERT_EQ(run.rc, 0) << run.out << run.err;
  const std::string ck = dir + "/runs/lat/ckpt/latest";
  const std::string common = "--checkpoint " + ck + " --seeds 0-5 --steps 3 --batch 4 --device cpu";

  // Without --vae a PNG of latents cannot be made: the error says what to give.
  auto r = tool("launch/tread_sample", common + " --out " + dir + "/nogrid.png", dir);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--vae"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sd-vae-ft-ema"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/nogrid.png"));
  // A malformed architecture flag.
  r = tool("launch/tread_sample", common + " --out " + dir + "/bad.png --vae " + kVae + " --vae-ch-mult 2,x", dir);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--vae-ch-mult"), std::string::npos) << r.err;

  r = tool("launch/tread_sample", common + " --out " + dir + "/s.h5", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  r = tool("launch/tread_sample", common + " --out " + dir + "/grid.png --vae " + kVae + kSmallVae, dir);
  ASSERT_EQ(r.rc, 0) << r.err;

  // The same grid through eval's decoder from the .h5 samples.
  const nt::SampleFile s = nt::read_sample_file(dir + "/s.h5");
  ASSERT_EQ(s.samples.sizes(), (std::vector<int64_t>{6, 4, 4, 4}));
  nt::VaeConfig small;
  small.ch = 32;
  small.ch_mult = {2, 1, 1};
  small.num_res_blocks = 1;
  const nt::LatentDecoder decoder = nt::make_vae_decoder(kVae, c10::Device(c10::kCPU), small);
  const nt::DecodeInfo info{"sd-vae-ft-ema", 0.18215, 0.0};
  const at::Tensor images = nt::samples_to_images01(s.samples, info, &decoder);  // [6, 3, 16, 16]
  ASSERT_EQ(images.sizes(), (std::vector<int64_t>{6, 3, 16, 16}));
  EXPECT_GT(images.std().item<double>(), 0.01);  // a picture, not a constant
  // the 8-bit images the reference saves (its decode's truncation), as the tool's grid shows them
  nt::write_image_grid(dir + "/expected.png", nt::images_to_8bit(images) * 2 - 1, 3, 4);
  EXPECT_EQ(read_text(dir + "/grid.png"), read_text(dir + "/expected.png"));

  // A PNG per sample: DIR/<seed:06d>.png holding floor(255 u), RGB.
  r = tool("launch/tread_sample", common + " --out " + dir + "/pngs/ --vae " + kVae + kSmallVae, dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  const at::Tensor levels = (nt::images_to_8bit(images) * 255).round().to(torch::kByte);  // [6,3,16,16]
  for (int64_t i = 0; i < 6; ++i) {
    const std::string path = dir + "/pngs/00000" + std::to_string(i) + ".png";
    ASSERT_TRUE(fs::exists(path)) << path;
    const nt::Rgb8 img = nt::read_image(path);
    ASSERT_EQ(img.w, 16);
    ASSERT_EQ(img.h, 16);
    const at::Tensor got = torch::from_blob(const_cast<uint8_t*>(img.px.data()), {16, 16, 3}, torch::kByte);
    EXPECT_TRUE(torch::equal(got.permute({2, 0, 1}), levels[i])) << path;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir + "/pngs"), fs::directory_iterator()), 6);
  // --subdirs: seed s in <s - s % 1000:06d>/, as the reference's generate with subdirs.
  r = tool("launch/tread_sample", "--checkpoint " + ck + " --seeds 998-1001 --steps 2 --device cpu --out " + dir +
                                      "/sub/ --subdirs --vae " + kVae + kSmallVae,
           dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* f : {"000000/000998.png", "000000/000999.png", "001000/001000.png", "001000/001001.png"})
    EXPECT_TRUE(fs::exists(dir + "/sub/" + f)) << f;
  r = tool("launch/tread_sample", common + " --out " + dir + "/x.h5 --subdirs", dir);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--subdirs needs --out DIR/"), std::string::npos) << r.err;
  r = tool("launch/tread_sample", common + " --out " + dir + "/nopngs/", dir);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--vae"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/nopngs"));
}

}  // namespace
