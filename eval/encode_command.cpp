// `tread_data encode`: a folder of PNG and JPEG images -> a dataset file of KL-VAE latents (or
// moments) in the format of docs/data-format.md, as the nano reference's preprocessing makes them:
//   1. every image is read as 8-bit RGB as PIL's convert('RGB') reads it (eval/image_file.h);
//   2. ADM's center_crop_arr (guided-diffusion image_datasets.py, used by the nano reference's
//      datasets.py): while the short side is >= 2*S, halve both sides (w//2, h//2) with PIL's
//      BOX filter; then resize with PIL's BICUBIC so the short side is S (each side
//      round(side * S / short), Python's round half to even); crop the centre S x S
//      (offsets (side - S) // 2). The resampling is PIL's (Resample.c) to the bit: separable,
//      horizontal pass first, 22-bit fixed-point coefficients, uint8 rounding after each pass;
//   3. x = p / 127.5 - 1 in [-1, 1], [N,3,S,S];
//   4. moments = quant_conv(encoder(x)) (mean || logvar, logvar clamped to [-30, 20]);
//      --moments stores them as /moments [N,2z,S/8,S/8] (what the nano reference trains on: it
//      draws z = 0.18215 * (mean + std * eps) afresh each time); otherwise /latents holds the
//      posterior mean [N,z,S/8,S/8]. Both float32, unscaled; scale_factor says 0.18215.
// Labels: with --labels-from-folders each sub-folder of --images is a class (sorted names ->
// 0..K-1, as torchvision's ImageFolder), else every image has label 0 and num_classes is 1.
// The output is written to OUT.tmp and renamed when complete (data/dataset_writer.h).
#include <boost/program_options.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset_writer.h"
#include "data/latent_dataset.h"
#include "data/progress.h"
#include "data/tool_commands.h"
#include "eval/image_file.h"
#include "eval/vae_options.h"
#include "models/vae.h"

namespace nt {
namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;

std::string q(const std::string& s) { return "'" + s + "'"; }

// ---- PIL's resampling (8 bits per channel) -------------------------------------------------

enum class Filter { kBox, kBicubic };

double filter_support(Filter f) { return f == Filter::kBox ? 0.5 : 2.0; }

double filter_weight(Filter f, double x) {
  if (f == Filter::kBox) return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
  const double a = -0.5;  // Keys' cubic convolution
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

constexpr int kPrecisionBits = 32 - 8 - 2;  // fixed-point fraction bits of the coefficients

// For each output position: the first input index, the count, and fixed-point weights.
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out][ksize]
};

Taps precompute_taps(int in_size, int out_size, Filter f) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = filter_support(f) * filterscale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(size_t(out_size) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  const double ss = 1.0 / filterscale;  // PIL multiplies by the reciprocal
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double sum = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter_weight(f, (x + xmin - center + 0.5) * ss);
      sum += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = sum != 0.0 ? w[x] / sum : w[x];
      const double fixed = v * (1 << kPrecisionBits);
      t.weights[size_t(xx) * t.ksize + x] =
          static_cast<int32_t>(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

uint8_t clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(std::min(std::max(s, 0), 255));
}

// PIL's Image.resize(size, filter) of an RGB image.
Rgb8 resize(const Rgb8& in, int out_w, int out_h, Filter f) {
  if (out_w == in.w && out_h == in.h) return in;
  Rgb8 cur = in;
  if (out_w != in.w) {  // horizontal pass
    const Taps t = precompute_taps(in.w, out_w, f);
    Rgb8 out{out_w, cur.h, std::vector<uint8_t>(size_t(out_w) * cur.h * 3)};
    for (int y = 0; y < cur.h; ++y)
      for (int xx = 0; xx < out_w; ++xx) {
        const int32_t* k = &t.weights[size_t(xx) * t.ksize];
        const uint8_t* src = &cur.px[(size_t(y) * cur.w + t.first[xx]) * 3];
        for (int c = 0; c < 3; ++c) {
          int32_t ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < t.count[xx]; ++x) ss += src[x * 3 + c] * k[x];
          out.px[(size_t(y) * out_w + xx) * 3 + c] = clip8(ss);
        }
      }
    cur = std::move(out);
  }
  if (out_h != in.h) {  // vertical pass
    const Taps t = precompute_taps(in.h, out_h, f);
    Rgb8 out{cur.w, out_h, std::vector<uint8_t>(size_t(cur.w) * out_h * 3)};
    for (int yy = 0; yy < out_h; ++yy) {
      const int32_t* k = &t.weights[size_t(yy) * t.ksize];
      for (int x = 0; x < cur.w; ++x)
        for (int c = 0; c < 3; ++c) {
          int32_t ss = 1 << (kPrecisionBits - 1);
          for (int y = 0; y < t.count[yy]; ++y)
            ss += cur.px[(size_t(t.first[yy] + y) * cur.w + x) * 3 + c] * k[y];
          out.px[(size_t(yy) * cur.w + x) * 3 + c] = clip8(ss);
        }
    }
    cur = std::move(out);
  }
  return cur;
}

