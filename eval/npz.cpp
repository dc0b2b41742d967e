// .npz reading and writing of FID statistics through libzip (see npz.h).
#include "eval/npz.h"

#include <torch/torch.h>
#include <zip.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "data/latent_dataset.h"  // DataError (a std::runtime_error)
#include "data/npy_import.h"      // parse_npy_header

namespace nt {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

struct ZipDiscard {
  void operator()(zip_t* z) const { zip_discard(z); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipDiscard>;

std::string zip_open_error(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string why = zip_error_strerror(&error);
  zip_error_fini(&error);
  return why;
}

bool host_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The whole member "<key>.npy" of an open archive as bytes.
std::string read_member(zip_t* z, const std::string& path, const std::string& key) {
  const std::string member = key + ".npy";
  const zip_int64_t index = zip_name_locate(z, member.c_str(), 0);
  if (index < 0)
    throw std::runtime_error("FID statistics file " + q(path) + " has no array " + q(key) +
                             " (member " + q(member) + "); it must hold 'mu' and 'sigma'");
  const std::string name = q(path) + " (array " + q(key) + ")";
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(z, static_cast<zip_uint64_t>(index), 0, &st) != 0 ||
      !(st.valid & ZIP_STAT_SIZE))
    throw std::runtime_error("cannot read the size of " + name + ": " + zip_strerror(z));
  zip_file_t* f = zip_fopen_index(z, static_cast<zip_uint64_t>(index), 0);
  if (!f) throw std::runtime_error("cannot open " + name + ": " + zip_strerror(z));
  std::string bytes(static_cast<size_t>(st.size), '\0');
  size_t done = 0;
  std::string failure;
  while (done < bytes.size()) {
    const zip_int64_t got = zip_fread(f, &bytes[done], bytes.size() - done);
    if (got < 0) {
      failure = zip_file_strerror(f);
      break;
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  zip_fclose(f);
  if (!failure.empty())
    throw std::runtime_error("reading " + name + " failed (damaged or truncated archive): " +
                             failure);
  if (done < bytes.size())
    throw std::runtime_error(name + " is truncated: " + std::to_string(done) + " of " +
                             std::to_string(bytes.size()) + " bytes could be read");
  return bytes;
}

// Parses one .npy member into a float64 tensor of the expected rank.
at::Tensor parse_array(const std::string& bytes, const std::string& path, const std::string& key,
                       int64_t rank) {
  const std::string name = q(path) + " (array " + q(key) + ")";
  NpyHeader h;
  try {
    h = parse_npy_header(bytes, name);
  } catch (const DataError& e) {
    throw std::runtime_error(e.what());
  }
  if (h.kind != 'f' || (h.itemsize != 4 && h.itemsize != 8))
    throw std::runtime_error(name + " must be float32 or float64, its dtype is " +
                             std::string(1, h.kind) + std::to_string(h.itemsize));
  if (static_cast<int64_t>(h.shape.size()) != rank)
    throw std::runtime_error(name + " must have " + std::to_string(rank) + " dimension(s), it has " +
                             std::to_string(h.shape.size()));
  uint64_t elems = 1;
  for (int64_t d : h.shape) elems *= static_cast<uint64_t>(d);
  const uint64_t want = static_cast<uint64_t>(h.data_offset) + elems * h.itemsize;
  if (bytes.size() < want)
    throw std::runtime_error(name + " is truncated: its header promises " + std::to_string(want) +
                             " bytes but it has " + std::to_string(bytes.size()));
  if (bytes.size() > want)
    throw std::runtime_error(name + " has " + std::to_string(bytes.size() - want) +
                             " bytes after its data; is it damaged?");
  std::string data = bytes.substr(static_cast<size_t>(h.data_offset));
  const bool little = h.byte_order != '>';
  if (little != host_little_endian())
    for (size_t k = 0; k + h.itemsize <= data.size(); k += h.itemsize)
      std::reverse(&data[k], &data[k] + h.itemsize);
  const auto dtype = h.itemsize == 8 ? torch::kFloat64 : torch::kFloat32;
  at::Tensor t = torch::empty(h.shape, dtype);
  if (!data.empty()) std::memcpy(t.data_ptr(), data.data(), data.size());
  return t.to(torch::kFloat64);
}

// A .npy v1 image of a C-order float64 array (native little-endian).
std::string npy_bytes(const at::Tensor& t) {
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? ", " : "") + std::to_string(t.size(i));
  shape += t.dim() == 1 ? ",)" : ")";
  std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': " + shape + ", }";
  // numpy pads magic + length + dict + '\n' to a multiple of 64 bytes.
  const size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  out += dict;
  at::Tensor c = t.contiguous();
  out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * 8);
  return out;
}

}  // namespace

FeatureStats read_stats_npz(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw std::runtime_error("FID statistics file " + q(path) + " not found");
  int err = 0;
  ZipPtr z(zip_open(path.c_str(), ZIP_RDONLY, &err));
  if (!z)
    throw std::runtime_error("FID statistics file " + q(path) +
                             " is not a readable .npz (zip) archive: " + zip_open_error(err));
  FeatureStats s;
  s.mu = parse_array(read_member(z.get(), path, "mu"), path, "mu", 1);              // [D]
  s.sigma = parse_array(read_member(z.get(), path, "sigma"), path, "sigma", 2);     // [D, D]
  const int64_t d = s.mu.size(0);
  if (s.sigma.size(0) != d || s.sigma.size(1) != d)
    throw std::runtime_error("FID statistics file " + q(path) + ": sigma is [" +
                             std::to_string(s.sigma.size(0)) + ", " +
                             std::to_string(s.sigma.size(1)) + "] but mu has D = " +
                             std::to_string(d) + " (sigma must be [D, D])");
  s.n = 0;
  return s;
}

void write_stats_npz(const std::string& path, const FeatureStats& stats) {
  if (!host_little_endian())
    throw std::runtime_error("write_stats_npz: big-endian hosts are not supported");
  if (!stats.mu.defined() || !stats.sigma.defined() || stats.mu.dim() != 1 ||
      stats.sigma.dim() != 2 || stats.sigma.size(0) != stats.mu.size(0) ||
      stats.sigma.size(1) != stats.mu.size(0))
    throw std::invalid_argument("write_stats_npz(" + q(path) +
                                "): expected mu [D] and sigma [D, D]");
  const std::string mu = npy_bytes(stats.mu.to(torch::kCPU).to(torch::kFloat64));
  const std::string sigma = npy_bytes(stats.sigma.to(torch::kCPU).to(torch::kFloat64));
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  std::filesystem::remove(tmp, ec);
  int err = 0;
  ZipPtr z(zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err));
  if (!z) throw std::runtime_error("cannot create " + q(tmp) + ": " + zip_open_error(err));
  for (const auto& [key, data] : {std::pair<std::string, const std::string*>{"mu", &mu},
                                  std::pair<std::string, const std::string*>{"sigma", &sigma}}) {
    zip_source_t* src = zip_source_buffer(z.get(), data->data(), data->size(), 0);
    if (!src) throw std::runtime_error("writing " + q(tmp) + ": " + zip_strerror(z.get()));
    const zip_int64_t index = zip_file_add(z.get(), (key + ".npy").c_str(), src, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(src);
      throw std::runtime_error("writing " + q(tmp) + ": " + zip_strerror(z.get()));
    }
    if (zip_set_file_compression(z.get(), static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) != 0)
      throw std::runtime_error("writing " + q(tmp) + ": " + zip_strerror(z.get()));
  }
  zip_t* raw = z.release();
  if (zip_close(raw) != 0) {
    const std::string why = zip_strerror(raw);
    zip_discard(raw);
    throw std::runtime_error("writing " + q(tmp) + " failed: " + why);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    throw std::runtime_error("cannot rename " + q(tmp) + " to " + q(path) + ": " + ec.message());
}

}  // namespace nt
