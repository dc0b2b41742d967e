// import_wds (wds_import.h): a first pass reads every shard's tar headers and groups the members
// into samples (so that N is known before the file is created); the second reads each sample's
// .npy and .cls members by offset and streams blocks of about 64 MiB into a contiguous,
// uncompressed HDF5 dataset through DatasetWriter (dataset_writer.h).
#include "data/wds_import.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "data/dataset_writer.h"
#include "data/latent_dataset.h"
#include "data/npy_import.h"
#include "data/progress.h"

namespace nt {
namespace {

namespace fs = std::filesystem;

std::string q(const std::string& s) { return "'" + s + "'"; }

constexpr int64_t kBlock = 512;

// A regular member of a tar file: where its data lie.
struct Member {
  std::string name;
  int64_t offset = 0, size = 0;
};

// Where a member's data lie; size -1: not (yet) seen.
struct Extent {
  int64_t offset = 0, size = -1;
};

// One sample: the members <key>.latent.npy and <key>.cls of one shard (kept for every sample of
// the import: no member names).
struct Sample {
  size_t shard = 0;
  std::string key;
  Extent latent, cls;
};

class Shard {
 public:
  explicit Shard(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) throw DataError("cannot open shard " + q(path) + ": " + std::strerror(errno));
    std::error_code ec;
    size_ = static_cast<int64_t>(fs::file_size(path, ec));
  }
  ~Shard() {
    if (fd_ >= 0) ::close(fd_);
  }
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return size_; }

  // Exactly n bytes at `offset`; `what` names them in the error.
  std::string read(int64_t offset, int64_t n, const std::string& what) const {
    std::string buf(static_cast<size_t>(n), '\0');
    int64_t done = 0;
    while (done < n) {
      const ssize_t got = ::pread(fd_, &buf[static_cast<size_t>(done)], static_cast<size_t>(n - done), offset + done);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw DataError("reading " + what + " of shard " + q(path_) + " failed: " + std::strerror(errno));
      if (got == 0) throw DataError("shard " + q(path_) + " is truncated (" + what + " ends past its end)");
      done += got;
    }
    return buf;
  }

 private:
  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// A numeric header field: octal text (NUL/space terminated), or base-256 when the first byte's
// high bit is set (GNU, for sizes of 8 GiB and more).
int64_t tar_number(const char* p, size_t n, const std::string& where) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  if (u[0] & 0x80) {
    int64_t v = u[0] & 0x7f;
    for (size_t i = 1; i < n; ++i) v = (v << 8) | u[i];
    return v;
  }
  int64_t v = 0;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\0')) ++i;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = v * 8 + (p[i] - '0');
  for (; i < n; ++i)
    if (p[i] != ' ' && p[i] != '\0') throw DataError(where + ": a tar header field is not an octal number");
  return v;
}

// The value of `key` in pax extended-header records ("<len> <key>=<value>\n"), if present.
bool pax_value(const std::string& records, const std::string& key, std::string* value) {
  size_t pos = 0;
  while (pos < records.size()) {
    const size_t space = records.find(' ', pos);
    if (space == std::string::npos) break;
    const size_t len = std::strtoull(records.c_str() + pos, nullptr, 10);
    if (len == 0 || pos + len > records.size()) break;
    const std::string rec = records.substr(space + 1, pos + len - space - 2);  // without the '\n'
    const size_t eq = rec.find('=');
    if (eq != std::string::npos && rec.compare(0, eq, key) == 0) {
      *value = rec.substr(eq + 1);
      return true;
    }
    pos += len;
  }
  return false;
}

