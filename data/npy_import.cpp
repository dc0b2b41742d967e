// import_npy (npy_import.h): reads the labels completely (N integers) and checks them, then
// streams the data array in blocks of about 64 MiB from the .npy file or the .npz member into
// a contiguous, uncompressed HDF5 dataset (the fast pread path of the loader) through
// DatasetWriter (dataset_writer.h).
#include "data/npy_import.h"

#include <ATen/ATen.h>
#include <zip.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>

#include "data/dataset_writer.h"
#include "data/latent_dataset.h"
#include "data/progress.h"

namespace nt {

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// ---- byte sources: a plain file or a member of a zip archive ---------------------------------

class Source {
 public:
  virtual ~Source() = default;
  // Reads up to n bytes; fewer only at the end of the data.
  virtual size_t read(void* buf, size_t n) = 0;
  virtual uint64_t size() const = 0;  // total bytes of the array file (header + data)
  const std::string& name() const { return name_; }

 protected:
  std::string name_;
};

class FileSource : public Source {
 public:
  explicit FileSource(const std::string& path) {
    name_ = q(path);
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw DataError("array file " + q(path) + " not found");
    if (std::filesystem::is_directory(path, ec))
      throw DataError(q(path) + " is a folder, not a .npy file");
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) throw DataError("cannot open " + q(path) + ": " + std::strerror(errno));
    size_ = std::filesystem::file_size(path, ec);
  }
  ~FileSource() override {
    if (f_) std::fclose(f_);
  }
  size_t read(void* buf, size_t n) override {
    size_t got = std::fread(buf, 1, n, f_);
    if (got < n && std::ferror(f_))
      throw DataError("reading " + name_ + " failed: " + std::strerror(errno));
    return got;
  }
  uint64_t size() const override { return size_; }

 private:
  FILE* f_ = nullptr;
  uint64_t size_ = 0;
};

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};

// An open .npz archive and the names of its arrays (members "<name>.npy"), in archive order.
class Npz {
 public:
  explicit Npz(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw DataError("array file " + q(path) + " not found");
    int err = 0;
    zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
    if (!z) {
      zip_error_t error;
      zip_error_init_with_code(&error, err);
      std::string why = zip_error_strerror(&error);
      zip_error_fini(&error);
      throw DataError(q(path) + " is not a readable .npz (zip) archive: " + why);
    }
    zip_.reset(z);
    const zip_int64_t n = zip_get_num_entries(z, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* name = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
      if (!name) continue;
      std::string s = name;
      if (ends_with(s, ".npy")) {
        arrays_.push_back(s.substr(0, s.size() - 4));
        index_.push_back(i);
      }
    }
    if (arrays_.empty()) throw DataError(q(path) + " holds no .npy arrays");
  }
  const std::vector<std::string>& arrays() const { return arrays_; }
  bool has(const std::string& key) const {
    return std::find(arrays_.begin(), arrays_.end(), key) != arrays_.end();
  }
  std::string list() const {
    std::string s;
    for (const std::string& a : arrays_) s += (s.empty() ? "" : ", ") + q(a);
    return s;
  }
  std::unique_ptr<Source> open(const std::string& key) const;
  const std::string& path() const { return path_; }

 private:
  friend class ZipSource;
  std::string path_;
  std::unique_ptr<zip_t, ZipCloser> zip_;
  std::vector<std::string> arrays_;
  std::vector<zip_int64_t> index_;
};

class ZipSource : public Source {
 public:
  ZipSource(const Npz& npz, zip_int64_t index, const std::string& key) {
    name_ = q(npz.path_) + " (array " + q(key) + ")";
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(npz.zip_.get(), static_cast<zip_uint64_t>(index), 0, &st) != 0 ||
        !(st.valid & ZIP_STAT_SIZE))
      throw DataError("cannot read the size of " + name_);
    size_ = st.size;
    f_ = zip_fopen_index(npz.zip_.get(), static_cast<zip_uint64_t>(index), 0);
    if (!f_)
      throw DataError("cannot open " + name_ + ": " + zip_strerror(npz.zip_.get()));
  }
  ~ZipSource() override {
    if (f_) zip_fclose(f_);
  }
  size_t read(void* buf, size_t n) override {
    size_t done = 0;
    while (done < n) {
      zip_int64_t got = zip_fread(f_, static_cast<char*>(buf) + done, n - done);
      if (got < 0)
        throw DataError("reading " + name_ + " failed (damaged archive?): " +
                        zip_file_strerror(f_));
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }
  uint64_t size() const override { return size_; }

 private:
  zip_file_t* f_ = nullptr;
  uint64_t size_ = 0;
};

