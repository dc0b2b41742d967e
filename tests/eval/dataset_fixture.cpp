// Small dataset files for the evaluation tests (see dataset_fixture.h).
#include "eval/dataset_fixture.h"

#include <torch/torch.h>

#include <vector>

#include "data/dataset_writer.h"

namespace nt::test {

void write_dataset(const std::string& path, const at::Tensor& latents, const at::Tensor& labels,
                   const std::string& space, int64_t classes) {
  nt::DatasetWriter w(path, "latents", latents.sizes().vec(), at::kFloat);
  w.write_rows(0, latents);
  const auto l = labels.to(at::kLong).contiguous();
  w.write_labels(std::vector<int64_t>(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel()));
  w.set_int_attr("num_classes", classes);
  w.set_string_attr("latent_space", space);
  w.commit();
}

}  // namespace nt::test
