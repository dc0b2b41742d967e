// LatentDataset: the HDF5 reader (format in docs/data-format.md).
// A read groups the requested global indices by file, sorts and de-duplicates them, reads the
// rows through each dataset's RowReader (row_reader.h: pread for contiguous uncompressed
// datasets, H5Dread otherwise; contiguous runs coalesced; float16 -> float32 and any integer
// label type -> int64), then writes the rows, normalised, into the requested order.
//
// Moments noise, exactly: for the sample with global index i (its position in the
// concatenation of all files) and the read's noise_seed s,
//   seed_i = nt::mix_seed(s, i)                      (core/rng.h), which is splitmix64's
//            finaliser of z = s * 0x9E3779B97F4A7C15 + i + 0x632BE59BD9B4E019 (mod 2^64):
//            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//            seed_i = z ^ (z >> 31)
//   eps_i  = at::randn({C,H,W}, CPU generator seeded with seed_i)   (torch.manual_seed-like)
//   v_i    = mean_i + exp(0.5 * clamp(logvar_i, -30, 20)) * eps_i
// so the noise of a sample depends only on (s, i), never on batch composition or rank.
#include "data/latent_dataset.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/rng.h"
#include "data/hdf5_check.h"
#include "data/row_reader.h"

namespace nt {

namespace {

// What the reader keeps of one open file (LatentDataset::File is this, under its private name).
struct OpenFile {
  std::string path;
  H5Id file;
  H5Id data;    // /latents [N,C,H,W] or /moments [N,2C,H,W] (while checking; then closed)
  H5Id labels;  // /labels [N] (while checking; then closed)
  int fd = -1;  // read-only descriptor for pread, open for the dataset's lifetime
  RowReader data_rows, label_rows;
  int64_t n = 0;
  int row_channels = 0, height = 0, width = 0;  // of a stored row (2C for moments)
  bool moments = false;
  std::string dtype;  // "float16" | "float32"
  double scale = 1.0, shift = 0.0;
  bool prescaled = false;  // the stored values are the model's x already
  int64_t num_classes = 0;
  std::string latent_space, source;
};

}  // namespace

struct LatentDataset::File : OpenFile {
  ~File() {
    data_rows = RowReader();
    label_rows = RowReader();
    if (fd >= 0) ::close(fd);
  }
};

namespace {

std::string q(const std::string& path) { return "'" + path + "'"; }

std::vector<hsize_t> dims_of(hid_t dset, const std::string& what) {
  H5Id space(NT_H5_CHECK(H5Dget_space(dset), what));
  int rank = NT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(rank);
  if (rank > 0) NT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  return dims;
}

std::string shape_str(const std::vector<hsize_t>& dims) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < dims.size(); ++i) s << (i ? "," : "") << dims[i];
  s << "]";
  return s.str();
}

// Opens a root attribute that must hold one value; returns an invalid H5Id when absent.
H5Id open_scalar_attr(hid_t file, const char* name, const std::string& path) {
  std::string what = "reading root attribute " + std::string(name) + " of " + q(path);
  if (NT_H5_CHECK(H5Aexists(file, name), what) == 0) return H5Id();
  H5Id attr(NT_H5_CHECK(H5Aopen(file, name, H5P_DEFAULT), what));
  H5Id space(NT_H5_CHECK(H5Aget_space(attr.get()), what));
  hssize_t count = NT_H5_CHECK(H5Sget_simple_extent_npoints(space.get()), what);
  if (count != 1)
    throw DataError(q(path) + ": root attribute " + name + " holds " + std::to_string(count) +
                    " values; it must hold exactly one");
  return attr;
}

H5T_class_t attr_class(hid_t attr, const std::string& what) {
  H5Id type(NT_H5_CHECK(H5Aget_type(attr), what));
  return NT_H5_CHECK(H5Tget_class(type.get()), what);
}

double read_number_attr(hid_t file, const char* name, const std::string& path, double fallback) {
  H5Id attr = open_scalar_attr(file, name, path);
  if (!attr.valid()) return fallback;
  std::string what = "reading root attribute " + std::string(name) + " of " + q(path);
  H5T_class_t cls = attr_class(attr.get(), what);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    throw DataError(q(path) + ": root attribute " + name + " must be a number");
  double value = 0;
  NT_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value), what);
  if (!std::isfinite(value))
    throw DataError(q(path) + ": root attribute " + name + " is not finite");
  return value;
}

