#include "dist/model_io.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <set>
#include <sstream>

#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "dist/flat_layout.h"
#include "dist/sharded_checkpoint.h"

namespace nt {

nlohmann::json dit_config_to_json(const DiTConfig& c) {
  nlohmann::json routes = nlohmann::json::array();
  for (const auto& r : c.routes)
    routes.push_back({{"selection_ratio", r.selection_ratio}, {"start_layer", r.start_layer},
                      {"end_layer", r.end_layer}, {"x_T", r.x_T}, {"x_D_last", r.x_D_last}});
  return {{"input_size", c.input_size}, {"in_channels", c.in_channels}, {"num_classes", c.num_classes},
          {"depth", c.depth}, {"hidden_size", c.hidden_size}, {"num_heads", c.num_heads},
          {"patch_size", c.patch_size}, {"mlp_ratio", c.mlp_ratio}, {"routes", routes}};
}

DiTConfig dit_config_from_json(const nlohmann::json& j) {
  DiTConfig c;
  c.input_size = j.at("input_size");
  c.in_channels = j.at("in_channels");
  c.num_classes = j.at("num_classes");
  c.depth = j.at("depth");
  c.hidden_size = j.at("hidden_size");
  c.num_heads = j.at("num_heads");
  c.patch_size = j.at("patch_size");
  c.mlp_ratio = j.at("mlp_ratio");
  for (const auto& r : j.at("routes"))
    c.routes.push_back({r.at("selection_ratio"), r.at("start_layer"), r.at("end_layer"), r.at("x_T"), r.at("x_D_last")});
  return c;
}

nlohmann::json data_info_to_json(const DatasetInfo& d) {
  return {{"size", d.size}, {"channels", d.channels}, {"height", d.height}, {"width", d.width},
          {"num_classes", d.num_classes}, {"moments", d.moments}, {"scale_factor", d.scale_factor},
          {"shift_factor", d.shift_factor}, {"latent_space", d.latent_space}, {"source", d.source}};
}

void check_same_architecture(const nlohmann::json& stored, const DiTConfig& c, const std::string& where) {
  auto a = stored, b = dit_config_to_json(c);
  a.erase("routes");
  b.erase("routes");
  if (a != b)
    throw CheckpointError("'" + where + "' holds another model: " + a.dump() + "; this run's model is " + b.dump());
}

void load_weights(DiT& model, const std::string& path) {
  auto file = load_safetensors(path);
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    auto it = file.tensors.find(item.key());
    if (it == file.tensors.end())
      throw SafetensorsError("'" + path + "' lacks the parameter '" + item.key() + "'");
    if (it->second.sizes() != item.value().sizes())
      throw SafetensorsError("'" + path + "': parameter '" + item.key() + "' has shape " + c10::str(it->second.sizes()) +
                             ", the model expects " + c10::str(item.value().sizes()));
    item.value().copy_(it->second);
    used.insert(item.key());
  }
  for (const auto& name : file.order)
    if (!used.count(name))
      throw SafetensorsError("'" + path + "' holds '" + name + "', which this model does not have (wrong model config?)");
}

LoadedCheckpoint load_checkpoint_model(const std::string& dir, const std::string& kind) {
  if (kind != "ema" && kind != "param") throw CheckpointError("weights must be 'ema' or 'raw', got '" + kind + "'");
  const CheckpointReadLock reading(dir);  // retention elsewhere keeps the folder while it is read
  LoadedCheckpoint out;
  out.manifest = read_verified_manifest(dir);
  DiTConfig mc = dit_config_from_json(out.manifest.at("model"));
  out.model = DiT(mc);
  const FlatLayout layout = make_layout(*out.model, 1);
  auto flat = shard_from_full(load_full_tensors(dir, out.manifest, kind), layout, 0, c10::Device(c10::kCPU), dir);
  load_flat(*out.model, layout, flat);
  std::ifstream in(std::filesystem::path(dir) / "config.toml");
  std::stringstream ss;
  ss << in.rdbuf();
  out.config_toml = ss.str();
  return out;
}

