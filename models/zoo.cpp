#include "models/zoo.h"

#include <map>

namespace nt {
namespace {
struct ZooEntry { int depth, hidden_size, num_heads; };
const std::map<std::string, ZooEntry>& sizes() {
  static const std::map<std::string, ZooEntry> s = {
      {"XL", {28, 1152, 16}}, {"L", {24, 1024, 16}}, {"B", {12, 768, 12}}, {"S", {12, 384, 6}}};
  return s;
}
}  // namespace

std::vector<std::string> zoo_names() {
  std::vector<std::string> names;
  for (const char* size : {"XL", "L", "B", "S"})
    for (int p : {2, 4, 8}) names.push_back(std::string("DiT-") + size + "/" + std::to_string(p));
  return names;
}

DiTConfig resolve_model(const ModelConfig& mc) {
  const auto names = zoo_names();
  bool known = false;
  for (const auto& n : names) known |= (n == mc.name);
  if (!known) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw ConfigError("model.name '" + mc.name + "' is not in the model zoo; choose one of " + list +
                      " (and set model.depth/hidden_size/num_heads/patch_size for custom sizes)");
  }
  const auto slash = mc.name.find('/');
  const ZooEntry& e = sizes().at(mc.name.substr(4, slash - 4));
  DiTConfig c;
  c.input_size = mc.input_size;
  c.in_channels = mc.in_channels;
  c.num_classes = mc.num_classes;
  c.depth = mc.depth > 0 ? mc.depth : e.depth;
  c.hidden_size = mc.hidden_size > 0 ? mc.hidden_size : e.hidden_size;
  c.num_heads = mc.num_heads > 0 ? mc.num_heads : e.num_heads;
  c.patch_size = mc.patch_size > 0 ? mc.patch_size : std::stoi(mc.name.substr(slash + 1));
  c.mlp_ratio = mc.mlp_ratio;
  c.adaln_zero = mc.init == "adaln_zero";
  c.routes = mc.routes;
  if (c.input_size % c.patch_size != 0)
    throw ConfigError("model.input_size " + std::to_string(c.input_size) +
                      " must be a multiple of the patch size " + std::to_string(c.patch_size));
  if (c.hidden_size % c.num_heads != 0 || c.hidden_size % 4 != 0)
    throw ConfigError("model.hidden_size " + std::to_string(c.hidden_size) +
                      " must be a multiple of 4 and of model.num_heads " + std::to_string(c.num_heads));
  for (size_t i = 0; i < c.routes.size(); ++i) {
    const auto& r = c.routes[i];
    if (r.end_layer >= c.depth)
      throw ConfigError("model.routes[" + std::to_string(i) + "].end_layer " + std::to_string(r.end_layer) +
                        " is past the last block (depth " + std::to_string(c.depth) + ": 0.." +
                        std::to_string(c.depth - 1) + ")");
  }
  return c;
}

ModelCost model_cost(const DiTConfig& c) {
  const double D = c.hidden_size, T = c.tokens(), p = c.patch_size, C = c.in_channels;
  const double H = static_cast<int>(c.hidden_size * c.mlp_ratio);
  ModelCost cost;
  // Parameters: patch embed, timestep MLP, label table, blocks, final layer.
  double params = (C * p * p * D + D) + (256 * D + D + D * D + D) + (c.num_classes > 0 ? (c.num_classes + 1) * D : 0);
  const double block_params = (D * 3 * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D) + (D * 6 * D + 6 * D);
  params += c.depth * block_params + (D * p * p * C + p * p * C) + (D * 2 * D + 2 * D);
  cost.params = static_cast<int64_t>(params);
  // Multiply-adds per image: embedders and final layer, then each block at its token count.
  auto block_macs = [&](double t) { return 6 * D * D + t * D * 3 * D + 2 * t * t * D + t * D * D + 2 * t * D * H; };
  const double outer = T * C * p * p * D + 256 * D + D * D + 2 * D * D + T * D * p * p * C;
  double routed = outer, plain = outer;
  size_t r = 0;
  for (int i = 0; i < c.depth; ++i) {
    double t = T;
    while (r < c.routes.size() && i > c.routes[r].end_layer) ++r;
    if (r < c.routes.size() && i >= c.routes[r].start_layer)
      t = T - static_cast<int64_t>(T * c.routes[r].selection_ratio);
    routed += block_macs(t);
    plain += block_macs(T);
  }
  cost.forward_flops = 2 * routed;
  cost.forward_flops_eval = 2 * plain;
  return cost;
}

}  // namespace nt
