// RowReader (row_reader.h): the pread and H5Dread paths of one dataset.
// Runs of consecutive rows are coalesced: one pread, or one H5Dread of a plain hyperslab, per
// run. The chunk cache of a chunked dataset holds max(64 MiB, 4 chunks), at most the whole
// dataset: the runs of a sorted read that fall into one chunk follow each other, so a chunk is
// decompressed once per read, and the rest serves later reads (scans, the next batches).
#include "data/row_reader.h"

#include <c10/util/Half.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace nt {

namespace {

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
constexpr bool kLittleEndianHost = false;
#else
constexpr bool kLittleEndianHost = true;
#endif

std::string q(const std::string& path) { return "'" + path + "'"; }

// True when `type` is IEEE binary16, little-endian (as numpy's '<f2' and h5py write it).
bool is_ieee_half_le(hid_t type) {
  if (H5Tget_size(type) != 2 || H5Tget_order(type) != H5T_ORDER_LE) return false;
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 &&
         H5Tget_ebias(type) == 15 && H5Tget_precision(type) == 16 && H5Tget_offset(type) == 0 &&
         H5Tget_norm(type) == H5T_NORM_IMPLIED;
}

bool is_plain_int_le(hid_t type) {
  const size_t size = H5Tget_size(type);
  if (size != 1 && size != 2 && size != 4 && size != 8) return false;
  const H5T_order_t order = H5Tget_order(type);
  if (order != H5T_ORDER_LE && !(size == 1 && order == H5T_ORDER_NONE)) return false;
  return H5Tget_precision(type) == 8 * size && H5Tget_offset(type) == 0;
}

uint64_t next_prime(uint64_t n) {
  auto prime = [](uint64_t v) {
    if (v < 2) return false;
    for (uint64_t d = 2; d * d <= v; ++d)
      if (v % d == 0) return false;
    return true;
  };
  while (!prime(n)) ++n;
  return n;
}

// Per-thread staging buffer for raw bytes before conversion.
std::vector<char>& staging(size_t bytes) {
  thread_local std::vector<char> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  return buf;
}

}  // namespace

