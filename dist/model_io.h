// Moving models in and out of files: reference-named safetensors weights, checkpoint folders
// (EMA or raw weights, consolidated from the rank shards), and the JSON records of a model's
// architecture and its data in checkpoint manifests.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "data/latent_dataset.h"
#include "models/dit.h"

namespace nt {

nlohmann::json dit_config_to_json(const DiTConfig& c);
DiTConfig dit_config_from_json(const nlohmann::json& j);
nlohmann::json data_info_to_json(const DatasetInfo& d);
// Throws CheckpointError naming `where` when `stored` is another architecture than `c`
// (routes may differ: they hold no parameters).
void check_same_architecture(const nlohmann::json& stored, const DiTConfig& c, const std::string& where);

// Loads reference-named weights into `model`, strictly: every parameter present with its shape,
// no unknown names. Throws SafetensorsError naming the file and the parameter.
void load_weights(DiT& model, const std::string& path);

// A checkpoint's model with its "ema" or "param" weights (pos_embed recomputed), its config
// and manifest. Throws CheckpointError for an incomplete or corrupt folder.
struct LoadedCheckpoint {
  DiT model{nullptr};
  nlohmann::json manifest;
  std::string config_toml;
};
LoadedCheckpoint load_checkpoint_model(const std::string& dir, const std::string& kind);

// Writes every state_dict entry of `model` (reference names and order) to one safetensors file.
void export_weights(DiT& model, const std::string& path, const std::map<std::string, std::string>& metadata);

}  // namespace nt
