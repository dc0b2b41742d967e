#include "eval/image_folder.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "data/latent_dataset.h"  // DataError
#include "eval/image_file.h"

namespace nt {

namespace fs = std::filesystem;

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

// fid_score.py's IMAGE_EXTENSIONS, matched as its `glob("*.{ext}")` does (case-sensitive).
const std::set<std::string> kFidExtensions = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"};

}  // namespace

std::vector<std::string> fid_image_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw DataError("image folder " + q(dir) + " does not exist or is not a folder");
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t dot = name.rfind('.');
    // "*.png" needs a dot and something before it: ".png" alone matches, as pathlib's does (the
    // star matches nothing).
    if (dot == std::string::npos || !kFidExtensions.count(name.substr(dot + 1))) continue;
    if (!it->is_regular_file(ec)) continue;  // a folder named x.png: pytorch-fid could not open it either
    const std::string ext = name.substr(dot + 1);
    if (ext != "png" && ext != "jpg" && ext != "jpeg")
      throw DataError(q(it->path().string()) + ": pytorch-fid reads ." + ext +
                      " files and this program reads PNG and JPEG only; convert them (e.g. with ImageMagick's "
                      "mogrify -format png) so that no image is left out");
    if (ext != "png" && !jpeg_supported())
      throw DataError(q(it->path().string()) + " is a JPEG image, and this build reads no JPEG (libjpeg was not "
                      "found when it was configured: install libjpeg-dev and configure again)");
    names.push_back(name);
  }
  if (ec) throw DataError("cannot list " + q(dir) + ": " + ec.message());
  if (names.empty())
    throw DataError("no images in " + q(dir) + " (pytorch-fid's: *.png, *.jpg, *.jpeg, ... directly in the folder, "
                    "extensions in lower case)");
  std::sort(names.begin(), names.end());  // byte order: Python's str order for UTF-8 names
  std::vector<std::string> paths;
  paths.reserve(names.size());
  for (const auto& n : names) paths.push_back((fs::path(dir) / n).string());
  return paths;
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
          for (int c = 0; c < 3; ++c) dst[c * plane + p] = img.px[p * 3 + c] / 255.0f;  // ToTensor: k / 255
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
