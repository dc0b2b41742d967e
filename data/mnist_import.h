// MNIST importer: IDX digit files (gzipped or plain) -> a pixel-space dataset file in the
// format of docs/data-format.md, used by `tread_data import-mnist` and the quickstart.
#pragma once
#include <string>

namespace nt {

// Reads 28x28 uint8 images and their labels, maps pixels to v/127.5 - 1 in [-1, 1], pads them
// with -1 to 32x32 (2 pixels each side) and, for size < 32, averages 2^k x 2^k boxes down to
// size x size (size must be 32 / 2^k). Writes /latents [N,1,S,S] float32, /labels [N] int64 and
// the root attributes to `out_h5` (through out_h5 + ".tmp", renamed when complete).
// Throws nt::DataError on unreadable or malformed input and on an unsupported size.
void import_mnist(const std::string& images_idx, const std::string& labels_idx,
                  const std::string& out_h5, int size);

}  // namespace nt