std::unique_ptr<Source> Npz::open(const std::string& key) const {
  auto it = std::find(arrays_.begin(), arrays_.end(), key);
  if (it == arrays_.end())
    throw DataError(q(path_) + " has no array " + q(key) + "; it holds " + list());
  return std::make_unique<ZipSource>(*this, index_[it - arrays_.begin()], key);
}

// ---- .npy header -----------------------------------------------------------------------------

// A reader of the small Python literal subset numpy writes: {'key': value, ...} with string,
// True/False and tuple-of-int values.
class Literal {
 public:
  Literal(const std::string& text, const std::string& name) : s_(text), name_(name) {}
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  bool peek(char c) {
    skip();
    return i_ < s_.size() && s_[i_] == c;
  }
  void expect(char c) {
    if (!peek(c)) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string() {
    skip();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("expected a string");
    const char quote = s_[i_++];
    size_t end = s_.find(quote, i_);
    if (end == std::string::npos) fail("unterminated string");
    std::string v = s_.substr(i_, end - i_);
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    skip();
    if (s_.compare(i_, 4, "True") == 0) { i_ += 4; return true; }
    if (s_.compare(i_, 5, "False") == 0) { i_ += 5; return false; }
    fail("expected True or False");
    return false;
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> v;
    while (!peek(')')) {
      skip();
      size_t start = i_;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
      if (start == i_) fail("expected a non-negative integer in the shape");
      v.push_back(std::stoll(s_.substr(start, i_ - start)));
      if (!peek(')')) expect(',');
    }
    ++i_;
    return v;
  }
  [[noreturn]] void fail(const std::string& what) {
    throw DataError(name_ + ": malformed .npy header (" + what + " at character " +
                    std::to_string(i_) + " of \"" + s_ + "\")");
  }

 private:
  const std::string& s_;
  std::string name_;
  size_t i_ = 0;
};

}  // namespace

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "(";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + (s.size() == 1 ? ",)" : ")");
}

