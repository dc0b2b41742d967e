// PNG grids of samples: EDM's conversion to uint8, a torchvision-like layout (rows of `nrow`
// images, `pad` black pixels around and between them), nearest-neighbour zoom, and an 8-bit
// PNG written through libpng's simplified API (which reports errors without longjmp).
#include "eval/image_grid.h"

#include <torch/torch.h>

#include <png.h>

#include <cstring>
#include <stdexcept>

namespace nt {

void write_png(const std::string& path, const at::Tensor& hwc_u8) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("cannot write PNG '" + path + "': " + what);
  };
  if (!hwc_u8.defined()) fail("the image tensor is undefined");
  if (hwc_u8.dim() != 3 || (hwc_u8.size(2) != 1 && hwc_u8.size(2) != 3))
    fail("expected a [H, W, 1] or [H, W, 3] tensor, got " + c10::str(hwc_u8.sizes()));
  if (hwc_u8.scalar_type() != at::kByte)
    fail(std::string("expected uint8 pixels, got ") + c10::toString(hwc_u8.scalar_type()));
  if (hwc_u8.size(0) < 1 || hwc_u8.size(1) < 1) fail("the image is empty");
  if (hwc_u8.size(0) > PNG_UINT_31_MAX || hwc_u8.size(1) > PNG_UINT_31_MAX)
    fail("the image is too large for PNG");
  at::Tensor pixels = hwc_u8.to(at::kCPU).contiguous();  // [H, W, C] uint8, row-major

  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.height = static_cast<png_uint_32>(pixels.size(0));
  image.width = static_cast<png_uint_32>(pixels.size(1));
  image.format = pixels.size(2) == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  const int ok = png_image_write_to_file(&image, path.c_str(), /*convert_to_8bit=*/0,
                                         pixels.data_ptr<uint8_t>(), /*row_stride=*/0,
                                         /*colormap=*/nullptr);
  const std::string message = image.message;
  png_image_free(&image);
  if (!ok) fail(message.empty() ? "libpng failed" : message);
}

void write_image_grid(const std::string& path, const at::Tensor& images, int nrow, int zoom,
                      int pad) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("cannot write image grid '" + path + "': " + what);
  };
  if (!images.defined()) fail("the images tensor is undefined");
  if (images.dim() != 4) fail("expected [N, C, H, W] images, got " + c10::str(images.sizes()));
  if (!at::isFloatingType(images.scalar_type()))
    fail(std::string("expected floating-point images in [-1, 1], got ") +
         c10::toString(images.scalar_type()));
  if (images.size(0) < 1 || images.size(1) < 1 || images.size(2) < 1 || images.size(3) < 1)
    fail("no pixels to draw (shape " + c10::str(images.sizes()) + ")");
  if (nrow < 1) fail("nrow must be at least 1, got " + std::to_string(nrow));
  if (zoom < 1) fail("zoom must be at least 1, got " + std::to_string(zoom));
  if (pad < 0) fail("pad must be non-negative, got " + std::to_string(pad));

  // EDM: clip(x * 127.5 + 128, 0, 255) -> uint8 (truncation); NaN pixels become 0 (black).
  at::Tensor x = images.detach().to(at::kCPU);
  if (x.scalar_type() != at::kDouble) x = x.to(at::kFloat);
  const int64_t channels = x.size(1) == 3 ? 3 : 1;  // other C: the first channel, as grey
  x = x.slice(1, 0, channels);                       // [N, C', H, W]
  at::Tensor u8 = torch::nan_to_num(x.mul(127.5).add(128.0).clamp(0.0, 255.0), 0.0)
                      .to(at::kByte)
                      .permute({0, 2, 3, 1});  // [N, H, W, C'] uint8
  if (zoom > 1) u8 = u8.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2);
  // u8: [N, H*zoom, W*zoom, C']

  const int64_t n = u8.size(0), h = u8.size(1), w = u8.size(2);
  const int64_t cols = std::min<int64_t>(nrow, n);
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t cell_h = h + pad, cell_w = w + pad;
  at::Tensor grid = torch::zeros({rows * cell_h + pad, cols * cell_w + pad, channels},
                                 torch::TensorOptions().dtype(at::kByte));  // [GH, GW, C']
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y0 = (i / cols) * cell_h + pad, x0 = (i % cols) * cell_w + pad;
    grid.slice(0, y0, y0 + h).slice(1, x0, x0 + w).copy_(u8[i]);
  }
  write_png(path, grid);
}

}  // namespace nt