// ADM's center_crop_arr: BOX halvings, a BICUBIC resize of the short side to `size`, the
// centre crop. Returns [size][size][3].
Rgb8 center_crop_arr(Rgb8 img, int size) {
  while (std::min(img.w, img.h) >= 2 * size) img = resize(img, img.w / 2, img.h / 2, Filter::kBox);
  const double scale = double(size) / std::min(img.w, img.h);
  const int w = static_cast<int>(std::nearbyint(img.w * scale));  // round half to even
  const int h = static_cast<int>(std::nearbyint(img.h * scale));
  img = resize(img, w, h, Filter::kBicubic);
  const int y0 = (img.h - size) / 2, x0 = (img.w - size) / 2;
  Rgb8 out{size, size, std::vector<uint8_t>(size_t(size) * size * 3)};
  for (int y = 0; y < size; ++y)
    std::memcpy(&out.px[size_t(y) * size * 3], &img.px[(size_t(y0 + y) * img.w + x0) * 3],
                size_t(size) * 3);
  return out;
}

// ---- the image folder -----------------------------------------------------------------------

struct ImageList {
  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  std::vector<std::string> classes;  // class folder names (label order); empty without folders
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool is_other_image(const std::string& ext) {
  for (const char* e : {".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
    if (ext == e) return true;
  return false;
}

// The PNG and JPEG files under `dir` (recursively), sorted by path; any other image file is an
// error, and so is a JPEG where this build reads none.
std::vector<std::string> images_under(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string ext = lower(it->path().extension().string());
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") {
      if (ext != ".png" && !jpeg_supported())
        throw DataError(q(it->path().string()) + " is a JPEG image, and this build reads no JPEG (libjpeg was not "
                        "found when it was configured: install libjpeg-dev and configure again)");
      found.push_back(it->path().string());
    } else if (is_other_image(ext)) {
      throw DataError(q(it->path().string()) +
                      " is neither PNG nor JPEG; encode reads those two (convert the folder first, "
                      "e.g. with ImageMagick's mogrify -format png)");
    }
  }
  if (ec) throw DataError("cannot list " + q(dir.string()) + ": " + ec.message());
  std::sort(found.begin(), found.end());
  return found;
}

ImageList list_images(const std::string& root, bool labels_from_folders) {
  std::error_code ec;
  if (!fs::exists(root, ec)) throw DataError("image folder " + q(root) + " does not exist");
  if (!fs::is_directory(root, ec)) throw DataError(q(root) + " is not a folder");
  ImageList list;
  if (!labels_from_folders) {
    list.paths = images_under(root);
    list.labels.assign(list.paths.size(), 0);
  } else {
    std::vector<fs::path> folders;
    for (const auto& e : fs::directory_iterator(root, ec))
      if (e.is_directory(ec)) folders.push_back(e.path());
    if (ec) throw DataError("cannot list " + q(root) + ": " + ec.message());
    std::sort(folders.begin(), folders.end());
    if (folders.empty())
      throw DataError(q(root) + " has no sub-folders; --labels-from-folders needs one folder per class");
    for (const auto& folder : folders) {
      std::vector<std::string> images = images_under(folder);
      if (images.empty()) throw DataError("class folder " + q(folder.string()) + " holds no PNG or JPEG images");
      for (auto& p : images) {
        list.paths.push_back(std::move(p));
        list.labels.push_back(static_cast<int64_t>(list.classes.size()));
      }
      list.classes.push_back(folder.filename().string());
    }
  }
  if (list.paths.empty()) throw DataError("no PNG or JPEG images found under " + q(root));
  return list;
}

// ---- the command ----------------------------------------------------------------------------

int run_encode(const std::vector<std::string>& args) {
  std::string images, weights, out, device_name = "cpu", latent_space = "sd-vae-ft-ema";
  int size = 256, batch = 16;
  bool moments = false, labels_from_folders = false;
  VaeFlags vae_flags;
  po::options_description desc(
      "usage: tread_data encode --images DIR --vae W.safetensors --out X.h5 [--size 256]\n"
      "                         [--moments] [--labels-from-folders] [--batch 16] [--device cpu]\n\n"
      "Encodes a folder of PNG and JPEG images with the KL-VAE (LDM AutoencoderKL; sd-vae-ft-ema\n"
      "weights in LDM or diffusers names) into a dataset file: each image is read as PIL's\n"
      "convert('RGB') reads it, center-cropped and resized\n"
      "to SxS as ADM's center_crop_arr does with PIL (BOX halvings, BICUBIC, centre crop), mapped\n"
      "to [-1,1] and encoded. /latents holds the posterior mean [N,4,S/8,S/8]; with --moments,\n"
      "/moments holds mean||logvar [N,8,S/8,S/8] (the nano reference trains on draws from them).\n"
      "Values are unscaled; the file says scale_factor 0.18215, latent_space sd-vae-ft-ema.\n"
      "With --labels-from-folders each sub-folder is a class (sorted names -> 0..K-1, as\n"
      "ImageFolder); else all images under DIR (sorted by path) get label 0 of 1 class.\n"
      "Written as OUT.tmp, renamed to OUT when complete.\n\n"
      "options");
  desc.add_options()("help,h", "show this help")(
      "images", po::value(&images)->required(), "folder of PNG and JPEG images (searched recursively; .png, .jpg, .jpeg)")(
      "vae", po::value(&weights)->required(), "VAE weights (.safetensors, LDM or diffusers names)")(
      "out", po::value(&out)->required(), "output HDF5 file")(
      "size", po::value(&size)->default_value(256), "image side S after the crop (multiple of 8)")(
      "moments", po::bool_switch(&moments), "store /moments (mean || logvar) instead of /latents")(
      "labels-from-folders", po::bool_switch(&labels_from_folders),
      "each sub-folder of --images is a class")(
      "batch", po::value(&batch)->default_value(16), "images per encoder batch")(
      "device", po::value(&device_name)->default_value("cpu"), "cpu, cuda or cuda:K")(
      "latent-space", po::value(&latent_space)->default_value("sd-vae-ft-ema"),
      "the latent_space attribute")(
      "scale-factor", po::value(&vae_flags.cfg.scale_factor)->default_value(0.18215), "the scale_factor attribute");
  add_vae_architecture_options(desc, vae_flags);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  const VaeConfig cfg = vae_config(vae_flags);
  if (batch < 1) throw po::error("--batch must be at least 1");
  if (size < 1 || size % cfg.factor() != 0)
    throw po::error("--size must be a positive multiple of " + std::to_string(cfg.factor()) +
                    " (the VAE's down-sampling factor), got " + std::to_string(size));
  if (device_name != "cpu" && device_name.rfind("cuda", 0) != 0)
    throw po::error("--device must be cpu, cuda or cuda:K, got '" + device_name + "'");
  const c10::Device device(device_name);
  if (device.is_cuda() && !torch::cuda::is_available())
    throw std::runtime_error("--device " + device_name + ": CUDA is not available in this build or machine");

  fs::path out_path(out);
  const fs::path parent = out_path.has_parent_path() ? out_path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    throw DataError("output folder " + q(parent.string()) + " of " + q(out) + " does not exist");

  const ImageList list = list_images(images, labels_from_folders);
  AutoencoderKL vae = load_vae(weights, device, cfg);
  const int64_t n = static_cast<int64_t>(list.paths.size());
  const int64_t channels = moments ? 2 * cfg.z_channels : cfg.z_channels;
  const int64_t side = size / cfg.factor();
  const int64_t num_classes = list.classes.empty() ? 1 : static_cast<int64_t>(list.classes.size());
  std::cout << "encode: " << n << " images";
  if (!list.classes.empty()) {
    std::cout << " in " << num_classes << " classes (";
    for (size_t k = 0; k < list.classes.size() && k < 5; ++k)
      std::cout << (k ? ", " : "") << list.classes[k] << "=" << k;
    std::cout << (list.classes.size() > 5 ? ", ..." : "") << ")";
  }
  std::cout << " -> " << (moments ? "/moments" : "/latents") << " [" << n << "," << channels << ","
            << side << "," << side << "] on " << device << std::endl;

  const auto start = std::chrono::steady_clock::now();
  DatasetWriter writer(out, moments ? "moments" : "latents", {n, channels, side, side}, at::kFloat);
  writer.write_labels(list.labels);
  Progress progress("encode " + q(out), n, "images");
  torch::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < n; begin += batch) {
    const int64_t rows = std::min<int64_t>(batch, n - begin);
    at::Tensor x = at::empty({rows, 3, size, size}, at::kFloat);  // [B,3,S,S]
    std::vector<std::string> errors(rows);
    at::parallel_for(0, rows, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        try {
          const Rgb8 img = center_crop_arr(read_image(list.paths[begin + i]), size);
          float* dst = x[i].data_ptr<float>();  // [3,S,S]
          const size_t plane = size_t(size) * size;
          for (size_t p = 0; p < plane; ++p)
            for (int c = 0; c < 3; ++c) dst[c * plane + p] = img.px[p * 3 + c] / 127.5f - 1.0f;
        } catch (const std::exception& ex) {
          errors[i] = ex.what();
        }
      }
    });
    for (const auto& e : errors)
      if (!e.empty()) throw DataError(e);
    at::Tensor m = vae->encode_moments(x.to(device)).to(at::kCPU);  // [B,2z,S/f,S/f]
    writer.write_rows(begin, moments ? m : m.narrow(1, 0, cfg.z_channels));
    progress.update(begin + rows);
  }
  progress.finish();
  std::string source = "tread_data encode of " + q(images) + " (" + std::to_string(n) +
                       " images" +
                       (list.classes.empty() ? "" : ", " + std::to_string(num_classes) + " class folders") +
                       ", ADM center crop to " + std::to_string(size) + "x" + std::to_string(size) +
                       ") with the VAE " + q(weights) + "; " +
                       (moments ? "/moments = mean || logvar" : "/latents = posterior mean");
  writer.set_dataset_attributes(num_classes, cfg.scale_factor, 0.0, latent_space, source);
  if (!list.classes.empty()) {
    std::string class_names;
    for (size_t k = 0; k < list.classes.size(); ++k) class_names += (k ? "\n" : "") + list.classes[k];
    writer.set_string_attr("class_names", class_names);
  }
  writer.commit();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  LatentDataset check({out});  // reads back what was written
  std::cout << "wrote " << out << ": " << check.info().size << " samples, "
            << check.info().num_classes << " classes, " << seconds << " s ("
            << static_cast<int64_t>(n / std::max(seconds, 1e-9)) << " images/s)" << std::endl;
  return 0;
}

static const bool registered = register_tool_command(
    {"encode", "encode a folder of PNG and JPEG images into VAE latents or moments (sd-vae-ft-ema)",
     &run_encode});

}  // namespace
}  // namespace nt
