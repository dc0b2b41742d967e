// PNG output: single images and sample grids, read back with libpng and checked pixel by
// pixel (EDM's uint8 conversion, layout, zoom, black padding); errors name the path.
#include "eval/image_grid.h"

#include <gtest/gtest.h>
#include <png.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

#include "test_util.h"

namespace {

struct Png {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // [H, W, C] row-major
  uint8_t at(int y, int x, int c) const { return pixels[(size_t(y) * width + x) * channels + c]; }
};

// Reads a PNG in its own format (grey or RGB, 8 bit) with libpng's simplified API.
Png read_png(const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    throw std::runtime_error("read_png " + path + ": " + image.message);
  Png png;
  png.width = static_cast<int>(image.width);
  png.height = static_cast<int>(image.height);
  png.channels = PNG_IMAGE_SAMPLE_CHANNELS(image.format);
  if (PNG_IMAGE_SAMPLE_COMPONENT_SIZE(image.format) != 1 ||
      (image.format & (PNG_FORMAT_FLAG_ALPHA | PNG_FORMAT_FLAG_COLORMAP)) != 0) {
    png_image_free(&image);
    throw std::runtime_error("read_png " + path + ": not an 8-bit grey or RGB image");
  }
  png.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, png.pixels.data(), 0, nullptr))
    throw std::runtime_error("read_png " + path + ": " + image.message);
  return png;
}

// EDM's conversion of one value, computed the way torch does it in float32.
uint8_t edm_u8(float x) {
  float v = x * 127.5f;
  v = v + 128.0f;
  v = std::min(std::max(v, 0.0f), 255.0f);
  return static_cast<uint8_t>(v);
}

TEST(ImageGrid, WritePngRoundTripsRgbAndGrey) {
  const std::string dir = nt::test::scratch_dir();
  const at::Tensor rgb = torch::randint(0, 256, {5, 7, 3}, torch::kByte);
  nt::write_png(dir + "/rgb.png", rgb);
  const Png a = read_png(dir + "/rgb.png");
  ASSERT_EQ(a.height, 5);
  ASSERT_EQ(a.width, 7);
  ASSERT_EQ(a.channels, 3);
  EXPECT_TRUE(torch::equal(torch::from_blob(const_cast<uint8_t*>(a.pixels.data()), {5, 7, 3},
                                            torch::kByte),
                           rgb));

  const at::Tensor grey =
      torch::arange(0, 240, 10, torch::kInt).to(torch::kByte).reshape({4, 6, 1});
  // A non-contiguous view of the same pixels.
  nt::write_png(dir + "/grey.png", grey.transpose(0, 1).contiguous().transpose(0, 1));
  const Png g = read_png(dir + "/grey.png");
  ASSERT_EQ(g.height, 4);
  ASSERT_EQ(g.width, 6);
  ASSERT_EQ(g.channels, 1);
  EXPECT_EQ(g.at(0, 0, 0), 0);
  EXPECT_EQ(g.at(1, 2, 0), 80);
  EXPECT_EQ(g.at(3, 5, 0), 230);
}

TEST(ImageGrid, GridLayoutConversionZoomAndPadding) {
  const std::string dir = nt::test::scratch_dir();
  // 3 RGB images of 2x3 in rows of 2, zoom 2, pad 1: cells of 5x7, a 2x2 grid of 11x15.
  torch::manual_seed(0);
  at::Tensor images = torch::rand({3, 3, 2, 3}) * 2.4 - 1.2;  // [N, C, H, W], some beyond ±1
  images[0][0][0][0] = -1.0;  // -> 0.5 -> 0
  images[0][1][0][0] = 1.0;   // -> 255.5 -> 255
  images[0][2][0][0] = 0.0;   // -> 128
  images[1][0][1][2] = 0.5;   // -> 191.75 -> 191 (truncation, not rounding)
  images[2][2][0][1] = std::numeric_limits<float>::quiet_NaN();  // -> 0
  const std::string path = dir + "/grid.png";
  nt::write_image_grid(path, images, /*nrow=*/2, /*zoom=*/2, /*pad=*/1);
  const Png png = read_png(path);
  ASSERT_EQ(png.height, 11);
  ASSERT_EQ(png.width, 15);
  ASSERT_EQ(png.channels, 3);

  EXPECT_EQ(png.at(1, 1, 0), 0);
  EXPECT_EQ(png.at(1, 1, 1), 255);
  EXPECT_EQ(png.at(1, 1, 2), 128);
  // Image 1 sits in column 1: x0 = 7 + 1; its pixel (1, 2) zooms to rows 3-4, columns 4-5.
  EXPECT_EQ(png.at(1 + 3, 8 + 5, 0), 191);
  EXPECT_EQ(png.at(6 + 1, 1 + 3, 2), 0);  // image 2, pixel (0, 1), the NaN

  // Every pixel: either padding / the empty fourth cell (black) or a zoomed source pixel.
  const at::Tensor src = images.contiguous();
  const float* v = src.data_ptr<float>();
  for (int y = 0; y < png.height; ++y)
    for (int x = 0; x < png.width; ++x)
      for (int c = 0; c < 3; ++c) {
        const int row = y / 5, col = x / 7, iy = y % 5 - 1, ix = x % 7 - 1;
        const int n = row * 2 + col;
        uint8_t want = 0;
        if (iy >= 0 && ix >= 0 && y < 10 && x < 14 && n < 3) {
          const float value = v[((n * 3 + c) * 2 + iy / 2) * 3 + ix / 2];
          want = std::isnan(value) ? 0 : edm_u8(value);
        }
        ASSERT_EQ(png.at(y, x, c), want) << "pixel (" << y << ", " << x << ", " << c << ")";
      }
}