// Returns -1 when the attribute is absent.
int64_t read_int_attr(hid_t file, const char* name, const std::string& path) {
  H5Id attr = open_scalar_attr(file, name, path);
  if (!attr.valid()) return -1;
  std::string what = "reading root attribute " + std::string(name) + " of " + q(path);
  if (attr_class(attr.get(), what) != H5T_INTEGER)
    throw DataError(q(path) + ": root attribute " + name + " must be an integer");
  int64_t value = 0;
  NT_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), what);
  return value;
}

// Reads a fixed- or variable-length string attribute (h5py writes the latter for str).
std::string read_string_attr(hid_t file, const char* name, const std::string& path,
                             const std::string& fallback) {
  H5Id attr = open_scalar_attr(file, name, path);
  if (!attr.valid()) return fallback;
  std::string what = "reading root attribute " + std::string(name) + " of " + q(path);
  H5Id type(NT_H5_CHECK(H5Aget_type(attr.get()), what));
  if (NT_H5_CHECK(H5Tget_class(type.get()), what) != H5T_STRING)
    throw DataError(q(path) + ": root attribute " + name + " must be a string");
  if (NT_H5_CHECK(H5Tis_variable_str(type.get()), what) > 0) {
    H5Id mem(NT_H5_CHECK(H5Tcopy(H5T_C_S1), what));
    NT_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE), what);
    NT_H5_CHECK(H5Tset_cset(mem.get(), NT_H5_CHECK(H5Tget_cset(type.get()), what)), what);
    char* text = nullptr;
    NT_H5_CHECK(H5Aread(attr.get(), mem.get(), &text), what);
    std::string value = text ? text : "";
    if (text) H5free_memory(text);
    return value;
  }
  size_t size = H5Tget_size(type.get());
  if (size == 0) throw DataError(q(path) + ": root attribute " + name + " has size 0");
  std::string value(size, '\0');
  NT_H5_CHECK(H5Aread(attr.get(), type.get(), value.data()), what);
  value.resize(std::min(value.find('\0'), value.size()));
  while (!value.empty() && value.back() == ' ') value.pop_back();  // space-padded strings
  return value;
}

