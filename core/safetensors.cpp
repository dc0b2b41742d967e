// safetensors reading and writing: the 8-byte little-endian header length, the JSON header
// (compact, "__metadata__" first, then the tensors in data order, padded with spaces to a
// multiple of 8 bytes, as the reference Rust serialiser writes it) and the contiguous byte
// buffer. The reader validates everything the reference validates before it allocates.
#include "core/safetensors.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <tuple>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; this reader copies bytes as they are");

namespace nt {
namespace {

// The reference rejects headers above 100 MB; so do we (a corrupt length is the usual cause).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  size_t itemsize;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4},  {"F16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2}, {"I64", at::kLong, 8}, {"I32", at::kInt, 4},
    {"I16", at::kShort, 2},  {"I8", at::kChar, 1},    {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

std::string supported_dtypes() {
  std::string s;
  for (const auto& d : kDtypes) s += std::string(s.empty() ? "" : ", ") + d.name;
  return s;
}

// Closes the FILE* on every path out of a function.
struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

std::string errno_text() { return std::strerror(errno); }

// ---- writing ---------------------------------------------------------------------------------

struct PlannedTensor {
  const NamedTensor* source;
  const DtypeInfo* dtype;
  uint64_t nbytes;
};

[[noreturn]] void write_fail(const std::string& path, const std::string& what) {
  throw SafetensorsError("cannot write safetensors file '" + path + "': " + what);
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Plan the header from sizes alone, so that device tensors are copied one at a time.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<PlannedTensor> plan;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& nt = tensors[i];
    const std::string where = "tensor '" + nt.name + "' (index " + std::to_string(i) + ")";
    if (nt.name == "__metadata__")
      write_fail(path, where + ": the name __metadata__ is reserved for the metadata map");
    if (!seen.insert(nt.name).second)
      write_fail(path, where + ": duplicate tensor name; every name must be unique");
    if (!nt.tensor.defined()) write_fail(path, where + ": the tensor is undefined");
    const DtypeInfo* dtype = dtype_by_type(nt.tensor.scalar_type());
    if (!dtype)
      write_fail(path, where + ": dtype " + std::string(c10::toString(nt.tensor.scalar_type())) +
                           " cannot be stored; supported: " + supported_dtypes());
    const uint64_t nbytes = static_cast<uint64_t>(nt.tensor.numel()) * dtype->itemsize;
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype->name;
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int64_t s : nt.tensor.sizes()) shape.push_back(static_cast<uint64_t>(s));
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, offset + nbytes});
    header[nt.name] = std::move(entry);
    plan.push_back({&nt, dtype, nbytes});
    offset += nbytes;
  }

  std::string text;
  try {
    text = header.dump();  // compact, like serde_json::to_string
  } catch (const nlohmann::json::exception& e) {
    write_fail(path, std::string("a tensor name or metadata string is not valid UTF-8 (") +
                         e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the byte buffer starts 8-byte aligned

  FilePtr file(std::fopen(path.c_str(), "wb"));
  if (!file) write_fail(path, "cannot open for writing: " + errno_text());
  // Any failure below removes the partial file, so no truncated checkpoint is left behind.
  auto fail = [&](const std::string& what) {
    const std::string reason = what + ": " + errno_text();
    file.reset();
    std::remove(path.c_str());
    write_fail(path, reason);
  };
  unsigned char len_bytes[8];
  const uint64_t n = text.size();
  for (int b = 0; b < 8; ++b) len_bytes[b] = static_cast<unsigned char>(n >> (8 * b));
  if (std::fwrite(len_bytes, 1, 8, file.get()) != 8) fail("writing the header length failed");
  if (std::fwrite(text.data(), 1, text.size(), file.get()) != text.size())
    fail("writing the JSON header failed");
  for (const PlannedTensor& p : plan) {
    if (p.nbytes == 0) continue;
    // [same shape] contiguous CPU copy (no copy when it already is one)
    at::Tensor cpu = p.source->tensor.detach().to(at::kCPU).contiguous();
    if (std::fwrite(cpu.data_ptr(), 1, p.nbytes, file.get()) != p.nbytes)
      fail("writing the data of tensor '" + p.source->name + "' failed");
  }
  if (std::fflush(file.get()) != 0) fail("flushing failed");
  FILE* raw = file.release();
  if (std::fclose(raw) != 0) {
    const std::string reason = "closing failed: " + errno_text();
    std::remove(path.c_str());
    write_fail(path, reason);
  }
}

// ---- reading ---------------------------------------------------------------------------------

namespace {

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

[[noreturn]] void read_fail(const std::string& path, const std::string& what) {
  throw SafetensorsError("safetensors file '" + path + "': " + what);
}

Entry parse_entry(const std::string& path, const std::string& name,
                  const nlohmann::json& value) {
  const std::string where = "tensor '" + name + "': ";
  if (!value.is_object())
    read_fail(path, where + "header entry must be an object with dtype, shape, data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!value.contains(key)) read_fail(path, where + "header entry lacks \"" + key + "\"");
  Entry e;
  e.name = name;
  const auto& dtype = value["dtype"];
  if (!dtype.is_string()) read_fail(path, where + "\"dtype\" must be a string");
  e.dtype = dtype_by_name(dtype.get<std::string>());
  if (!e.dtype)
    read_fail(path, where + "unknown or unsupported dtype \"" + dtype.get<std::string>() +
                        "\"; supported: " + supported_dtypes());
  const auto& shape = value["shape"];
  if (!shape.is_array()) read_fail(path, where + "\"shape\" must be an array");
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!shape[d].is_number_unsigned())
      read_fail(path, where + "shape[" + std::to_string(d) + "] = " + shape[d].dump() +
                          " is not a non-negative integer");
    const uint64_t s = shape[d].get<uint64_t>();
    if (s > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
    if (s != 0 && numel > std::numeric_limits<uint64_t>::max() / s) overflow = true;
    numel *= s;
    e.shape.push_back(static_cast<int64_t>(s));
  }
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / e.dtype->itemsize)
    read_fail(path, where + "shape " + shape.dump() + " is too large");
  const auto& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    read_fail(path, where + "\"data_offsets\" must be [begin, end] with non-negative integers, "
                            "got " + offsets.dump());
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.end < e.begin)
    read_fail(path, where + "data_offsets " + offsets.dump() + " end before they begin");
  const uint64_t expected = numel * e.dtype->itemsize;
  if (e.end - e.begin != expected)
    read_fail(path, where + "data_offsets " + offsets.dump() + " span " +
                        std::to_string(e.end - e.begin) + " bytes but dtype " + e.dtype->name +
                        " and shape " + shape.dump() + " need " + std::to_string(expected));
  return e;
}

}  // namespace

