// PNG image grids of samples (libpng).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace nt {

// images: [N, C, H, W] float in [-1, 1] (C = 1 grey or 3 RGB; other C use the first channel).
// Lays them out in rows of `nrow` images with a `pad`-pixel black border, each pixel scaled
// up `zoom` times (nearest), converting as EDM does: clip(x * 127.5 + 128, 0, 255) -> uint8.
// Throws std::runtime_error naming the path when it cannot be written.
void write_image_grid(const std::string& path, const at::Tensor& images, int nrow,
                      int zoom = 1, int pad = 2);

// Writes an 8-bit PNG from a [H, W, C] uint8 CPU tensor (C = 1 or 3).
void write_png(const std::string& path, const at::Tensor& hwc_u8);

}  // namespace nt
