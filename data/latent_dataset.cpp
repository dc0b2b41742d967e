// LatentDataset: the minimal synchronous HDF5 reader (format in docs/data-format.md).
// A read groups the requested global indices by file, sorts and de-duplicates them, reads the
// contiguous runs with one hyperslab-union selection per dataset (HDF5 converts float16 to
// float32 and any integer label type to int64 on the way), then scatters the rows back into
// the requested order.
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

#include "core/rng.h"
#include "data/hdf5_check.h"

namespace nt {

namespace {

// What the reader keeps of one open file (LatentDataset::File is this, under its private name).
struct OpenFile {
  std::string path;
  H5Id file;
  H5Id data;    // /latents [N,C,H,W] or /moments [N,2C,H,W]
  H5Id labels;  // /labels [N]
  int64_t n = 0;
  int row_channels = 0, height = 0, width = 0;  // of a stored row (2C for moments)
  bool moments = false;
  std::string dtype;  // "float16" | "float32"
  double scale = 1.0, shift = 0.0;
  int64_t num_classes = 0;
  std::string latent_space, source;
};

}  // namespace

struct LatentDataset::File : OpenFile {};

namespace {

// Serialises this reader's HDF5 work (the library also locks; this keeps a non-thread-safe
// HDF5 build correct too).
std::mutex& h5_mutex() {
  static std::mutex m;
  return m;
}

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

// Reads the rows `rows` (sorted, unique, in range) of `dset` as `mem_type` into `buf`, one
// hyperslab per contiguous run, all runs in one selection and one H5Dread.
void read_rows(hid_t dset, hid_t mem_type, const std::vector<int64_t>& rows, void* buf,
               const std::string& what) {
  if (rows.empty()) return;
  H5Id space(NT_H5_CHECK(H5Dget_space(dset), what));
  int rank = NT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(rank), start(rank, 0), count(rank);
  NT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  count = dims;
  hsize_t elems_per_row = 1;
  for (int d = 1; d < rank; ++d) elems_per_row *= dims[d];
  bool first = true;
  for (size_t i = 0; i < rows.size();) {
    size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
    start[0] = static_cast<hsize_t>(rows[i]);
    count[0] = static_cast<hsize_t>(j - i);
    NT_H5_CHECK(H5Sselect_hyperslab(space.get(), first ? H5S_SELECT_SET : H5S_SELECT_OR,
                                    start.data(), nullptr, count.data(), nullptr),
                what);
    first = false;
    i = j;
  }
  hsize_t total = static_cast<hsize_t>(rows.size()) * elems_per_row;
  H5Id mem_space(NT_H5_CHECK(H5Screate_simple(1, &total, nullptr), what));
  NT_H5_CHECK(H5Dread(dset, mem_type, mem_space.get(), space.get(), H5P_DEFAULT, buf), what);
}

// Opens `path` into *f and checks its datasets, shapes, types and attributes.
void open_file(const std::string& path, OpenFile* f) {
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
  f->num_classes = read_int_attr(file, "num_classes", path);
  if (f->num_classes < 0)
    throw DataError(q(path) + " has no root attribute num_classes (an integer, e.g. "
                    "f.attrs['num_classes'] = 1000 in h5py)");
  if (f->num_classes == 0 || f->num_classes > (int64_t(1) << 31))
    throw DataError(q(path) + ": root attribute num_classes = " + std::to_string(f->num_classes) +
                    " is out of range; it must be a positive integer");
  f->latent_space = read_string_attr(file, "latent_space", path, "unknown");
  f->source = read_string_attr(file, "source", path, "");
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
  if (a.num_classes != b.num_classes)
    differ("num_classes", std::to_string(a.num_classes), std::to_string(b.num_classes));
}

}  // namespace

LatentDataset::LatentDataset(const std::vector<std::string>& paths) {
  h5_silence();
  if (paths.empty()) throw DataError("no data files given (data.paths is empty)");
  std::vector<std::unique_ptr<File>> opened;
  {
    std::lock_guard<std::mutex> lock(h5_mutex());
    for (const std::string& path : paths) {
      opened.push_back(std::make_unique<File>());
      open_file(path, opened.back().get());
      if (opened.size() > 1) check_agree(*opened.front(), *opened.back());
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
  info_.latent_space = first.latent_space;
  info_.dtype = first.dtype;
  for (auto& f : opened) {
    offsets_.push_back(info_.size);
    info_.size += f->n;
    if (!f->source.empty() && info_.source.find(f->source) == std::string::npos)
      info_.source += (info_.source.empty() ? "" : " + ") + f->source;
  }
  if (info_.size == 0) {
    std::string names;
    for (const std::string& p : paths) names += (names.empty() ? "" : ", ") + q(p);
    throw DataError("data files " + names + " hold no samples");
  }
  for (auto& f : opened) files_.push_back(f.release());
}

LatentDataset::~LatentDataset() {
  std::lock_guard<std::mutex> lock(h5_mutex());
  for (File* f : files_) delete f;
}

void LatentDataset::read(const std::vector<int64_t>& indices, uint64_t noise_seed,
                         at::Tensor* x, at::Tensor* y) const {
  if (!x || !y) throw std::invalid_argument("LatentDataset::read: x and y must not be null");
  h5_silence();
  const int64_t B = static_cast<int64_t>(indices.size());
  const int64_t C = info_.channels, H = info_.height, W = info_.width;
  at::Tensor out_x = at::empty({B, C, H, W}, at::kFloat);  // [B,C,H,W]
  at::Tensor out_y = at::empty({B}, at::kLong);            // [B]

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

  for (size_t fi = 0; fi < files_.size(); ++fi) {
    const std::vector<int64_t>& pos = positions[fi];
    if (pos.empty()) continue;
    const File& f = *files_[fi];
    const int64_t n = static_cast<int64_t>(pos.size());
    std::vector<int64_t> rows(n);
    for (int64_t k = 0; k < n; ++k) rows[k] = indices[pos[k]] - offsets_[fi];
    std::vector<int64_t> uniq = rows;
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    const int64_t U = static_cast<int64_t>(uniq.size());

    at::Tensor raw = at::empty({U, f.row_channels, H, W}, at::kFloat);  // [U,C|2C,H,W]
    at::Tensor lab = at::empty({U}, at::kLong);                         // [U]
    {
      std::lock_guard<std::mutex> lock(h5_mutex());
      read_rows(f.data.get(), H5T_NATIVE_FLOAT, uniq, raw.data_ptr<float>(),
                std::string("reading ") + (f.moments ? "/moments" : "/latents") + " of " +
                    q(f.path));
      read_rows(f.labels.get(), H5T_NATIVE_INT64, uniq, lab.data_ptr<int64_t>(),
                "reading /labels of " + q(f.path));
    }
    const int64_t* lp = lab.data_ptr<int64_t>();
    for (int64_t u = 0; u < U; ++u)
      if (lp[u] < 0 || lp[u] >= f.num_classes)
        throw DataError(q(f.path) + ": label " + std::to_string(lp[u]) + " of sample " +
                        std::to_string(uniq[u]) + " (global index " +
                        std::to_string(uniq[u] + offsets_[fi]) + ") is outside [0, num_classes=" +
                        std::to_string(f.num_classes) + "); run `tread_data validate` on it");

    // slot[k]: row of `raw` for requested position pos[k]; dst[k] = pos[k].
    at::Tensor slot = at::empty({n}, at::kLong), dst = at::empty({n}, at::kLong);
    int64_t* sp = slot.data_ptr<int64_t>();
    int64_t* dp = dst.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      sp[k] = std::lower_bound(uniq.begin(), uniq.end(), rows[k]) - uniq.begin();
      dp[k] = pos[k];
    }
    at::Tensor v = raw.index_select(0, slot);  // [n,C|2C,H,W]
    if (f.moments) {
      at::Tensor mean = v.narrow(1, 0, C);    // [n,C,H,W]
      at::Tensor logvar = v.narrow(1, C, C);  // [n,C,H,W]
      at::Tensor eps = at::empty({n, C, H, W}, at::kFloat);
      for (int64_t k = 0; k < n; ++k) {
        uint64_t seed = mix_seed(noise_seed, static_cast<uint64_t>(indices[pos[k]]));
        at::Generator gen = make_generator(c10::Device(c10::kCPU), seed);
        eps[k].copy_(at::randn({C, H, W}, gen));
      }
      v = mean + at::exp(0.5 * at::clamp(logvar, -30.0, 20.0)) * eps;
    }
    at::Tensor xs = (v - f.shift) * f.scale;  // [n,C,H,W]
    out_x.index_copy_(0, dst, xs);
    out_y.index_copy_(0, dst, lab.index_select(0, slot));
  }
  *x = out_x;
  *y = out_y;
}

}  // namespace nt
