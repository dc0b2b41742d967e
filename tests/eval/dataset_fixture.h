// Small dataset files for the evaluation tests (linked into every tests/eval binary).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace nt::test {

// A dataset file (docs/data-format.md) at `path`: /latents = `latents` (float32), /labels,
// num_classes = `classes`, latent_space = `space`, through data/dataset_writer.
void write_dataset(const std::string& path, const at::Tensor& latents, const at::Tensor& labels,
                   const std::string& space, int64_t classes);

}  // namespace nt::test