// The regular members of a tar file, in order.
std::vector<Member> list_members(const Shard& shard) {
  std::vector<Member> out;
  std::string long_name, pax_path;
  int64_t pax_size = -1;
  if (shard.size() >= 2 && shard.read(0, 2, "the magic") == "\x1f\x8b")
    throw DataError("shard " + q(shard.path()) + " is gzip-compressed; decompress it first (gunzip)");
  int64_t pos = 0;
  while (true) {
    if (pos + kBlock > shard.size()) {
      if (pos == shard.size() && pos > 0) break;  // no end-of-archive blocks: accept what was complete
      throw DataError("shard " + q(shard.path()) + " is truncated or not a tar file (a header at byte " +
                      std::to_string(pos) + " ends past its end)");
    }
    const std::string h = shard.read(pos, kBlock, "a header");
    if (std::all_of(h.begin(), h.end(), [](char c) { return c == '\0'; })) break;  // end of archive
    const std::string where = "shard " + q(shard.path()) + " at byte " + std::to_string(pos);
    unsigned sum = 0;
    for (int64_t i = 0; i < kBlock; ++i)
      sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[static_cast<size_t>(i)]);
    if (static_cast<int64_t>(sum) != tar_number(&h[148], 8, where))
      throw DataError(where + ": not a tar header (checksum mismatch); the shard is damaged or not a tar file");
    const char type = h[156];
    int64_t size = tar_number(&h[124], 12, where);
    if (pax_size >= 0 && type != 'x' && type != 'g' && type != 'L') size = pax_size;
    const int64_t data = pos + kBlock;
    if (data + size > shard.size())
      throw DataError(where + ": the member's " + std::to_string(size) + " bytes end past the shard's end (truncated)");
    if (type == 'L') {
      long_name = shard.read(data, size, "a long name");
      long_name = long_name.substr(0, long_name.find('\0'));
    } else if (type == 'x') {
      const std::string records = shard.read(data, size, "a pax header");
      std::string v;
      if (pax_value(records, "path", &v)) pax_path = v;
      if (pax_value(records, "size", &v)) pax_size = std::stoll(v);
    } else if (type == 'g' || type == 'K') {
      // global pax header, GNU long link name: nothing a sample needs
    } else {
      if (type == '0' || type == '\0' || type == '7') {
        std::string name;
        if (!pax_path.empty()) {
          name = pax_path;
        } else if (!long_name.empty()) {
          name = long_name;
        } else {
          name = std::string(h.data(), strnlen(h.data(), 100));
          if (h.compare(257, 6, "ustar\0", 6) == 0 && h[345] != '\0')  // POSIX ustar prefix
            name = std::string(&h[345], strnlen(&h[345], 155)) + "/" + name;
        }
        out.push_back({name, data, size});
      }
      long_name.clear();
      pax_path.clear();
      pax_size = -1;
    }
    pos = data + (size + kBlock - 1) / kBlock * kBlock;
  }
  return out;
}

// webdataset's split of a member path: key = the path up to the first '.' of its file name,
// extension = the rest. False when the file name has no '.'.
bool split_key(const std::string& name, std::string* key, std::string* ext) {
  const size_t slash = name.rfind('/');
  const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos || dot == 0 || (slash != std::string::npos && dot == slash + 1)) return false;
  *key = name.substr(0, dot);
  *ext = name.substr(dot + 1);
  return true;
}

// The shard files: each path as given, each folder's .tar files whose names contain `match`.
std::vector<std::string> shard_paths(const WdsImportOptions& o) {
  std::vector<std::string> out;
  for (const auto& p : o.shards) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        const std::string f = e.path().filename().string();
        if (e.is_regular_file() && f.size() > 4 && f.compare(f.size() - 4, 4, ".tar") == 0 &&
            f.find(o.match) != std::string::npos)
          found.push_back(e.path().string());
      }
      if (found.empty())
        throw DataError("folder " + q(p) + " holds no .tar shard" + (o.match.empty() ? "" : " whose name contains " + q(o.match)));
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(p, ec)) {
      out.push_back(p);
    } else {
      throw DataError("shard " + q(p) + " not found");
    }
  }
  if (out.empty()) throw DataError("no shards given (--shards)");
  return out;
}

