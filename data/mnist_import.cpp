// MNIST importer: IDX files (big-endian header, then raw uint8; read through zlib, which also
// reads uncompressed files) -> /latents [N,1,S,S] float32 in [-1,1], /labels [N] int64.
#include "data/mnist_import.h"

#include <torch/torch.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "data/dataset_writer.h"
#include "data/latent_dataset.h"  // DataError

namespace nt {
namespace {

constexpr int kSide = 28;    // MNIST digits are 28x28
constexpr int kPadded = 32;  // padded with 2 pixels of -1 on each side

std::string q(const std::string& path) { return "'" + path + "'"; }

struct Idx {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw DataError("MNIST file " + q(path) + " not found");
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) throw DataError("cannot open " + q(path) + ": " + std::strerror(errno));
  }
  ~GzFile() { gzclose(f_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; returns how many were read (fewer only at the end of the file).
  size_t read(void* buf, size_t n) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, size_t(1) << 30));
      int got = gzread(f_, static_cast<char*>(buf) + done, chunk);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(f_, &code);
        throw DataError("cannot read " + q(path_) + ": " + (msg ? msg : "zlib error") +
                        " (a damaged .gz file?)");
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

uint32_t big_endian(const uint8_t* b) {
  return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
}

// Reads an IDX file of unsigned bytes with `ndims` dimensions (magic 0x0000 08 ndims).
Idx read_idx(const std::string& path, int ndims, const char* kind) {
  GzFile f(path);
  uint8_t head[4];
  const uint32_t expected = 0x00000800u | uint32_t(ndims);
  char hex[16];
  std::snprintf(hex, sizeof(hex), "0x%08X", expected);
  if (f.read(head, 4) != 4)
    throw DataError(q(path) + " is too short to be an IDX file (expected " + kind + ", magic " +
                    hex + ")");
  uint32_t magic = big_endian(head);
  if (magic != expected) {
    char got[16];
    std::snprintf(got, sizeof(got), "0x%08X", magic);
    throw DataError(q(path) + " has IDX magic number " + got + "; expected " + hex + " (" +
                    kind + "). Are --images and --labels swapped, or is this not an IDX file?");
  }
  Idx idx;
  size_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    if (f.read(head, 4) != 4)
      throw DataError(q(path) + " is truncated inside its IDX header");
    idx.dims.push_back(big_endian(head));
    total *= idx.dims.back();
    if (total > (size_t(1) << 34))
      throw DataError(q(path) + ": IDX dimensions are implausibly large");
  }
  idx.data.resize(total);
  size_t got = f.read(idx.data.data(), total);
  if (got != total)
    throw DataError(q(path) + " is truncated: its header promises " + std::to_string(total) +
                    " bytes of data, the file holds " + std::to_string(got));
  uint8_t extra;
  if (f.read(&extra, 1) != 0)
    throw DataError(q(path) + " has bytes after the data its IDX header describes");
  return idx;
}

}  // namespace

void import_mnist(const std::string& images_idx, const std::string& labels_idx,
                  const std::string& out_h5, int size) {
  namespace fs = std::filesystem;
  if (size <= 0 || kPadded % size != 0)
    throw DataError("MNIST import: size " + std::to_string(size) +
                    " is not supported; 32/size must be a power of two (32, 16, 8, 4, 2 or 1)");
  const int factor = kPadded / size;  // a divisor of 32, hence a power of two

  Idx images = read_idx(images_idx, 3, "MNIST images, idx3-ubyte");
  Idx labels = read_idx(labels_idx, 1, "MNIST labels, idx1-ubyte");
  const int64_t n = images.dims[0];
  if (images.dims[1] != kSide || images.dims[2] != kSide)
    throw DataError(q(images_idx) + " holds " + std::to_string(images.dims[1]) + "x" +
                    std::to_string(images.dims[2]) + " images; MNIST digits are 28x28");
  if (n == 0) throw DataError(q(images_idx) + " holds no images");
  if (labels.dims[0] != n)
    throw DataError(q(images_idx) + " holds " + std::to_string(n) + " images but " +
                    q(labels_idx) + " holds " + std::to_string(labels.dims[0]) +
                    " labels; they must match");
  for (int64_t i = 0; i < n; ++i)
    if (labels.data[i] > 9)
      throw DataError(q(labels_idx) + ": label " + std::to_string(labels.data[i]) + " of image " +
                      std::to_string(i) + " is not a digit 0-9");

  // Pixels: [N,28,28] uint8 -> [N,1,28,28] in [-1,1] -> padded [N,1,32,32] -> [N,1,S,S].
  at::Tensor u8 = at::from_blob(images.data.data(), {n, 1, kSide, kSide}, at::kByte);
  at::Tensor x = u8.to(at::kFloat) / 127.5f - 1.0f;            // [N,1,28,28]
  x = at::constant_pad_nd(x, {2, 2, 2, 2}, -1.0);               // [N,1,32,32]
  if (factor > 1) x = at::avg_pool2d(x, {factor, factor});      // [N,1,S,S]
  x = x.contiguous();

  fs::path out(out_h5);
  fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    throw DataError("output folder " + q(parent.string()) + " of " + q(out_h5) +
                    " does not exist; create it first");

  std::string name = fs::path(images_idx).parent_path().filename().string();
  if (name.empty()) name = fs::path(images_idx).filename().string();
  std::string source = "MNIST (" + name + ", " + std::to_string(n) + " digits), padded to 32x32";
  if (size != kPadded)
    source += ", downsampled to " + std::to_string(size) + "x" + std::to_string(size);

  DatasetWriter writer(out_h5, "latents", {n, 1, size, size}, at::kFloat);
  writer.write_rows(0, x);
  writer.write_labels(std::vector<int64_t>(labels.data.begin(), labels.data.end()));
  writer.set_dataset_attributes(10, 1.0, 0.0, "pixels", source);
  writer.commit();
}

}  // namespace nt
