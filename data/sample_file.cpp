// write_sample_file (sample_file.h): /samples, /labels, /seeds and the string attributes through
// DatasetWriter (dataset_writer.h), which writes path + ".tmp" and renames it when complete;
// read_sample_file reads the datasets back.
#include "data/sample_file.h"

#include <ATen/ATen.h>

#include <vector>

#include "data/dataset_writer.h"
#include "data/hdf5_check.h"

namespace nt {

void write_sample_file(const std::string& path, const at::Tensor& samples, const at::Tensor& labels,
                       const at::Tensor& seeds, const std::map<std::string, std::string>& attributes) {
  DatasetWriter writer(path, "samples", samples.sizes().vec(), at::kFloat);
  writer.write_rows(0, samples);  // [N,C,H,W] float32
  writer.write_dataset("labels", labels.to(at::kCPU).to(at::kLong));  // [N] int64
  writer.write_dataset("seeds", seeds.to(at::kCPU).to(at::kLong));    // [N] int64
  for (const auto& [key, value] : attributes)
    writer.set_string_attr(key, value, TextType::kFixedAscii);
  writer.commit();
}

namespace {

// A whole dataset as `dtype` (float32 or int64), its shape from the file.
at::Tensor read_all(const H5Id& file, const std::string& path, const char* name, at::ScalarType dtype) {
  const std::string what = "reading /" + std::string(name) + " of sample file '" + path + "'";
  if (NT_H5_CHECK(H5Lexists(file.get(), name, H5P_DEFAULT), what) <= 0)
    throw DataError("sample file '" + path + "' has no /" + name + " (not written by tread_sample?)");
  H5Id d(NT_H5_CHECK(H5Dopen2(file.get(), name, H5P_DEFAULT), what));
  H5Id space(NT_H5_CHECK(H5Dget_space(d.get()), what));
  const int rank = NT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  NT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  auto t = at::empty(std::vector<int64_t>(dims.begin(), dims.end()), at::TensorOptions().dtype(dtype));
  NT_H5_CHECK(H5Dread(d.get(), dtype == at::kLong ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                      H5P_DEFAULT, t.data_ptr()),
              what);
  return t;
}

}  // namespace

SampleFile read_sample_file(const std::string& path) {
  h5_silence();
  const auto lock = h5_lock();
  const std::string what = "opening sample file '" + path + "'";
  const H5Id access = h5_read_access(what);
  H5Id file(NT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, access.get()), what));
  SampleFile s{read_all(file, path, "samples", at::kFloat), read_all(file, path, "labels", at::kLong),
               read_all(file, path, "seeds", at::kLong)};
  if (s.samples.dim() != 4 || s.labels.dim() != 1 || s.seeds.dim() != 1 || s.labels.size(0) != s.samples.size(0) ||
      s.seeds.size(0) != s.samples.size(0))
    throw DataError("sample file '" + path + "': /samples " + std::to_string(s.samples.dim()) +
                    "-D, /labels and /seeds do not describe the same N samples [N,C,H,W], [N], [N]");
  return s;
}

}  // namespace nt
