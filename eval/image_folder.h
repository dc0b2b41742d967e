// A folder of images as the reference's FID tool reads it: CompVis/tread `fid.py ref` (reference
// statistics of a folder) and `fid.py calc` read images through EDM's ImageFolderDataset
// (datasets.py), from a folder or a zip archive (EDM's dataset_tool.py writes those):
//  - every file under the folder, recursively (os.walk: symbolic links to folders are not
//    followed), or every member of the archive, whose extension, in lower case, is one PIL knows
//    (Image.EXTENSION);
//  - sorted by the path relative to the folder, or the member's name (Python's str order, i.e. of
//    the UTF-8 bytes);
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

// The images of a folder or a zip archive in the reference's order. Errors throw DataError naming
// the folder, the archive or the file: no such folder, not a readable zip archive, a file of a
// format PIL knows and this build cannot read (BMP, GIF, TIFF, WebP, ...; JPEG without libjpeg),
// no image files at all.
class ImageFolder {
 public:
  explicit ImageFolder(const std::string& path);  // a folder, or a file ending in .zip
  int64_t size() const { return static_cast<int64_t>(names_.size()); }
  // Image i's path relative to the folder (with '/'), or its member name in the archive.
  const std::string& name(int64_t i) const { return names_[static_cast<size_t>(i)]; }
  std::string where(int64_t i) const;  // for messages: DIR/name or X.zip:name
  // Images idx, each as [3, H, W] float32 k / 255 (the 8-bit levels as the extractors take them),
  // decoded in parallel. Throws DataError naming the first that cannot be read.
  std::vector<at::Tensor> read01(const std::vector<int64_t>& idx) const;

 private:
  std::string path_;
  bool zip_ = false;
  std::vector<std::string> names_;
  std::vector<uint64_t> members_;  // zip: each name's index in the archive
};

// EDM's Dataset(max_size, random_seed): the indices of the `max_size` of `n` items it keeps,
// ascending. numpy's legacy RandomState(seed % 2^31, never negative as Python's %) shuffles 0..n-1
// (Fisher-Yates from the last index down, each j drawn by rejection from the 32-bit MT19937
// outputs masked to the smallest 2^k - 1 >= i), and the first max_size are sorted. All of 0..n-1
// when max_size >= n.
std::vector<int64_t> edm_subset(int64_t n, int64_t max_size, int64_t seed);

}  // namespace nt
