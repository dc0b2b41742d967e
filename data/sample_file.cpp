// write_sample_file (sample_file.h): /samples, /labels, /seeds and the string attributes through
// DatasetWriter (dataset_writer.h), which writes path + ".tmp" and renames it when complete.
#include "data/sample_file.h"

#include <ATen/ATen.h>

#include "data/dataset_writer.h"

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

}  // namespace nt