// Opens `path` into *f and checks its datasets, shapes, types and attributes.
void open_file(const std::string& path, int64_t first_global, OpenFile* f) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw DataError("data file " + q(path) +
                    " not found (check data.paths and the working folder)");
  if (fs::is_directory(path, ec))
    throw DataError(q(path) + " is a folder, not an HDF5 file");
  std::string what = "opening " + q(path);
  if (NT_H5_CHECK(H5Fis_hdf5(path.c_str()), what) <= 0)
    throw DataError(q(path) + " is not an HDF5 file");

  f->path = path;
  H5Id fapl = h5_read_access(what);
  f->file = H5Id(NT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()),
                             what + " (is it truncated, damaged or still being written?)"));
  hid_t file = f->file.get();

  bool has_latents = NT_H5_CHECK(H5Lexists(file, "latents", H5P_DEFAULT), what) > 0;
  bool has_moments = NT_H5_CHECK(H5Lexists(file, "moments", H5P_DEFAULT), what) > 0;
  if (has_latents && has_moments)
    throw DataError(q(path) + " has both /latents and /moments; keep exactly one of them");
  if (!has_latents && !has_moments)
    throw DataError(q(path) + " has neither /latents [N,C,H,W] nor /moments [N,2C,H,W]");
  if (NT_H5_CHECK(H5Lexists(file, "labels", H5P_DEFAULT), what) <= 0)
    throw DataError(q(path) + " has no /labels dataset ([N] integer class labels)");
  f->moments = has_moments;
  const std::string name = has_moments ? "/moments" : "/latents";
  const std::string dwhat = "opening dataset " + name + " of " + q(path);
  f->data = H5Id(NT_H5_CHECK(H5Dopen2(file, name.c_str(), H5P_DEFAULT), dwhat));
  f->labels = H5Id(NT_H5_CHECK(H5Dopen2(file, "/labels", H5P_DEFAULT),
                               "opening dataset /labels of " + q(path)));

  // Shapes.
  std::vector<hsize_t> dims = dims_of(f->data.get(), dwhat);
  if (dims.size() != 4)
    throw DataError(q(path) + ": " + name + " has shape " + shape_str(dims) + " (rank " +
                    std::to_string(dims.size()) + "); expected rank 4, " +
                    (has_moments ? "[N,2C,H,W]" : "[N,C,H,W]"));
  if (has_moments && dims[1] % 2 != 0)
    throw DataError(q(path) + ": /moments has " + std::to_string(dims[1]) +
                    " channels; expected an even count 2C (mean || logvar)");
  if (dims[1] == 0 || dims[2] == 0 || dims[3] == 0)
    throw DataError(q(path) + ": " + name + " has an empty sample shape " + shape_str(dims));
  f->n = static_cast<int64_t>(dims[0]);
  f->row_channels = static_cast<int>(dims[1]);
  f->height = static_cast<int>(dims[2]);
  f->width = static_cast<int>(dims[3]);
  std::vector<hsize_t> ldims = dims_of(f->labels.get(), "opening dataset /labels of " + q(path));
  if (ldims.size() != 1)
    throw DataError(q(path) + ": /labels has shape " + shape_str(ldims) + "; expected rank 1, [N]");
  if (static_cast<int64_t>(ldims[0]) != f->n)
    throw DataError(q(path) + ": /labels has " + std::to_string(ldims[0]) + " entries but " +
                    name + " has " + std::to_string(f->n) + " samples; they must match");

  // Types.
  {
    H5Id type(NT_H5_CHECK(H5Dget_type(f->data.get()), dwhat));
    H5T_class_t cls = NT_H5_CHECK(H5Tget_class(type.get()), dwhat);
    size_t size = H5Tget_size(type.get());
    if (cls != H5T_FLOAT || (size != 2 && size != 4))
      throw DataError(q(path) + ": " + name + " must be float16 or float32 (found " +
                      (cls == H5T_FLOAT ? "a " + std::to_string(8 * size) + "-bit float"
                                        : std::string("a non-float type")) +
                      "); convert it, e.g. with numpy .astype('float16')");
    f->dtype = size == 2 ? "float16" : "float32";
    H5Id ltype(NT_H5_CHECK(H5Dget_type(f->labels.get()), "reading /labels of " + q(path)));
    if (NT_H5_CHECK(H5Tget_class(ltype.get()), "reading /labels of " + q(path)) != H5T_INTEGER)
      throw DataError(q(path) + ": /labels must hold integers");
  }

  // Attributes.
  f->scale = read_number_attr(file, "scale_factor", path, 1.0);
  f->shift = read_number_attr(file, "shift_factor", path, 0.0);
  const int64_t prescaled = read_int_attr(file, "prescaled", path);
  if (prescaled > 1 || prescaled < -1)  // -1: absent
    throw DataError(q(path) + ": root attribute prescaled = " + std::to_string(prescaled) + " must be 0 or 1");
  f->prescaled = prescaled == 1;
  if (f->prescaled && f->moments)
    throw DataError(q(path) + ": root attribute prescaled = 1 goes with /latents (the values the model takes); "
                    "/moments are always scaled when a latent is drawn");
  f->num_classes = read_int_attr(file, "num_classes", path);
  if (f->num_classes < 0)
    throw DataError(q(path) + " has no root attribute num_classes (an integer, e.g. "
                    "f.attrs['num_classes'] = 1000 in h5py)");
  if (f->num_classes == 0 || f->num_classes > (int64_t(1) << 31))
    throw DataError(q(path) + ": root attribute num_classes = " + std::to_string(f->num_classes) +
                    " is out of range; it must be a positive integer");
  f->latent_space = read_string_attr(file, "latent_space", path, "unknown");
  f->source = read_string_attr(file, "source", path, "");

  // The readers (they reopen the datasets, chunked ones with a sized chunk cache).
  f->data.reset();
  f->labels.reset();
  f->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd < 0)
    throw DataError("cannot open " + q(path) + " for reading: " + std::strerror(errno));
  f->data_rows.open(file, name, f->fd, path, first_global, /*integer=*/false);
  f->label_rows.open(file, "/labels", f->fd, path, first_global, /*integer=*/true);
}

