// Generating samples from a trained model for fixed seeds (tread_sample, the evaluation rank):
// per-seed generators, seeds split into batches however convenient without changing a sample.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "models/edm.h"

namespace nt {

struct SampleRequest {
  std::vector<int64_t> seeds;
  // When non-empty, overrides the drawn classes: seeds are laid out in rows, one row per class
  // (seeds.size() must be a multiple of classes.size()); the class is still drawn first.
  std::vector<int64_t> classes;
  SamplerOptions sampler;
  Guidance guidance;
  double sigma_data = 0.5;
  int batch_size = 64;
};

struct SampleResult {
  at::Tensor samples;  // [N,C,H,W] float32, the sampler's output
  at::Tensor labels;   // [N] int64
  at::Tensor seeds;    // [N] int64
};

SampleResult generate_samples(DiT& model, const SampleRequest& req, const c10::Device& device);

}  // namespace nt
