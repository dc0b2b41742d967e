#include "eval/image_folder.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <random>
#include <set>

#include "data/latent_dataset.h"  // DataError
#include "eval/image_file.h"

namespace nt {

namespace fs = std::filesystem;

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// The extensions PIL registers (Image.init(); Image.EXTENSION of Pillow 9/10), lower case. EDM's
// ImageFolderDataset takes every file with one of them for an image.
const std::set<std::string> kPilExtensions = {
    ".apng", ".blp",  ".bmp",  ".bufr", ".bw",   ".cur",  ".dcx",  ".dds",  ".dib", ".emf",  ".eps",  ".fit",
    ".fits", ".flc",  ".fli",  ".fpx",  ".ftc",  ".ftu",  ".gbr",  ".gif",  ".grib", ".h5",  ".hdf",  ".icb",
    ".icns", ".ico",  ".iim",  ".im",   ".j2c",  ".j2k",  ".jfif", ".jp2",  ".jpc",  ".jpe",  ".jpeg", ".jpf",
    ".jpg",  ".jpx",  ".mic",  ".mpeg", ".mpg",  ".mpo",  ".msp",  ".palm", ".pbm",  ".pcd",  ".pcx",  ".pdf",
    ".pgm",  ".png",  ".pnm",  ".ppm",  ".ps",   ".psd",  ".pxr",  ".qoi",  ".ras",  ".rgb",  ".rgba", ".sgi",
    ".tga",  ".tif",  ".tiff", ".vda",  ".vst",  ".webp", ".wmf",  ".xbm",  ".xpm"};
const std::set<std::string> kJpegExtensions = {".jpg", ".jpeg", ".jpe", ".jfif"};

}  // namespace

std::vector<std::string> image_folder_files(const std::string& dir) {
  std::error_code ec;
  if (lower(fs::path(dir).extension().string()) == ".zip" && fs::is_regular_file(dir, ec))
    throw DataError(q(dir) + " is a zip archive; the reference's loader reads those, this program reads folders: "
                    "unpack it first");
  if (!fs::is_directory(dir, ec)) throw DataError("image folder " + q(dir) + " does not exist or is not a folder");
  std::vector<std::string> rel;  // relative paths with '/' separators, as os.path.relpath gives them
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string ext = lower(it->path().extension().string());
    if (!kPilExtensions.count(ext) || !it->is_regular_file(ec)) continue;
    if (ext != ".png" && !kJpegExtensions.count(ext))
      throw DataError(q(it->path().string()) + ": the reference reads " + ext +
                      " files with PIL and this program reads PNG and JPEG only; convert them (e.g. with "
                      "ImageMagick's mogrify -format png) so that no image is left out");
    if (ext != ".png" && !jpeg_supported())
      throw DataError(q(it->path().string()) + " is a JPEG image, and this build reads no JPEG (libjpeg was not "
                      "found when it was configured: install libjpeg-dev and configure again)");
    rel.push_back(fs::relative(it->path(), dir).generic_string());
  }
  if (ec) throw DataError("cannot list " + q(dir) + ": " + ec.message());
  if (rel.empty()) throw DataError("no PNG or JPEG images under " + q(dir));
  std::sort(rel.begin(), rel.end());  // byte order: Python's str order for UTF-8 names
  std::vector<std::string> paths;
  paths.reserve(rel.size());
  for (const auto& r : rel) paths.push_back((fs::path(dir) / r).string());
  return paths;
}

std::vector<int64_t> edm_subset(int64_t n, int64_t max_size, int64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  if (max_size >= n) return idx;
  // numpy: RandomState(s) seeds MT19937 with init_genrand(s), as std::mt19937 does.
  std::mt19937 mt(static_cast<uint32_t>(seed % (int64_t(1) << 31)));
  for (int64_t i = n - 1; i >= 1; --i) {
    uint64_t mask = static_cast<uint64_t>(i);  // the smallest 2^k - 1 >= i
    for (int shift : {1, 2, 4, 8, 16, 32}) mask |= mask >> shift;
    uint64_t j;
    do j = static_cast<uint64_t>(mt()) & mask;  // i < 2^32: one 32-bit output a try
    while (j > static_cast<uint64_t>(i));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<size_t>(max_size));
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<at::Tensor> read_images01(const std::vector<std::string>& paths) {
  const int64_t n = static_cast<int64_t>(paths.size());
  std::vector<at::Tensor> images(paths.size());
  std::vector<std::string> errors(paths.size());
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        const Rgb8 img = read_image(paths[i]);
        at::Tensor x = at::empty({3, img.h, img.w}, at::kFloat);  // [3,H,W]
        float* dst = x.data_ptr<float>();
        const size_t plane = size_t(img.h) * img.w;
        for (size_t p = 0; p < plane; ++p)
          for (int c = 0; c < 3; ++c) dst[c * plane + p] = img.px[p * 3 + c] / 255.0f;  // k / 255
        images[i] = x;
      } catch (const std::exception& ex) {
        errors[i] = ex.what();
      }
    }
  });
  for (const auto& e : errors)
    if (!e.empty()) throw DataError(e);
  return images;
}

}  // namespace nt
