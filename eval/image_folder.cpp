#include "eval/image_folder.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <utility>

#include <zip.h>

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

// Whether the reference takes `name` for an image; throws for one it takes and we cannot read.
bool is_image(const std::string& name, const std::string& where) {
  const std::string ext = lower(fs::path(name).extension().string());
  if (!kPilExtensions.count(ext)) return false;
  if (ext != ".png" && !kJpegExtensions.count(ext))
    throw DataError(q(where) + ": the reference reads " + ext +
                    " files with PIL and this program reads PNG and JPEG only; convert them (e.g. with "
                    "ImageMagick's mogrify -format png) so that no image is left out");
  if (ext != ".png" && !jpeg_supported())
    throw DataError(q(where) + " is a JPEG image, and this build reads no JPEG (libjpeg was not "
                    "found when it was configured: install libjpeg-dev and configure again)");
  return true;
}

struct ZipDiscard {
  void operator()(zip_t* z) const { zip_discard(z); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipDiscard>;

ZipPtr open_zip(const std::string& path) {
  int err = 0;
  ZipPtr z(zip_open(path.c_str(), ZIP_RDONLY, &err));
  if (!z) {
    zip_error_t error;
    zip_error_init_with_code(&error, err);
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw DataError(q(path) + " is not a readable zip archive: " + why);
  }
  return z;
}

std::vector<uint8_t> read_member(zip_t* z, uint64_t index, const std::string& where) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(z, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
    throw DataError("cannot read the size of " + q(where) + ": " + zip_strerror(z));
  std::vector<uint8_t> bytes(static_cast<size_t>(st.size));
  zip_file_t* f = zip_fopen_index(z, index, 0);
  if (!f) throw DataError("cannot open " + q(where) + ": " + zip_strerror(z));
  size_t done = 0;
  while (done < bytes.size()) {
    const zip_int64_t got = zip_fread(f, bytes.data() + done, bytes.size() - done);
    if (got <= 0) {
      const std::string why = got < 0 ? zip_file_strerror(f) : "it ends early";
      zip_fclose(f);
      throw DataError("cannot read " + q(where) + ": " + why);
    }
    done += static_cast<size_t>(got);
  }
  zip_fclose(f);
  return bytes;
}

}  // namespace

ImageFolder::ImageFolder(const std::string& path) : path_(path) {
  std::error_code ec;
  if (lower(fs::path(path).extension().string()) == ".zip" && fs::is_regular_file(path, ec)) {
    zip_ = true;
    ZipPtr z = open_zip(path);
    const zip_int64_t n = zip_get_num_entries(z.get(), 0);
    std::vector<std::pair<std::string, uint64_t>> found;
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* name = zip_get_name(z.get(), static_cast<zip_uint64_t>(i), ZIP_FL_ENC_GUESS);
      if (!name || !*name || name[std::strlen(name) - 1] == '/') continue;  // a folder's entry
      if (is_image(name, path + ":" + name)) found.emplace_back(name, static_cast<uint64_t>(i));
    }
    std::sort(found.begin(), found.end());  // by name: the reference's sorted(namelist())
    for (auto& f : found) {
      names_.push_back(std::move(f.first));
      members_.push_back(f.second);
    }
  } else {
    if (!fs::is_directory(path, ec)) throw DataError("image folder " + q(path) + " does not exist or is not a folder");
    for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_regular_file(ec) || !is_image(it->path().string(), it->path().string())) continue;
      names_.push_back(fs::relative(it->path(), path).generic_string());  // as os.path.relpath gives it
    }
    if (ec) throw DataError("cannot list " + q(path) + ": " + ec.message());
    std::sort(names_.begin(), names_.end());  // byte order: Python's str order for UTF-8 names
  }
  if (names_.empty()) throw DataError("no PNG or JPEG images in " + q(path));
}

std::string ImageFolder::where(int64_t i) const {
  return zip_ ? path_ + ":" + name(i) : (fs::path(path_) / name(i)).string();
}

std::vector<at::Tensor> ImageFolder::read01(const std::vector<int64_t>& idx) const {
  const int64_t n = static_cast<int64_t>(idx.size());
  std::vector<std::vector<uint8_t>> bytes(idx.size());
  if (zip_) {  // one reader of the archive (libzip's archives are not shared between threads)
    ZipPtr z = open_zip(path_);
    for (int64_t k = 0; k < n; ++k) bytes[k] = read_member(z.get(), members_[static_cast<size_t>(idx[k])], where(idx[k]));
  }
  std::vector<at::Tensor> images(idx.size());
  std::vector<std::string> errors(idx.size());
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      try {
        const Rgb8 img = zip_ ? decode_image(bytes[k], where(idx[k])) : read_image(where(idx[k]));
        at::Tensor x = at::empty({3, img.h, img.w}, at::kFloat);  // [3,H,W]
        float* dst = x.data_ptr<float>();
        const size_t plane = size_t(img.h) * img.w;
        for (size_t p = 0; p < plane; ++p)
          for (int c = 0; c < 3; ++c) dst[c * plane + p] = img.px[p * 3 + c] / 255.0f;  // k / 255
        images[k] = x;
      } catch (const std::exception& ex) {
        errors[k] = ex.what();
      }
    }
  });
  for (const auto& e : errors)
    if (!e.empty()) throw DataError(e);
  return images;
}

std::vector<int64_t> edm_subset(int64_t n, int64_t max_size, int64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  if (max_size >= n) return idx;
  // numpy: RandomState(s) seeds MT19937 with init_genrand(s), as std::mt19937 does.
  const int64_t m = int64_t(1) << 31;
  std::mt19937 mt(static_cast<uint32_t>((seed % m + m) % m));  // Python's %: never negative
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

}  // namespace nt