void RowReader::open(hid_t file, const std::string& name, int fd, const std::string& path,
                     int64_t first_global, bool integer) {
  path_ = path;
  name_ = name;
  fd_ = fd;
  first_global_ = first_global;
  const std::string what = "opening dataset " + name + " of " + q(path);
  H5Id plain(NT_H5_CHECK(H5Dopen2(file, name.c_str(), H5P_DEFAULT), what));
  H5Id space(NT_H5_CHECK(H5Dget_space(plain.get()), what));
  const int rank = NT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(rank);
  if (rank > 0) NT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  if (rank < 1) throw DataError(q(path) + ": " + name + " is a scalar; expected an array");
  rows_ = static_cast<int64_t>(dims[0]);
  row_elems_ = 1;
  for (int d = 1; d < rank; ++d) row_elems_ *= static_cast<int64_t>(dims[d]);

  type_ = H5Id(NT_H5_CHECK(H5Dget_type(plain.get()), what));
  elem_bytes_ = H5Tget_size(type_.get());
  if (!kLittleEndianHost) enc_ = Enc::kConvert;
  else if (integer) enc_ = is_plain_int_le(type_.get()) ? Enc::kInt : Enc::kConvert;
  else if (elem_bytes_ == 4 && H5Tequal(type_.get(), H5T_IEEE_F32LE) > 0) enc_ = Enc::kF32;
  else if (is_ieee_half_le(type_.get())) enc_ = Enc::kF16;
  else enc_ = Enc::kConvert;
  if (enc_ == Enc::kInt)
    is_signed_ = NT_H5_CHECK(H5Tget_sign(type_.get()), what) != H5T_SGN_NONE;

  H5Id dcpl(NT_H5_CHECK(H5Dget_create_plist(plain.get()), what));
  const H5D_layout_t layout = NT_H5_CHECK(H5Pget_layout(dcpl.get()), what);
  const int filters = NT_H5_CHECK(H5Pget_nfilters(dcpl.get()), what);
  const int external = NT_H5_CHECK(H5Pget_external_count(dcpl.get()), what);
  const haddr_t offset = H5Dget_offset(plain.get());
  const uint64_t row_bytes = static_cast<uint64_t>(row_elems_) * elem_bytes_;
  direct_ = layout == H5D_CONTIGUOUS && filters == 0 && external == 0 && offset != HADDR_UNDEF &&
            enc_ != Enc::kConvert && fd >= 0;
  if (direct_) {
    offset_ = offset;
    const uint64_t end = offset_ + row_bytes * static_cast<uint64_t>(rows_);
    struct stat st;
    if (fstat(fd, &st) != 0)
      throw DataError(q(path) + ": cannot stat the file: " + std::strerror(errno));
    if (static_cast<uint64_t>(st.st_size) < end)
      throw DataError(q(path) + ": " + name + " occupies bytes [" + std::to_string(offset_) +
                      ", " + std::to_string(end) + ") but the file has only " +
                      std::to_string(st.st_size) +
                      " bytes: it is truncated (copy or write it again)");
  }

  if (layout == H5D_CHUNKED) {
    std::vector<hsize_t> chunk(rank);
    NT_H5_CHECK(H5Pget_chunk(dcpl.get(), rank, chunk.data()), what);
    uint64_t chunk_bytes = elem_bytes_;
    for (hsize_t c : chunk) chunk_bytes *= c;
    chunk_bytes = std::max<uint64_t>(chunk_bytes, 1);
    const uint64_t total = std::max<uint64_t>(row_bytes * static_cast<uint64_t>(rows_), 1);
    uint64_t cache = std::max<uint64_t>(uint64_t(64) << 20, 4 * chunk_bytes);
    cache = std::min(cache, total + chunk_bytes);
    const uint64_t slots = next_prime(std::min<uint64_t>(100 * (cache / chunk_bytes + 1), 1000003));
    H5Id dapl(NT_H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS), what));
    NT_H5_CHECK(H5Pset_chunk_cache(dapl.get(), slots, cache, 0.75), what);
    plain.reset();
    dset_ = H5Id(NT_H5_CHECK(H5Dopen2(file, name.c_str(), dapl.get()), what));
  } else {
    dset_ = std::move(plain);
  }
}

std::string RowReader::where_rows(int64_t first, int64_t last) const {
  std::string s = "reading " + name_ + " of " + q(path_) + ", ";
  if (first == last)
    return s + "sample " + std::to_string(first) + " (global index " +
           std::to_string(first + first_global_) + ")";
  return s + "samples " + std::to_string(first) + ".." + std::to_string(last) +
         " (global indices " + std::to_string(first + first_global_) + ".." +
         std::to_string(last + first_global_) + ")";
}

void RowReader::pread_rows(const std::vector<int64_t>& rows, char* out, size_t row_bytes) const {
  for (size_t i = 0; i < rows.size();) {
    size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
    size_t want = (j - i) * row_bytes;
    off_t at = static_cast<off_t>(offset_ + static_cast<uint64_t>(rows[i]) * row_bytes);
    char* dst = out + i * row_bytes;
    while (want > 0) {
      const ssize_t got = ::pread(fd_, dst, want, at);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0)
        throw DataError(where_rows(rows[i], rows[j - 1]) + ": pread at byte " +
                        std::to_string(at) + " failed: " + std::strerror(errno));
      if (got == 0)
        throw DataError(where_rows(rows[i], rows[j - 1]) + ": the file ends at byte " +
                        std::to_string(at) +
                        ", before the data: it was truncated or replaced after opening");
      dst += got;
      at += got;
      want -= static_cast<size_t>(got);
    }
    i = j;
  }
}

