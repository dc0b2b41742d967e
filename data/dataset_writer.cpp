// DatasetWriter (dataset_writer.h): the temporary file, its row dataset written by hyperslab,
// one-shot datasets and root attributes, the rename on commit.
#include "data/dataset_writer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>

#include "data/hdf5_check.h"

namespace nt {

namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string t = "[";
  for (size_t i = 0; i < dims.size(); ++i) t += (i ? "," : "") + std::to_string(dims[i]);
  return t + "]";
}

// IEEE binary16, little-endian: 1 sign, 5 exponent (bias 15), 10 mantissa bits, as h5py
// stores numpy's float16.
H5Id half_type(const std::string& what) {
  H5Id t(NT_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE), what));
  NT_H5_CHECK(H5Tset_fields(t.get(), 15, 10, 5, 0, 10), what);
  NT_H5_CHECK(H5Tset_precision(t.get(), 16), what);
  NT_H5_CHECK(H5Tset_size(t.get(), 2), what);
  NT_H5_CHECK(H5Tset_ebias(t.get(), 15), what);
  return t;
}

// The file type of a dtype, and the memory type its CPU values are written from.
struct Types {
  H5Id file, mem;
};

Types types_of(at::ScalarType dtype, const std::string& what) {
  Types t;
  switch (dtype) {
    case at::kFloat:
      t.file = H5Id(NT_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE), what));
      t.mem = H5Id(NT_H5_CHECK(H5Tcopy(H5T_NATIVE_FLOAT), what));
      break;
    case at::kHalf:
      t.file = half_type(what);
      t.mem = half_type(what);  // the values are binary16 already: no conversion
      break;
    case at::kLong:
      t.file = H5Id(NT_H5_CHECK(H5Tcopy(H5T_STD_I64LE), what));
      t.mem = H5Id(NT_H5_CHECK(H5Tcopy(H5T_NATIVE_INT64), what));
      break;
    default:
      throw DataError(what + ": dtype " + std::string(c10::toString(dtype)) +
                      " cannot be stored (float32, float16 or int64 can)");
  }
  return t;
}

// A scalar attribute on `loc` of `file_type`, written from `value` in `mem_type`.
void write_scalar_attr(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
                       const void* value, const std::string& what) {
  H5Id space(NT_H5_CHECK(H5Screate(H5S_SCALAR), what));
  H5Id attr(NT_H5_CHECK(
      H5Acreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), what));
  NT_H5_CHECK(H5Awrite(attr.get(), mem_type, value), what);
  NT_H5_CHECK(H5Aclose(attr.release()), what);
}

}  // namespace

struct DatasetWriter::Handles {
  H5Id file, data;
};

DatasetWriter::DatasetWriter(const std::string& path, const std::string& data_name,
                             const std::vector<int64_t>& dims, at::ScalarType dtype)
    : path_(path), tmp_(path + ".tmp"), data_name_(data_name), dims_(dims), dtype_(dtype) {
  const std::string what = "writing /" + data_name + " of " + q(tmp_);
  if (path.empty()) throw DataError("DatasetWriter: no output file given");
  if (data_name.empty()) throw DataError(what + ": the row dataset needs a name");
  if (dims.empty()) throw DataError(what + ": the row dataset needs a rank of at least 1");
  for (int64_t d : dims)
    if (d < 0) throw DataError(what + ": negative size in shape " + dims_text(dims));
  if (dtype != at::kFloat && dtype != at::kHalf)
    throw DataError(what + ": rows must be float32 or float16, not " +
                    std::string(c10::toString(dtype)));
  auto lock = h5_lock();
  h5_silence();
  h_ = std::make_unique<Handles>();
  try {
    h_->file = H5Id(NT_H5_CHECK(H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                                "creating " + q(tmp_)));
    const std::vector<hsize_t> hdims(dims.begin(), dims.end());
    H5Id space(NT_H5_CHECK(H5Screate_simple(static_cast<int>(hdims.size()), hdims.data(), nullptr),
                           what));
    Types types = types_of(dtype, what);
    H5Id dcpl(NT_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), what));
    NT_H5_CHECK(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), what);
    NT_H5_CHECK(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), what);
    h_->data = H5Id(NT_H5_CHECK(H5Dcreate2(h_->file.get(), data_name.c_str(), types.file.get(),
                                           space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                                what));
  } catch (...) {
    discard();
    throw;
  }
}

DatasetWriter::~DatasetWriter() {
  if (!committed_) discard();
}

void DatasetWriter::discard() noexcept {
  {
    auto lock = h5_lock();
    h_.reset();  // closes the dataset, then the file
  }
  std::error_code ec;
  std::filesystem::remove(tmp_, ec);
}

void DatasetWriter::check_open(const std::string& what) const {
  if (!h_) throw DataError(what + ": the file was already committed");
}

