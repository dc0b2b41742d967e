// A folder of images as the reference's FID tool reads it: CompVis/tread `fid.py ref` (reference
// statistics of a folder) and `fid.py calc` read images through EDM's ImageFolderDataset
// (datasets.py):
//  - every file under the folder, recursively (os.walk: symbolic links to folders are not
//    followed), whose extension, in lower case, is one PIL knows (Image.EXTENSION);
//  - sorted by the path relative to the folder (Python's str order, i.e. of the UTF-8 bytes);
//  - with max_size N (fid.py calc's num_expected), a subset: numpy's RandomState(seed) shuffles
//    the indices 0..n-1 and the first N, sorted, are taken (edm_subset);
//  - each image as np.array(PIL.Image.open(f)): the 8-bit levels as stored, grey images as one
//    channel that the statistics repeat to three.
// PNG and JPEG are read, through eval/image_file.h (as PIL's convert("RGB"), which for 8-bit grey
// and RGB files gives the reference's values; for palette, alpha or 16-bit files, which the
// reference's loader does not turn into RGB and its Inception cannot take, the RGB image PIL would
// show). A file of any other format PIL knows is an error, so that no statistics silently leave out
// an image the reference would count.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace nt {

// The image files under `dir` in the reference's order, as paths (dir/relative path). Throws
// DataError naming the folder or the file: no such folder, a zip archive (EDM reads those; unpack
// it), a file of a format PIL knows and this build cannot read (BMP, GIF, TIFF, WebP, ...; JPEG
// without libjpeg), no image files at all.
std::vector<std::string> image_folder_files(const std::string& dir);

// EDM's Dataset(max_size, random_seed): the indices of the `max_size` of `n` items it keeps,
// ascending. numpy's legacy RandomState(seed % 2^31) shuffles 0..n-1 (Fisher-Yates from the last
// index down, each j drawn by rejection from the 32-bit MT19937 outputs masked to the smallest
// 2^k - 1 >= i), and the first max_size are sorted. All of 0..n-1 when max_size >= n.
std::vector<int64_t> edm_subset(int64_t n, int64_t max_size, int64_t seed);

// The images at `paths`, read in parallel, each as [3, H, W] float32 k / 255 (the 8-bit levels as
// the extractors take them). Throws DataError naming the first file that cannot be read.
std::vector<at::Tensor> read_images01(const std::vector<std::string>& paths);

}  // namespace nt