InitState read_init_state(const std::string& path, DiT& model) {
  InitState st;
  try {
    st.file = index_safetensors(path);
  } catch (const SafetensorsError& e) {
    throw CheckpointError(std::string("checkpoint.init_from: ") + e.what());
  }
  const std::string where = "checkpoint.init_from '" + path + "'";
  const auto& metadata = st.file.metadata;
  auto format = metadata.find("format");
  st.training_state = format != metadata.end() && format->second == kTrainingStateFormat;
  if (format != metadata.end() && !st.training_state && format->second.rfind("nano-tread-training-state", 0) == 0)
    throw CheckpointError(where + " is a training state of format '" + format->second + "'; this build reads '" +
                          kTrainingStateFormat + "'");
  const std::vector<std::string> kinds =
      st.training_state ? std::vector<std::string>{"param", "ema", "exp_avg", "exp_avg_sq"}
                        : std::vector<std::string>{"param", "ema"};
  if (st.training_state) {
    auto step = metadata.find("step");
    size_t used = 0;
    try {
      if (step != metadata.end()) st.step = std::stoll(step->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (step == metadata.end() || used != step->second.size() || st.step < 0)
      throw CheckpointError(where + " is a training state without a valid \"step\" in its metadata (the number of "
                            "updates made; scripts/convert-weights --training-state writes it)");
  }
  std::map<std::string, std::vector<int64_t>> trainable;  // the model's parameters' shapes by name
  std::set<std::string> fixed;
  for (const auto& p : model->named_parameters()) {
    if (p.value().requires_grad())
      trainable.emplace(p.key(), p.value().sizes().vec());
    else
      fixed.insert(p.key());
  }
  for (const auto& name : st.file.order) {
    std::string kind = "param", param = name;
    if (st.training_state) {
      const auto dot = name.find('.');
      kind = dot == std::string::npos ? "" : name.substr(0, dot);
      param = dot == std::string::npos ? name : name.substr(dot + 1);
      if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
        throw CheckpointError(where + " holds '" + name + "': a training state's tensors are named param.*, ema.*, "
                              "exp_avg.* or exp_avg_sq.*");
    }
    if (fixed.count(param)) continue;  // recomputed by the model
    if (!trainable.count(param)) {
      std::string hint = "another model config?";
      if (!st.training_state && name.rfind("param.", 0) == 0)
        hint += " or a training state without its metadata \"format\"?";
      const auto dot = param.find('.');
      if (dot != std::string::npos && (trainable.count(param.substr(dot + 1)) || fixed.count(param.substr(dot + 1))))
        hint += " The names carry a prefix '" + param.substr(0, dot + 1) + "' (the reference's EDMPrecond names its "
                "DiT model.*): convert with scripts/convert-weights --strip-prefix " + param.substr(0, dot + 1);
      throw CheckpointError(where + " holds '" + name + "', which this model does not have (" + hint + ")");
    }
    const SafetensorsIndex::Info& t = st.file.tensors.at(name);
    if (t.shape != trainable.at(param))
      throw CheckpointError(where + ": '" + name + "' has shape " + c10::str(at::IntArrayRef(t.shape)) + ", this model's '" +
                            param + "' is " + c10::str(at::IntArrayRef(trainable.at(param))) + " (another model config?)");
    if (!at::isFloatingType(t.dtype))
      throw CheckpointError(where + ": '" + name + "' is " + c10::toString(t.dtype) + ", not floating point");
    st.names[kind][param] = name;
    if (!st.training_state) st.names["ema"][param] = name;
  }
  for (const auto& kind : kinds)
    for (const auto& [param, shape] : trainable)
      if (!st.names[kind].count(param))
        throw CheckpointError(where + " lacks '" + (st.training_state ? kind + "." : std::string()) + param + "'");
  return st;
}

std::vector<at::Tensor> shard_from_init(const InitState& st, const std::string& kind, const FlatLayout& layout,
                                        int rank, const c10::Device& device) {
  const auto& names = st.names.at(kind);
  return shard_from_params(layout, rank, device, [&](const FlatParam& p, int64_t offset, int64_t count) {
    return read_tensor_elements(st.file, names.at(p.name), offset, count);
  });
}

void export_weights(DiT& model, const std::string& path, const std::map<std::string, std::string>& metadata) {
  std::vector<NamedTensor> tensors;
  for (const auto& item : model->named_parameters()) tensors.push_back({item.key(), item.value().detach()});
  const std::string tmp = path + ".tmp";
  save_safetensors(tmp, tensors, metadata);
  std::filesystem::rename(tmp, path);
}

}  // namespace nt