// The class of a .cls member: decimal text, optionally signed, surrounded by white space (as
// Python's int() reads it in the reference).
int64_t parse_label(const std::string& text, const std::string& where) {
  size_t a = 0, b = text.size();
  while (a < b && std::isspace(static_cast<unsigned char>(text[a]))) ++a;
  while (b > a && (std::isspace(static_cast<unsigned char>(text[b - 1])) || text[b - 1] == '\0')) --b;
  const std::string t = text.substr(a, b - a);
  size_t i = (!t.empty() && (t[0] == '-' || t[0] == '+')) ? 1 : 0;
  if (i == t.size() || t.size() > 18 || !std::all_of(t.begin() + static_cast<long>(i), t.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c));
      }))
    throw DataError(where + ": the class " + q(t.substr(0, 40)) + " is not an integer");
  return std::stoll(t);
}

}  // namespace

WdsImportResult import_wds(const WdsImportOptions& o) {
  if (o.out.empty()) throw DataError("no output file given (--out)");
  const fs::path out_dir = fs::path(o.out).parent_path();
  std::error_code ec;
  if (!out_dir.empty() && !fs::is_directory(out_dir, ec))
    throw DataError("the output folder " + q(out_dir.string()) + " does not exist");
  if (o.prescaled && !(o.scale_factor > 0))
    throw DataError("--prescaled: samples decode as x / --scale-factor, which must then be > 0");

  // Pass 1: the members of every shard, grouped into samples as webdataset groups them
  // (consecutive members with the same key).
  const std::vector<std::string> paths = shard_paths(o);
  std::vector<std::unique_ptr<Shard>> shards;
  std::vector<Sample> samples;
  WdsImportResult result;
  for (size_t s = 0; s < paths.size(); ++s) {
    shards.push_back(std::make_unique<Shard>(paths[s]));
    const Shard& shard = *shards.back();
    const std::vector<Member> members = list_members(shard);
    std::optional<Sample> cur;
    auto close = [&]() {
      if (!cur) return;
      const std::string where = "shard " + q(shard.path()) + ", sample " + q(cur->key);
      if (cur->latent.size < 0) throw DataError(where + " has no .latent.npy member");
      if (cur->cls.size < 0) throw DataError(where + " has no .cls member (its class)");
      samples.push_back(*cur);
      cur.reset();
    };
    for (const Member& m : members) {
      std::string key, ext;
      if (!split_key(m.name, &key, &ext)) {
        ++result.ignored_members;
        continue;
      }
      if (cur && cur->key != key) close();
      if (!cur) cur = Sample{s, key, {}, {}};
      Extent* slot = ext == "latent.npy" ? &cur->latent : ext == "cls" ? &cur->cls : nullptr;
      if (!slot) {
        ++result.ignored_members;
        continue;
      }
      if (slot->size >= 0)
        throw DataError("shard " + q(shard.path()) + ", sample " + q(key) + " has two ." + ext + " members");
      *slot = {m.offset, m.size};
    }
    close();
  }
  const int64_t n = static_cast<int64_t>(samples.size());
  if (n == 0) throw DataError("the shards hold no sample with a .latent.npy and a .cls member");

  // The first latent decides the shape and dtype; every other must agree.
  auto where_of = [&](const Sample& x) { return "shard " + q(shards[x.shard]->path()) + ", sample " + q(x.key); };
  auto read_latent = [&](const Sample& x, std::string* bytes) {
    *bytes = shards[x.shard]->read(x.latent.offset, x.latent.size, "the latent of sample " + q(x.key));
    NpyHeader h = parse_npy_header(*bytes, where_of(x) + " (.latent.npy)");
    int64_t elems = 1;
    for (int64_t d : h.shape) elems *= d;
    if (h.data_offset + elems * h.itemsize != x.latent.size)
      throw DataError(where_of(x) + ": the .latent.npy member holds " + std::to_string(x.latent.size) +
                      " bytes, its header promises " + std::to_string(h.data_offset + elems * h.itemsize));
    return h;
  };
  std::string bytes;
  const NpyHeader first = read_latent(samples[0], &bytes);
  if (first.kind != 'f') throw DataError(where_of(samples[0]) + ": latents must be floats (float16/32/64)");
  if (first.shape.size() != 3 || first.shape[0] == 0 || first.shape[1] == 0 || first.shape[2] == 0)
    throw DataError(where_of(samples[0]) + ": a latent has shape " + shape_text(first.shape) +
                    "; expected (C, H, W)");
  const int64_t row = first.shape[0] * first.shape[1] * first.shape[2];
  const at::ScalarType dtype = first.itemsize == 2 ? at::kHalf : at::kFloat;
  result.samples = n;
  result.shards = static_cast<int64_t>(shards.size());
  result.shape = {n, first.shape[0], first.shape[1], first.shape[2]};
  result.dtype = dtype == at::kHalf ? "float16" : "float32";

  // Pass 2: the classes, then the latents in blocks.
  std::vector<int64_t> labels(static_cast<size_t>(n));
  int64_t max_label = -1;
  for (int64_t i = 0; i < n; ++i) {
    const Sample& x = samples[static_cast<size_t>(i)];
    const int64_t v = parse_label(shards[x.shard]->read(x.cls.offset, x.cls.size, "the class of sample " + q(x.key)),
                                  where_of(x) + " (.cls)");
    if (v < 0 || (o.num_classes > 0 && v >= o.num_classes))
      throw DataError(where_of(x) + ": class " + std::to_string(v) + " is outside [0, " +
                      (o.num_classes > 0 ? "num_classes=" + std::to_string(o.num_classes) : std::string("inf")) + ")");
    labels[static_cast<size_t>(i)] = v;
    max_label = std::max(max_label, v);
  }
  result.num_classes = o.num_classes > 0 ? o.num_classes : max_label + 1;
  result.num_classes_from_labels = o.num_classes <= 0;

  DatasetWriter writer(o.out, "latents", result.shape, dtype);
  const int64_t out_item = dtype == at::kHalf ? 2 : 4;
  const int64_t block = std::max<int64_t>(1, (int64_t(64) << 20) / (row * out_item));
  std::vector<char> buf;
  Progress progress("import-wds " + q(o.out), n);
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t rows = std::min(block, n - begin);
    buf.resize(static_cast<size_t>(rows * row * out_item));
    for (int64_t r = 0; r < rows; ++r) {
      const Sample& x = samples[static_cast<size_t>(begin + r)];
      const NpyHeader h = read_latent(x, &bytes);
      if (h.kind != first.kind || h.itemsize != first.itemsize || h.shape != first.shape)
        throw DataError(where_of(x) + ": a latent of shape " + shape_text(h.shape) + " and " + h.kind +
                        std::to_string(8 * h.itemsize) + " where the first sample has " + shape_text(first.shape) +
                        " and " + first.kind + std::to_string(8 * first.itemsize) + "; all must agree");
      char* raw = &bytes[static_cast<size_t>(h.data_offset)];
      if (h.byte_order == '>')
        for (int64_t k = 0; k < row; ++k) std::reverse(raw + k * h.itemsize, raw + (k + 1) * h.itemsize);
      const at::ScalarType in = h.itemsize == 2 ? at::kHalf : h.itemsize == 4 ? at::kFloat : at::kDouble;
      auto v = at::from_blob(raw, {row}, at::TensorOptions().dtype(in));  // [C*H*W], the stored values
      auto dst = at::from_blob(buf.data() + r * row * out_item, {row}, at::TensorOptions().dtype(dtype));
      dst.copy_(v);  // float16 as it is; float32 as it is; float64 rounded to float32
    }
    writer.write_rows(begin, at::from_blob(buf.data(), {rows, first.shape[0], first.shape[1], first.shape[2]}, dtype));
    progress.update(begin + rows);
  }
  progress.finish();

  writer.write_labels(labels);
  std::string source = o.source;
  if (source.empty()) {
    source = "imported from " + std::to_string(shards.size()) + " WebDataset shard(s) (" + paths.front() +
             (shards.size() > 1 ? " ... " + paths.back() : std::string()) + ") by tread_data import-wds" +
             (o.prescaled ? ", values already scaled (prescaled = 1)" : "");
  }
  writer.set_dataset_attributes(result.num_classes, o.scale_factor, o.shift_factor, o.latent_space, source,
                                TextType::kFixedUtf8);
  if (o.prescaled) writer.set_int_attr("prescaled", 1);
  writer.commit();
  return result;
}

}  // namespace nt
