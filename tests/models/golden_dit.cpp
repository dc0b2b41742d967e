// The golden files' small DiT (see golden_dit.h).
#include "golden_dit.h"

#include <torch/torch.h>

#include "core/rng.h"

namespace nt::test {

DiTConfig golden_dit_config() {
  DiTConfig cfg;
  cfg.input_size = 8;
  cfg.in_channels = 4;
  cfg.num_classes = 10;
  cfg.depth = 4;
  cfg.hidden_size = 64;
  cfg.num_heads = 4;
  cfg.patch_size = 2;
  RouteConfig r;
  r.selection_ratio = 0.5;
  r.start_layer = 1;
  r.end_layer = 2;
  cfg.routes = {r};
  return cfg;
}

void perturb(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  auto gen = make_generator(c10::Device(c10::kCPU), 5);
  for (auto& p : m.parameters()) p.add_(at::randn(p.sizes(), gen) * 0.02);
}

}  // namespace nt::test