void RowReader::h5_rows(const std::vector<int64_t>& rows, void* out, hid_t mem_type) const {
  auto lock = h5_lock();
  h5_silence();
  const std::string what = where_rows(rows.front(), rows.back());
  H5Id space(NT_H5_CHECK(H5Dget_space(dset_.get()), what));
  const int rank = NT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(rank), start(rank, 0);
  NT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  std::vector<hsize_t> count = dims;
  const size_t row_bytes = H5Tget_size(mem_type) * static_cast<size_t>(row_elems_);
  // One H5Dread per run with a plain hyperslab: HDF5 maps a union of many hyperslabs onto
  // chunks element by element (H5S_select_iterate), several times slower than this.
  for (size_t i = 0; i < rows.size();) {
    size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
    start[0] = static_cast<hsize_t>(rows[i]);
    count[0] = static_cast<hsize_t>(j - i);
    NT_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                    count.data(), nullptr),
                what);
    H5Id mem(NT_H5_CHECK(H5Screate_simple(rank, count.data(), nullptr), what));
    if (H5Dread(dset_.get(), mem_type, mem.get(), space.get(), H5P_DEFAULT,
                static_cast<char*>(out) + i * row_bytes) < 0)
      throw DataError(where_rows(rows[i], rows[j - 1]) +
                      ": HDF5 call H5Dread failed (the file is damaged or truncated; run "
                      "`tread_data validate` on it)");
    i = j;
  }
}

void RowReader::read_raw(const std::vector<int64_t>& rows, void* out, size_t elem_bytes,
                         hid_t mem_type) const {
  if (direct_) pread_rows(rows, static_cast<char*>(out), elem_bytes * row_elems_);
  else h5_rows(rows, out, mem_type);
}

void RowReader::read_float(const std::vector<int64_t>& rows, float* out) const {
  if (rows.empty()) return;
  const size_t n = rows.size() * static_cast<size_t>(row_elems_);
  switch (enc_) {
    case Enc::kF32: read_raw(rows, out, 4, type_.get()); return;
    case Enc::kF16: {
      std::vector<char>& buf = staging(n * 2);
      read_raw(rows, buf.data(), 2, type_.get());
      const uint16_t* h = reinterpret_cast<const uint16_t*>(buf.data());
      for (size_t k = 0; k < n; ++k)
        out[k] = static_cast<float>(c10::Half(h[k], c10::Half::from_bits()));
      return;
    }
    default: h5_rows(rows, out, H5T_NATIVE_FLOAT); return;
  }
}

void RowReader::read_int(const std::vector<int64_t>& rows, int64_t* out) const {
  if (rows.empty()) return;
  const size_t n = rows.size() * static_cast<size_t>(row_elems_);
  if (enc_ != Enc::kInt) {
    h5_rows(rows, out, H5T_NATIVE_INT64);
    return;
  }
  if (elem_bytes_ == 8 && is_signed_) {
    read_raw(rows, out, 8, type_.get());
    return;
  }
  std::vector<char>& buf = staging(n * elem_bytes_);
  read_raw(rows, buf.data(), elem_bytes_, type_.get());
  const char* p = buf.data();
  for (size_t k = 0; k < n; ++k, p += elem_bytes_) {
    switch (elem_bytes_ * 2 + (is_signed_ ? 1 : 0)) {
      case 3: { int8_t v; std::memcpy(&v, p, 1); out[k] = v; break; }
      case 2: { uint8_t v; std::memcpy(&v, p, 1); out[k] = v; break; }
      case 5: { int16_t v; std::memcpy(&v, p, 2); out[k] = v; break; }
      case 4: { uint16_t v; std::memcpy(&v, p, 2); out[k] = v; break; }
      case 9: { int32_t v; std::memcpy(&v, p, 4); out[k] = v; break; }
      case 8: { uint32_t v; std::memcpy(&v, p, 4); out[k] = v; break; }
      default: {  // uint64: values above INT64_MAX saturate, as HDF5's conversion does
        uint64_t v;
        std::memcpy(&v, p, 8);
        out[k] = v > uint64_t(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
        break;
      }
    }
  }
}

}  // namespace nt
