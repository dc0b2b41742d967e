// A folder of images as pytorch-fid's statistics of a path take it (`python -m pytorch_fid
// --save-stats DIR ref.npz`, fid_score.py compute_statistics_of_path):
//  - the files directly in DIR (not in sub-folders) whose name ends in .bmp .jpg .jpeg .pgm .png
//    .ppm .tif .tiff or .webp, as written: pathlib's glob is case-sensitive on POSIX, so
//    `x.PNG` is not one of them; names starting with a dot are;
//  - sorted by name (Python's order of str, i.e. of the UTF-8 bytes);
//  - each read as PIL's Image.open(f).convert("RGB") (eval/image_file.h), then torchvision's
//    ToTensor: the 8-bit level k becomes the float32 k / 255.
// PNG and JPEG are read; a file of the other formats pytorch-fid would read is an error, so that
// no statistics silently leave out images it would count.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace nt {

// The image files of `dir` in pytorch-fid's order. Throws DataError naming the folder or the file:
// no such folder, a file pytorch-fid reads but this build cannot (BMP, PGM, PPM, TIFF, WebP;
// JPEG without libjpeg), no image files at all.
std::vector<std::string> fid_image_files(const std::string& dir);

// The images at `paths`, read in parallel, each as ToTensor gives it: [3, H, W] float32 k / 255.
// Throws DataError naming the first file that cannot be read.
std::vector<at::Tensor> read_images01(const std::vector<std::string>& paths);

}  // namespace nt