void DatasetWriter::write_rows(int64_t begin, const at::Tensor& rows) {
  const std::string what = "writing /" + data_name_ + " of " + q(tmp_);
  check_open(what);
  const std::vector<int64_t> got = rows.sizes().vec();
  bool shape_ok = got.size() == dims_.size();
  for (size_t k = 1; shape_ok && k < got.size(); ++k) shape_ok = got[k] == dims_[k];
  if (!shape_ok) {
    std::vector<int64_t> want = dims_;
    want[0] = got.empty() ? 0 : got[0];
    throw DataError(what + ": rows of shape " + dims_text(got) + " do not fit the dataset " +
                    dims_text(dims_) + "; expected " + dims_text(want));
  }
  const int64_t count = got[0];
  if (begin < 0 || begin + count > dims_[0])
    throw DataError(what + ": rows [" + std::to_string(begin) + ", " +
                    std::to_string(begin + count) + ") lie outside the " +
                    std::to_string(dims_[0]) + " samples of " + dims_text(dims_));
  if (count == 0) return;
  const at::Tensor t = rows.to(at::kCPU).to(dtype_).contiguous();  // [B, ...]
  auto lock = h5_lock();
  h5_silence();
  Types types = types_of(dtype_, what);
  std::vector<hsize_t> start(dims_.size(), 0), extent(got.begin(), got.end());
  start[0] = static_cast<hsize_t>(begin);
  H5Id fspace(NT_H5_CHECK(H5Dget_space(h_->data.get()), what));
  NT_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr,
                                  extent.data(), nullptr),
              what);
  H5Id mspace(NT_H5_CHECK(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr),
                          what));
  NT_H5_CHECK(H5Dwrite(h_->data.get(), types.mem.get(), mspace.get(), fspace.get(), H5P_DEFAULT,
                       t.data_ptr()),
              what);
}

void DatasetWriter::write_labels(const std::vector<int64_t>& labels) {
  if (static_cast<int64_t>(labels.size()) != dims_[0])
    throw DataError("writing /labels of " + q(tmp_) + ": " + std::to_string(labels.size()) +
                    " labels for the " + std::to_string(dims_[0]) + " samples of /" + data_name_ +
                    "; they must match");
  // from_blob does not copy; write_dataset reads the values before returning.
  write_dataset("labels", at::from_blob(const_cast<int64_t*>(labels.data()),
                                        {static_cast<int64_t>(labels.size())}, at::kLong));
}

void DatasetWriter::write_dataset(const std::string& name, const at::Tensor& data) {
  const std::string what = "writing /" + name + " of " + q(tmp_);
  check_open(what);
  const at::Tensor t = data.to(at::kCPU).contiguous();
  auto lock = h5_lock();
  h5_silence();
  Types types = types_of(t.scalar_type(), what);
  const std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  H5Id space(NT_H5_CHECK(t.dim() == 0 ? H5Screate(H5S_SCALAR)
                                      : H5Screate_simple(static_cast<int>(dims.size()),
                                                         dims.data(), nullptr),
                         what));
  H5Id dset(NT_H5_CHECK(H5Dcreate2(h_->file.get(), name.c_str(), types.file.get(), space.get(),
                                   H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        what));
  if (t.numel() > 0)
    NT_H5_CHECK(H5Dwrite(dset.get(), types.mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()),
                what);
  NT_H5_CHECK(H5Dclose(dset.release()), what);
}

void DatasetWriter::set_int_attr(const std::string& name, int64_t value) {
  const std::string what = "writing root attribute " + name + " of " + q(tmp_);
  check_open(what);
  auto lock = h5_lock();
  h5_silence();
  write_scalar_attr(h_->file.get(), name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, what);
}

void DatasetWriter::set_double_attr(const std::string& name, double value) {
  const std::string what = "writing root attribute " + name + " of " + q(tmp_);
  check_open(what);
  auto lock = h5_lock();
  h5_silence();
  write_scalar_attr(h_->file.get(), name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, what);
}

void DatasetWriter::set_string_attr(const std::string& name, const std::string& value,
                                    TextType type) {
  const std::string what = "writing root attribute " + name + " of " + q(tmp_);
  check_open(what);
  auto lock = h5_lock();
  h5_silence();
  H5Id t(NT_H5_CHECK(H5Tcopy(H5T_C_S1), what));
  switch (type) {
    case TextType::kVariableUtf8: {
      NT_H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE), what);
      NT_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8), what);
      const char* text = value.c_str();
      write_scalar_attr(h_->file.get(), name, t.get(), t.get(), &text, what);
      break;
    }
    case TextType::kFixedUtf8: {
      std::string padded = value;
      padded.resize(std::max<size_t>(value.size(), 1), '\0');
      NT_H5_CHECK(H5Tset_size(t.get(), padded.size()), what);
      NT_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8), what);
      write_scalar_attr(h_->file.get(), name, t.get(), t.get(), padded.data(), what);
      break;
    }
    case TextType::kFixedAscii:
      NT_H5_CHECK(H5Tset_size(t.get(), value.size() + 1), what);
      write_scalar_attr(h_->file.get(), name, t.get(), t.get(), value.c_str(), what);
      break;
  }
}

void DatasetWriter::set_dataset_attributes(int64_t num_classes, double scale_factor, double shift_factor,
                                           const std::string& latent_space, const std::string& source, TextType type) {
  set_int_attr("num_classes", num_classes);
  set_double_attr("scale_factor", scale_factor);
  set_double_attr("shift_factor", shift_factor);
  set_string_attr("latent_space", latent_space, type);
  set_string_attr("source", source, type);
}

void DatasetWriter::commit() {
  check_open("committing " + q(tmp_));
  {
    auto lock = h5_lock();
    h5_silence();
    NT_H5_CHECK(H5Dclose(h_->data.release()), "closing /" + data_name_ + " of " + q(tmp_));
    NT_H5_CHECK(H5Fclose(h_->file.release()), "closing " + q(tmp_));
    h_.reset();
  }
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) {
    const std::string why = ec.message();
    std::filesystem::remove(tmp_, ec);
    throw DataError("cannot rename " + q(tmp_) + " to " + q(path_) + ": " + why);
  }
  committed_ = true;
}

}  // namespace nt