void check_agree(const OpenFile& a, const OpenFile& b) {
  auto differ = [&](const std::string& what, const std::string& va, const std::string& vb) {
    throw DataError("data files " + q(a.path) + " and " + q(b.path) + " differ in " + what +
                    ": " + va + " vs " + vb + "; all files of a dataset must agree");
  };
  auto sample_shape = [](const OpenFile& f) {
    int c = f.moments ? f.row_channels / 2 : f.row_channels;
    return "[" + std::to_string(c) + "," + std::to_string(f.height) + "," +
           std::to_string(f.width) + "]";
  };
  auto kind = [](const OpenFile& f) {
    return std::string(f.moments ? "/moments" : "/latents");
  };
  auto num = [](double v) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    return s.str();
  };
  if (a.moments != b.moments) differ("storage", kind(a), kind(b));
  if (sample_shape(a) != sample_shape(b))
    differ("sample shape C,H,W", sample_shape(a), sample_shape(b));
  if (a.dtype != b.dtype) differ("dtype", a.dtype, b.dtype);
  if (a.latent_space != b.latent_space)
    differ("latent_space", "'" + a.latent_space + "'", "'" + b.latent_space + "'");
  if (a.scale != b.scale) differ("scale_factor", num(a.scale), num(b.scale));
  if (a.shift != b.shift) differ("shift_factor", num(a.shift), num(b.shift));
  if (a.prescaled != b.prescaled) differ("prescaled", std::to_string(a.prescaled), std::to_string(b.prescaled));
  if (a.num_classes != b.num_classes)
    differ("num_classes", std::to_string(a.num_classes), std::to_string(b.num_classes));
}

}  // namespace

LatentDataset::LatentDataset(const std::vector<std::string>& paths) {
  h5_silence();
  if (paths.empty()) throw DataError("no data files given (data.paths is empty)");
  std::vector<std::unique_ptr<File>> opened;
  {
    auto lock = h5_lock();
    try {
      int64_t first_global = 0;
      for (const std::string& path : paths) {
        opened.push_back(std::make_unique<File>());
        open_file(path, first_global, opened.back().get());
        first_global += opened.back()->n;
        if (opened.size() > 1) check_agree(*opened.front(), *opened.back());
      }
    } catch (...) {
      opened.clear();  // close the HDF5 handles under the lock
      throw;
    }
  }
  const File& first = *opened.front();
  info_.channels = first.moments ? first.row_channels / 2 : first.row_channels;
  info_.height = first.height;
  info_.width = first.width;
  info_.num_classes = static_cast<int>(first.num_classes);
  info_.moments = first.moments;
  info_.scale_factor = first.scale;
  info_.shift_factor = first.shift;
  info_.prescaled = first.prescaled;
  info_.latent_space = first.latent_space;
  info_.dtype = first.dtype;
  info_.read_path = first.data_rows.direct() && first.label_rows.direct() ? "pread" : "H5Dread";
  for (auto& f : opened) {
    const std::string path = f->data_rows.direct() && f->label_rows.direct() ? "pread" : "H5Dread";
    if (path != info_.read_path) info_.read_path = "mixed";
    offsets_.push_back(info_.size);
    info_.size += f->n;
    if (!f->source.empty() && info_.source.find(f->source) == std::string::npos)
      info_.source += (info_.source.empty() ? "" : " + ") + f->source;
  }
  if (info_.size == 0) {
    auto lock = h5_lock();
    opened.clear();
    std::string names;
    for (const std::string& p : paths) names += (names.empty() ? "" : ", ") + q(p);
    throw DataError("data files " + names + " hold no samples");
  }
  for (auto& f : opened) files_.push_back(f.release());
}

LatentDataset::~LatentDataset() {
  auto lock = h5_lock();
  for (File* f : files_) delete f;
}

void LatentDataset::read(const std::vector<int64_t>& indices, uint64_t noise_seed,
                         at::Tensor* x, at::Tensor* y) const {
  if (!x || !y) throw std::invalid_argument("LatentDataset::read: x and y must not be null");
  const int64_t B = static_cast<int64_t>(indices.size());
  at::Tensor out_x = at::empty({B, info_.channels, info_.height, info_.width}, at::kFloat);
  at::Tensor out_y = at::empty({B}, at::kLong);
  read_into(indices, noise_seed, out_x, out_y);
  *x = out_x;
  *y = out_y;
}