TEST(ImageGrid, GreyAndOtherChannelCounts) {
  const std::string dir = nt::test::scratch_dir();
  // One grey 3x2 image, nrow larger than N, no padding, no zoom: the image itself.
  at::Tensor grey = torch::tensor(std::vector<float>{-1.f, -0.5f, 0.f, 0.25f, 0.75f, 1.f})
                        .reshape({1, 1, 3, 2});
  nt::write_image_grid(dir + "/grey.png", grey, /*nrow=*/8, /*zoom=*/1, /*pad=*/0);
  const Png g = read_png(dir + "/grey.png");
  ASSERT_EQ(g.height, 3);
  ASSERT_EQ(g.width, 2);
  ASSERT_EQ(g.channels, 1);
  const uint8_t want[] = {0, 64, 128, 159, 223, 255};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(g.at(i / 2, i % 2, 0), want[i]) << i;

  // Four channels (latents): the first one, as grey; one column of two images, float64 input.
  at::Tensor latents = torch::zeros({2, 4, 1, 1}, torch::kDouble);
  latents[0][0][0][0] = 0.5;
  latents[1][0][0][0] = -0.5;
  latents[1][1][0][0] = 1.0;  // ignored
  nt::write_image_grid(dir + "/latents.png", latents, /*nrow=*/1, /*zoom=*/3, /*pad=*/2);
  const Png l = read_png(dir + "/latents.png");
  ASSERT_EQ(l.height, 2 * (3 + 2) + 2);
  ASSERT_EQ(l.width, 3 + 2 + 2);
  ASSERT_EQ(l.channels, 1);
  EXPECT_EQ(l.at(2, 2, 0), 191);
  EXPECT_EQ(l.at(4, 4, 0), 191);
  EXPECT_EQ(l.at(7, 3, 0), 64);  // -0.5 * 127.5 + 128 = 64.25
  EXPECT_EQ(l.at(5, 3, 0), 0);   // padding between the two
  EXPECT_EQ(l.at(0, 0, 0), 0);
}

void expect_error_naming(const std::string& path, const std::function<void()>& fn,
                         const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "expected std::runtime_error (" << fragment << ")";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
}

TEST(ImageGrid, ErrorsNameThePath) {
  const std::string dir = nt::test::scratch_dir();
  const std::string bad = dir + "/no_such_folder/grid.png";
  const at::Tensor images = torch::zeros({2, 3, 4, 4});
  expect_error_naming(bad, [&] { nt::write_image_grid(bad, images, 2); }, "No such file");
  expect_error_naming(bad, [&] { nt::write_png(bad, torch::zeros({4, 4, 3}, torch::kByte)); },
                      "No such file");
  const std::string ok = dir + "/x.png";
  expect_error_naming(ok, [&] { nt::write_png(ok, torch::zeros({4, 4, 3})); }, "uint8");
  expect_error_naming(ok, [&] { nt::write_png(ok, torch::zeros({4, 4, 2}, torch::kByte)); },
                      "[H, W, 1]");
  expect_error_naming(ok, [&] { nt::write_image_grid(ok, torch::zeros({3, 4, 4}), 2); },
                      "[N, C, H, W]");
  expect_error_naming(ok, [&] { nt::write_image_grid(ok, images, 0); }, "nrow");
  expect_error_naming(ok, [&] { nt::write_image_grid(ok, images, 2, 0); }, "zoom");
  expect_error_naming(ok, [&] { nt::write_image_grid(ok, images, 2, 1, -1); }, "pad");
  expect_error_naming(ok, [&] { nt::write_image_grid(ok, torch::zeros({0, 3, 4, 4}), 2); },
                      "no pixels");
}

}  // namespace