namespace {

// The validated header of an open file: its entries in offset order, its metadata, and where the
// data buffer starts. The stream is left at the start of the data buffer.
struct Header {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
};

Header read_header(const std::string& path, std::FILE* fp) {
  struct stat st {};
  if (fstat(fileno(fp), &st) != 0) read_fail(path, "cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) read_fail(path, "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    read_fail(path, "file is " + std::to_string(file_size) +
                        " bytes, shorter than the 8-byte header length; it is truncated");

  unsigned char len_bytes[8];
  if (std::fread(len_bytes, 1, 8, fp) != 8)
    read_fail(path, "reading the header length failed: " + errno_text());
  uint64_t n = 0;
  for (int b = 0; b < 8; ++b) n |= static_cast<uint64_t>(len_bytes[b]) << (8 * b);
  if (n > kMaxHeaderBytes)
    read_fail(path, "header length " + std::to_string(n) + " exceeds the 100 MB limit; " +
                        "the file is corrupt or not a safetensors file");
  if (n > file_size - 8)
    read_fail(path, "header length " + std::to_string(n) + " exceeds the " +
                        std::to_string(file_size - 8) +
                        " bytes after the length field; the file is truncated or corrupt");
  std::string text(n, '\0');
  if (n > 0 && std::fread(text.data(), 1, n, fp) != n)
    read_fail(path, "reading the " + std::to_string(n) + "-byte header failed: " + errno_text());

  // Parse, rejecting duplicate top-level keys (a JSON object would silently keep one).
  nlohmann::json header;
  std::string duplicate;
  {
    std::set<std::string> keys;
    auto on_event = [&](int depth, nlohmann::json::parse_event_t event,
                        nlohmann::json& parsed) {
      if (event == nlohmann::json::parse_event_t::key && depth == 1 &&
          !keys.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
      return true;
    };
    try {
      header = nlohmann::json::parse(text, on_event);
    } catch (const nlohmann::json::exception& e) {
      read_fail(path, std::string("header is not valid JSON: ") + e.what());
    }
  }
  if (!header.is_object()) read_fail(path, "header must be a JSON object");
  if (!duplicate.empty()) read_fail(path, "header names \"" + duplicate + "\" twice");

  Header out;
  std::vector<Entry>& entries = out.entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) read_fail(path, "\"__metadata__\" must be an object of strings");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          read_fail(path, "\"__metadata__\" value of \"" + mk + "\" must be a string, got " +
                              mv.dump());
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value));
  }

  // The tensors must tile the byte buffer exactly, in offset order (as the reference demands).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const uint64_t buffer_size = file_size - 8 - n;
  uint64_t cursor = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    const std::string where = "tensor '" + e.name + "': data_offsets [" +
                              std::to_string(e.begin) + ", " + std::to_string(e.end) + "] ";
    if (e.end > buffer_size)
      read_fail(path, where + "reach past the " + std::to_string(buffer_size) +
                          "-byte data buffer; the file is truncated or the header is wrong");
    if (e.begin < cursor)
      read_fail(path, where + "overlap tensor '" + previous->name + "'");
    if (e.begin > cursor)
      read_fail(path, where + "leave a gap of " + std::to_string(e.begin - cursor) +
                          " bytes before them; tensors must be contiguous");
    cursor = e.end;
    previous = &e;
  }
  if (cursor != buffer_size)
    read_fail(path, "the data buffer holds " + std::to_string(buffer_size) +
                        " bytes but the tensors cover " + std::to_string(cursor) +
                        "; the file has trailing bytes or a wrong header");
  out.data_start = 8 + n;
  return out;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) read_fail(path, "cannot open: " + errno_text());
  const Header header = read_header(path, file.get());
  SafetensorsFile out;
  out.metadata = header.metadata;
  // Read each tensor straight into its own memory: the buffer is contiguous and in order.
  for (const Entry& e : header.entries) {
    at::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes > 0 && std::fread(t.data_ptr(), 1, nbytes, file.get()) != nbytes)
      read_fail(path, "tensor '" + e.name + "': reading " + std::to_string(nbytes) +
                          " bytes failed" +
                          (std::ferror(file.get()) ? ": " + errno_text() : " (end of file)"));
    out.tensors.emplace(e.name, std::move(t));
    out.order.push_back(e.name);
  }
  return out;
}