NpyHeader parse_npy_header(const std::string& head, const std::string& name) {
  static const char kMagic[] = "\x93NUMPY";
  if (head.size() < 10 || head.compare(0, 6, kMagic, 6) != 0)
    throw DataError(name + " is not a .npy array (no \\x93NUMPY magic at its start)");
  const int major = static_cast<unsigned char>(head[6]);
  size_t len = 0, pre = 0;
  if (major == 1) {
    len = static_cast<unsigned char>(head[8]) | (static_cast<size_t>(static_cast<unsigned char>(head[9])) << 8);
    pre = 10;
  } else if (major == 2 || major == 3) {
    if (head.size() < 12) throw DataError(name + ": the .npy header is cut off");
    len = 0;
    for (int k = 0; k < 4; ++k)
      len |= static_cast<size_t>(static_cast<unsigned char>(head[8 + k])) << (8 * k);
    pre = 12;
  } else {
    throw DataError(name + ": .npy format version " + std::to_string(major) +
                    " is not supported (versions 1, 2 and 3 are)");
  }
  if (head.size() < pre + len) throw DataError(name + ": the .npy header is cut off");
  const std::string dict = head.substr(pre, len);
  Literal lit(dict, name);
  std::string descr;
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  NpyHeader h;
  lit.expect('{');
  while (!lit.peek('}')) {
    const std::string key = lit.string();
    lit.expect(':');
    if (key == "descr") {
      if (lit.peek('[')) lit.fail("structured (record) arrays are not supported");
      descr = lit.string();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = lit.boolean();
      have_order = true;
    } else if (key == "shape") {
      h.shape = lit.tuple();
      have_shape = true;
    } else {
      lit.fail("unknown key '" + key + "'");
    }
    if (!lit.peek('}')) lit.expect(',');
  }
  if (!have_descr || !have_order || !have_shape)
    throw DataError(name + ": the .npy header lacks one of 'descr', 'fortran_order', 'shape'");
  if (fortran)
    throw DataError(name + " is stored in Fortran order; save it in C order "
                    "(np.save(f, np.ascontiguousarray(a)))");
  if (descr.size() < 3 || std::string("<>|=").find(descr[0]) == std::string::npos ||
      std::string("fiu").find(descr[1]) == std::string::npos ||
      !std::all_of(descr.begin() + 2, descr.end(), [](char c) { return std::isdigit(c); }))
    throw DataError(name + ": dtype '" + descr + "' is not supported (use float16/32/64 data and "
                    "integer labels, e.g. '<f2', '<f4', '<i8')");
  h.byte_order = descr[0] == '=' ? '<' : descr[0];
  h.kind = descr[1];
  h.itemsize = std::stoi(descr.substr(2));
  const bool ok = h.kind == 'f' ? (h.itemsize == 2 || h.itemsize == 4 || h.itemsize == 8)
                                : (h.itemsize == 1 || h.itemsize == 2 || h.itemsize == 4 ||
                                   h.itemsize == 8);
  if (!ok) throw DataError(name + ": dtype '" + descr + "' is not supported");
  h.data_offset = static_cast<int64_t>(pre + len);
  return h;
}

