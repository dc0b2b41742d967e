// Sample files of tread_sample: an HDF5 file with /samples [N,C,H,W] float32 (the sampler's
// output, before any decoding), /labels [N] int64 and /seeds [N] int64.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace nt {

// Writes to path + ".tmp", then renames. String attributes go on the root.
void write_sample_file(const std::string& path, const at::Tensor& samples, const at::Tensor& labels,
                       const at::Tensor& seeds, const std::map<std::string, std::string>& attributes = {});

struct SampleFile {
  at::Tensor samples;  // [N,C,H,W] float32
  at::Tensor labels;   // [N] int64
  at::Tensor seeds;    // [N] int64
};
// Reads the three datasets back (CPU tensors); throws DataError naming the file and what is
// missing or malformed.
SampleFile read_sample_file(const std::string& path);

}  // namespace nt
