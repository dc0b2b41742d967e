#include "data/sample_file.h"

#include <torch/torch.h>

#include <cstdio>
#include <vector>

#include "data/hdf5_check.h"

namespace nt {
namespace {

void write_dataset(hid_t file, const char* name, const at::Tensor& t, hid_t mem_type, hid_t file_type) {
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  H5Id space(NT_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), std::string("dataspace of /") + name));
  H5Id ds(NT_H5_CHECK(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                      std::string("creating /") + name));
  NT_H5_CHECK(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()), std::string("writing /") + name);
}

}  // namespace

void write_sample_file(const std::string& path, const at::Tensor& samples, const at::Tensor& labels,
                       const at::Tensor& seeds, const std::map<std::string, std::string>& attributes) {
  h5_silence();
  const std::string tmp = path + ".tmp";
  {
    H5Id file(NT_H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "creating '" + tmp + "'"));
    write_dataset(file.get(), "samples", samples.to(at::kCPU).to(at::kFloat).contiguous(), H5T_NATIVE_FLOAT, H5T_IEEE_F32LE);
    write_dataset(file.get(), "labels", labels.to(at::kCPU).to(at::kLong).contiguous(), H5T_NATIVE_INT64, H5T_STD_I64LE);
    write_dataset(file.get(), "seeds", seeds.to(at::kCPU).to(at::kLong).contiguous(), H5T_NATIVE_INT64, H5T_STD_I64LE);
    for (const auto& [key, value] : attributes) {
      H5Id type(NT_H5_CHECK(H5Tcopy(H5T_C_S1), "string type"));
      NT_H5_CHECK(H5Tset_size(type.get(), value.size() + 1), "string size");
      H5Id space(NT_H5_CHECK(H5Screate(H5S_SCALAR), "scalar space"));
      H5Id attr(NT_H5_CHECK(H5Acreate2(file.get(), key.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                            "attribute " + key));
      NT_H5_CHECK(H5Awrite(attr.get(), type.get(), value.c_str()), "writing attribute " + key);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw DataError("cannot rename '" + tmp + "' to '" + path + "'");
}

}  // namespace nt