namespace {

// Reads the header from a source (leaving it at the start of the data) and checks that the
// source holds exactly the data the header promises.
NpyHeader read_header(Source& src) {
  std::string head(12, '\0');
  size_t got = src.read(head.data(), 10);
  if (got < 10 || head.compare(0, 6, "\x93NUMPY", 6) != 0)
    throw DataError(src.name() + " is not a .npy array (no \\x93NUMPY magic at its start)");
  size_t pre = 10, len = 0;
  if (head[6] == 2 || head[6] == 3) {
    if (src.read(&head[10], 2) < 2) throw DataError(src.name() + ": the .npy header is cut off");
    pre = 12;
    for (int k = 0; k < 4; ++k)
      len |= static_cast<size_t>(static_cast<unsigned char>(head[8 + k])) << (8 * k);
  } else {
    len = static_cast<unsigned char>(head[8]) |
          (static_cast<size_t>(static_cast<unsigned char>(head[9])) << 8);
  }
  if (len > (size_t(1) << 24)) throw DataError(src.name() + ": implausible .npy header length");
  head.resize(pre + len);
  if (src.read(&head[pre], len) < len) throw DataError(src.name() + ": the .npy header is cut off");
  NpyHeader h = parse_npy_header(head, src.name());
  uint64_t elems = 1;
  for (int64_t d : h.shape) elems *= static_cast<uint64_t>(d);
  const uint64_t want = static_cast<uint64_t>(h.data_offset) + elems * h.itemsize;
  if (src.size() < want)
    throw DataError(src.name() + " is truncated: its header promises " + std::to_string(want) +
                    " bytes but it has " + std::to_string(src.size()));
  if (src.size() > want)
    throw DataError(src.name() + " has " + std::to_string(src.size() - want) +
                    " bytes after the data its header describes; is it damaged?");
  return h;
}

void read_exact(Source& src, void* buf, size_t n) {
  if (src.read(buf, n) < n) throw DataError(src.name() + " is truncated (data ends early)");
}

void byteswap(char* p, size_t count, int itemsize) {
  if (itemsize == 1) return;
  for (size_t k = 0; k < count; ++k, p += itemsize) std::reverse(p, p + itemsize);
}

// The array sources for latents and labels, resolving .npz keys.
struct Arrays {
  std::unique_ptr<Npz> latents_npz, labels_npz;
  std::unique_ptr<Source> latents, labels;
};

Arrays open_arrays(const NpyImportOptions& o) {
  Arrays a;
  const bool lat_npz = ends_with(o.latents, ".npz");
  const std::string label_path = o.labels.empty() ? o.latents : o.labels;
  const bool lab_npz = ends_with(label_path, ".npz");
  if (o.labels.empty() && !lat_npz)
    throw DataError("--labels is needed unless --latents is an .npz holding both arrays");
  if (lat_npz) {
    a.latents_npz = std::make_unique<Npz>(o.latents);
    const Npz& z = *a.latents_npz;
    std::string key = o.latents_key;
    if (key.empty()) key = z.has("latents") ? "latents" : z.arrays()[0];
    a.latents = z.open(key);
  } else {
    if (!o.latents_key.empty()) throw DataError("--latents-key applies to .npz files only");
    a.latents = std::make_unique<FileSource>(o.latents);
  }
  if (lab_npz) {
    const bool same = label_path == o.latents;
    if (!same) a.labels_npz = std::make_unique<Npz>(label_path);
    const Npz& z = same ? *a.latents_npz : *a.labels_npz;
    std::string key = o.labels_key;
    if (key.empty()) {
      if (z.has("labels")) key = "labels";
      else if (!same) key = z.arrays()[0];
      else if (z.arrays().size() >= 2) key = z.arrays()[1];
      else
        throw DataError(q(label_path) + " holds only " + z.list() +
                        "; give the labels with --labels or --labels-key");
    }
    a.labels = z.open(key);
  } else {
    if (!o.labels_key.empty()) throw DataError("--labels-key applies to .npz files only");
    a.labels = std::make_unique<FileSource>(label_path);
  }
  return a;
}

// Reads all N labels as int64 (checking the dtype and shape).
std::vector<int64_t> read_labels(Source& src, int64_t n) {
  NpyHeader h = read_header(src);
  if (h.kind == 'f')
    throw DataError(src.name() + ": labels must be integers, found floats; convert them with "
                    ".astype('int64')");
  if (h.shape.size() != 1)
    throw DataError(src.name() + ": labels have shape " + shape_text(h.shape) +
                    "; expected (N,) = (" + std::to_string(n) + ",)");
  if (h.shape[0] != n)
    throw DataError(src.name() + " holds " + std::to_string(h.shape[0]) +
                    " labels but the data has " + std::to_string(n) + " samples; they must match");
  std::vector<char> raw(static_cast<size_t>(n) * h.itemsize);
  read_exact(src, raw.data(), raw.size());
  if (h.byte_order == '>') byteswap(raw.data(), static_cast<size_t>(n), h.itemsize);
  std::vector<int64_t> out(static_cast<size_t>(n));
  const char* p = raw.data();
  for (int64_t k = 0; k < n; ++k, p += h.itemsize) {
    int64_t v = 0;
    if (h.kind == 'i') {
      switch (h.itemsize) {
        case 1: { int8_t x; std::memcpy(&x, p, 1); v = x; break; }
        case 2: { int16_t x; std::memcpy(&x, p, 2); v = x; break; }
        case 4: { int32_t x; std::memcpy(&x, p, 4); v = x; break; }
        default: std::memcpy(&v, p, 8);
      }
    } else {
      uint64_t x = 0;
      std::memcpy(&x, p, h.itemsize);  // little-endian host
      v = x > uint64_t(std::numeric_limits<int64_t>::max()) ? -1 : static_cast<int64_t>(x);
    }
    out[static_cast<size_t>(k)] = v;
  }
  return out;
}

}  // namespace