void LatentDataset::read_into(const std::vector<int64_t>& indices, uint64_t noise_seed,
                              const at::Tensor& out_x, const at::Tensor& out_y) const {
  const int64_t B = static_cast<int64_t>(indices.size());
  const int64_t C = info_.channels, H = info_.height, W = info_.width;
  const int64_t row = C * H * W;  // values of one sample x
  if (!out_x.defined() || out_x.scalar_type() != at::kFloat || !out_x.is_contiguous() ||
      !out_x.device().is_cpu() || out_x.sizes() != at::IntArrayRef({B, C, H, W}))
    throw std::invalid_argument("LatentDataset::read_into: x must be a contiguous CPU float32 "
                                "tensor [B,C,H,W] = [" + std::to_string(B) + "," +
                                std::to_string(C) + "," + std::to_string(H) + "," +
                                std::to_string(W) + "]");
  if (!out_y.defined() || out_y.scalar_type() != at::kLong || !out_y.is_contiguous() ||
      !out_y.device().is_cpu() || out_y.sizes() != at::IntArrayRef({B}))
    throw std::invalid_argument("LatentDataset::read_into: y must be a contiguous CPU int64 "
                                "tensor [B] = [" + std::to_string(B) + "]");
  float* xp = out_x.data_ptr<float>();
  int64_t* yp = out_y.data_ptr<int64_t>();

  // Which file each requested position falls into.
  std::vector<std::vector<int64_t>> positions(files_.size());
  for (int64_t p = 0; p < B; ++p) {
    int64_t g = indices[p];
    if (g < 0 || g >= info_.size)
      throw DataError("sample index " + std::to_string(g) + " (position " + std::to_string(p) +
                      " of the read) is outside the dataset [0, " + std::to_string(info_.size) +
                      ")");
    size_t f = std::upper_bound(offsets_.begin(), offsets_.end(), g) - offsets_.begin() - 1;
    positions[f].push_back(p);
  }

  std::vector<int64_t> rows, uniq, lab;
  std::vector<float> raw;
  for (size_t fi = 0; fi < files_.size(); ++fi) {
    const std::vector<int64_t>& pos = positions[fi];
    if (pos.empty()) continue;
    const File& f = *files_[fi];
    const int64_t n = static_cast<int64_t>(pos.size());
    rows.resize(n);
    for (int64_t k = 0; k < n; ++k) rows[k] = indices[pos[k]] - offsets_[fi];
    uniq = rows;
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    const int64_t U = static_cast<int64_t>(uniq.size());
    const int64_t stored_row = f.data_rows.row_elems();  // C or 2C values per pixel plane set

    raw.resize(static_cast<size_t>(U * stored_row));  // [U, C|2C, H, W]
    lab.resize(static_cast<size_t>(U));               // [U]
    f.data_rows.read_float(uniq, raw.data());
    f.label_rows.read_int(uniq, lab.data());
    for (int64_t u = 0; u < U; ++u)
      if (lab[u] < 0 || lab[u] >= f.num_classes)
        throw DataError(q(f.path) + ": label " + std::to_string(lab[u]) + " of sample " +
                        std::to_string(uniq[u]) + " (global index " +
                        std::to_string(uniq[u] + offsets_[fi]) + ") in /labels is outside [0, "
                        "num_classes=" + std::to_string(f.num_classes) +
                        "); run `tread_data validate` on it");

    const float scale = static_cast<float>(f.scale), shift = static_cast<float>(f.shift);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t u = std::lower_bound(uniq.begin(), uniq.end(), rows[k]) - uniq.begin();
      const float* src = raw.data() + u * stored_row;
      float* dst = xp + pos[k] * row;
      yp[pos[k]] = lab[u];
      if (f.prescaled) {  // x as stored
        std::copy(src, src + row, dst);
        continue;
      }
      if (!f.moments) {
        for (int64_t j = 0; j < row; ++j) dst[j] = (src[j] - shift) * scale;
        continue;
      }
      // x = scale * (mean + exp(0.5 * clamp(logvar, -30, 20)) * eps - shift), eps [C,H,W]
      at::Tensor mean = at::from_blob(const_cast<float*>(src), {C, H, W}, at::kFloat);
      at::Tensor logvar = at::from_blob(const_cast<float*>(src + row), {C, H, W}, at::kFloat);
      const uint64_t seed = mix_seed(noise_seed, static_cast<uint64_t>(indices[pos[k]]));
      at::Generator gen = make_generator(c10::Device(c10::kCPU), seed);
      at::Tensor eps = at::randn({C, H, W}, gen);
      at::Tensor v = mean + at::exp(0.5 * at::clamp(logvar, -30.0, 20.0)) * eps;
      const float* vp = v.data_ptr<float>();
      for (int64_t j = 0; j < row; ++j) dst[j] = (vp[j] - shift) * scale;
    }
  }
}

}  // namespace nt