SafetensorsIndex index_safetensors(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (!file) read_fail(path, "cannot open: " + errno_text());
  const Header header = read_header(path, file.get());
  SafetensorsIndex out;
  out.path = path;
  out.metadata = header.metadata;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) read_fail(path, "cannot open: " + errno_text());
  out.fd = std::shared_ptr<const int>(new int(fd), [](const int* f) {
    ::close(*f);
    delete f;
  });
  for (const Entry& e : header.entries) {
    out.tensors[e.name] = {e.dtype->type, e.shape, header.data_start + e.begin, e.end - e.begin};
    out.order.push_back(e.name);
  }
  return out;
}

at::Tensor read_tensor_elements(const SafetensorsIndex& index, const std::string& name, int64_t offset,
                                int64_t count) {
  auto it = index.tensors.find(name);
  if (it == index.tensors.end()) read_fail(index.path, "has no tensor '" + name + "'");
  const SafetensorsIndex::Info& info = it->second;
  const int64_t itemsize = static_cast<int64_t>(c10::elementSize(info.dtype));
  const int64_t numel = static_cast<int64_t>(info.nbytes) / itemsize;
  if (offset < 0 || count < 0 || offset + count > numel)
    read_fail(index.path, "tensor '" + name + "': elements [" + std::to_string(offset) + ", " +
                              std::to_string(offset + count) + ") are outside its " + std::to_string(numel));
  at::Tensor t = torch::empty({count}, torch::TensorOptions().dtype(info.dtype));
  const int fd = *index.fd;
  char* dst = static_cast<char*>(t.data_ptr());
  uint64_t done = 0, want = static_cast<uint64_t>(count * itemsize);
  const uint64_t at = info.file_offset + static_cast<uint64_t>(offset * itemsize);
  while (done < want) {
    const ssize_t got = ::pread(fd, dst + done, want - done, static_cast<off_t>(at + done));
    if (got <= 0) {
      const std::string why = got < 0 ? errno_text() : std::string("end of file");
      read_fail(index.path, "tensor '" + name + "': reading " + std::to_string(want) + " bytes failed: " + why);
    }
    done += static_cast<uint64_t>(got);
  }
  return t;
}

at::Tensor read_tensor(const SafetensorsIndex& index, const std::string& name) {
  auto it = index.tensors.find(name);
  if (it == index.tensors.end()) read_fail(index.path, "has no tensor '" + name + "'");
  const int64_t numel = static_cast<int64_t>(it->second.nbytes / c10::elementSize(it->second.dtype));
  return read_tensor_elements(index, name, 0, numel).view(it->second.shape);
}

}  // namespace nt