NpyImportResult import_npy(const NpyImportOptions& o) {
  namespace fs = std::filesystem;
  if (o.out.empty()) throw DataError("no output file given (--out)");
  const fs::path out_dir = fs::path(o.out).parent_path();
  std::error_code ec;
  if (!out_dir.empty() && !fs::is_directory(out_dir, ec))
    throw DataError("the output folder " + q(out_dir.string()) + " does not exist");

  Arrays arrays = open_arrays(o);
  Source& data = *arrays.latents;
  NpyHeader h = read_header(data);
  const std::string kind = o.moments ? "moments" : "latents";
  if (h.kind != 'f')
    throw DataError(data.name() + ": " + kind + " must be floats (float16/32/64), found " +
                    (h.kind == 'i' ? "signed" : "unsigned") + " integers");
  if (h.shape.size() != 4)
    throw DataError(data.name() + ": " + kind + " have shape " + shape_text(h.shape) +
                    "; expected rank 4, " + (o.moments ? "(N, 2C, H, W)" : "(N, C, H, W)"));
  if (o.moments && h.shape[1] % 2 != 0)
    throw DataError(data.name() + ": moments have " + std::to_string(h.shape[1]) +
                    " channels; expected an even count 2C (mean || logvar)");
  const int64_t n = h.shape[0];
  if (n == 0 || h.shape[1] == 0 || h.shape[2] == 0 || h.shape[3] == 0)
    throw DataError(data.name() + " is empty: shape " + shape_text(h.shape));

  std::vector<int64_t> labels = read_labels(*arrays.labels, n);
  std::vector<int64_t> bad;
  int64_t max_label = -1, n_bad = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t v = labels[static_cast<size_t>(k)];
    if (v < 0 || (o.num_classes > 0 && v >= o.num_classes)) {
      if (n_bad++ < 10) bad.push_back(k);
    }
    max_label = std::max(max_label, v);
  }
  if (n_bad > 0) {
    std::string s = arrays.labels->name() + ": " + std::to_string(n_bad) + " label(s) outside [0, " +
                    (o.num_classes > 0 ? "num_classes=" + std::to_string(o.num_classes)
                                       : std::string("inf")) +
                    "), at indices";
    for (int64_t k : bad)
      s += " " + std::to_string(k) + " (label " + std::to_string(labels[static_cast<size_t>(k)]) +
           ")";
    if (n_bad > 10) s += " ...";
    throw DataError(s);
  }
  NpyImportResult result;
  result.samples = n;
  result.shape = h.shape;
  result.num_classes = o.num_classes > 0 ? o.num_classes : max_label + 1;
  result.num_classes_from_labels = o.num_classes <= 0;
  result.dtype = h.itemsize == 2 ? "float16" : "float32";

  const at::ScalarType dtype = h.itemsize == 2 ? at::kHalf : at::kFloat;
  DatasetWriter writer(o.out, kind, h.shape, dtype);
  const int64_t row = h.shape[1] * h.shape[2] * h.shape[3];
  const int64_t block = std::max<int64_t>(1, (int64_t(64) << 20) / (row * h.itemsize));
  std::vector<char> raw;
  std::vector<float> conv;
  Progress progress("import-npy " + q(o.out), n);
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t rows = std::min(block, n - begin);
    const size_t count = static_cast<size_t>(rows * row);
    raw.resize(count * h.itemsize);
    read_exact(data, raw.data(), raw.size());
    if (h.byte_order == '>') byteswap(raw.data(), count, h.itemsize);
    void* buf = raw.data();
    if (h.itemsize == 8) {  // float64 -> float32
      conv.resize(count);
      const double* d = reinterpret_cast<const double*>(raw.data());
      for (size_t k = 0; k < count; ++k) conv[k] = static_cast<float>(d[k]);
      buf = conv.data();
    }
    // [rows, C, H, W] in the stored dtype (float16 bits or float32), not copied
    writer.write_rows(begin,
                      at::from_blob(buf, {rows, h.shape[1], h.shape[2], h.shape[3]}, dtype));
    progress.update(begin + rows);
  }
  progress.finish();

  writer.write_labels(labels);
  std::string source = o.source;
  if (source.empty()) {
    source = "imported from " + o.latents;
    if (!o.labels.empty() && o.labels != o.latents) source += " and " + o.labels;
    source += " by tread_data import-npy";
  }
  writer.set_dataset_attributes(result.num_classes, o.scale_factor, o.shift_factor, o.latent_space, source,
                                TextType::kFixedUtf8);
  writer.commit();
  return result;
}

}  // namespace nt
