#include "models/sampling.h"

#include <torch/torch.h>

#include <stdexcept>

namespace nt {

SampleResult generate_samples(DiT& model, const SampleRequest& req, const c10::Device& device) {
  const auto& mc = model->cfg;
  const int64_t n = static_cast<int64_t>(req.seeds.size());
  if (n == 0) throw std::invalid_argument("no seeds to sample");
  if (!req.classes.empty() && n % static_cast<int64_t>(req.classes.size()) != 0)
    throw std::invalid_argument(std::to_string(n) + " seeds cannot be laid out in " + std::to_string(req.classes.size()) +
                                " rows of classes: give a multiple of the number of classes");
  for (int64_t c : req.classes)
    if (c < 0 || c >= mc.num_classes)
      throw std::invalid_argument("class " + std::to_string(c) + " is outside [0, " + std::to_string(mc.num_classes) + ")");
  const int64_t per_row = req.classes.empty() ? 0 : n / static_cast<int64_t>(req.classes.size());
  model->eval();
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> samples, labels;
  for (int64_t b0 = 0; b0 < n; b0 += req.batch_size) {
    const int64_t b1 = std::min(n, b0 + static_cast<int64_t>(req.batch_size));
    std::vector<int64_t> seeds(req.seeds.begin() + b0, req.seeds.begin() + b1);
    SeedBatch batch = make_seed_batch(seeds, mc.in_channels, mc.input_size, mc.num_classes, device);
    if (per_row > 0) {
      std::vector<int64_t> forced;
      for (int64_t i = b0; i < b1; ++i) forced.push_back(req.classes[i / per_row]);
      batch.labels = torch::tensor(forced, torch::TensorOptions().dtype(at::kLong)).to(device);
    }
    auto x = edm_sample(dit_denoiser(model, batch, req.sigma_data, req.guidance), batch, req.sampler);
    samples.push_back(x.to(at::kFloat).to(at::kCPU));
    labels.push_back(batch.labels.to(at::kCPU));
  }
  SampleResult r;
  r.samples = at::cat(samples);
  r.labels = at::cat(labels);
  r.seeds = torch::tensor(req.seeds, torch::TensorOptions().dtype(at::kLong));
  return r;
}

}  // namespace nt
