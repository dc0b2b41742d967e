// Model zoo: the reference DiT sizes by name, resolved with the config's custom overrides,
// plus parameter and FLOP counts.
#pragma once
#include <string>
#include <vector>

#include "core/config.h"
#include "models/dit.h"

namespace nt {

// "DiT-XL/2" etc. (S/B/L/XL x patch 2/4/8).
std::vector<std::string> zoo_names();
// The zoo entry `mc.name` with depth/hidden_size/num_heads/patch_size overrides (non-zero),
// input size, channels, classes and routes from `mc`; checks routes fit the depth.
// Throws ConfigError naming the key.
DiTConfig resolve_model(const ModelConfig& mc);

struct ModelCost {
  int64_t params = 0;            // trainable parameters (pos_embed excluded)
  double forward_flops = 0;      // per image, routes applied (training forward)
  double forward_flops_eval = 0; // per image, no routing
  double train_flops() const { return 3 * forward_flops; }  // forward + backward
};
// Analytic count: 2 FLOPs per multiply-add of every matrix product, attention included.
ModelCost model_cost(const DiTConfig& cfg);

}  // namespace nt
