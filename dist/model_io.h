// Moving models in and out of files: reference-named safetensors weights, checkpoint folders
// (EMA or raw weights, consolidated from the rank shards), and the JSON records of a model's
// architecture and its data in checkpoint manifests.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>

#include "core/safetensors.h"
#include "data/latent_dataset.h"
#include "dist/flat_layout.h"
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

// A file a new run starts from (checkpoint.init_from, docs/checkpoint-format.md):
//   - reference-named weights (tread_export, scripts/convert-weights): they become the parameters
//     and the EMA; kinds "param" and "ema" hold the same tensors;
//   - a training state (scripts/convert-weights --training-state, e.g. from a CompVis/tread
//     latest.pt): tensors "param.<name>", "ema.<name>", "exp_avg.<name>", "exp_avg_sq.<name>",
//     metadata "format" = "nano-tread-training-state/1" and "step" = the updates made so far.
struct InitState {
  bool training_state = false;
  int64_t step = 0;  // updates made (0 for weights)
  SafetensorsIndex file;  // the header (and metadata): tensors are read when a rank takes its shard
  std::map<std::string, std::map<std::string, std::string>> names;  // kind -> parameter -> tensor in the file
};
inline constexpr const char* kTrainingStateFormat = "nano-tread-training-state/1";
// Reads the header of `path` and checks it against `model`: every trainable parameter in every
// kind with its shape, floating point, and no name the model lacks (fixed parameters such as
// pos_embed may be there: the model recomputes them). Throws CheckpointError naming the file and
// what is wrong.
InitState read_init_state(const std::string& path, DiT& model);
// This rank's fp32 shard of each unit of `layout` for `kind` ("param", "ema", and for a training
// state "exp_avg", "exp_avg_sq"): only the elements of the parameters that fall into the rank's
// range are read from the file.
std::vector<at::Tensor> shard_from_init(const InitState& st, const std::string& kind, const FlatLayout& layout,
                                        int rank, const c10::Device& device);

// Writes every state_dict entry of `model` (reference names and order) to one safetensors file.
void export_weights(DiT& model, const std::string& path, const std::map<std::string, std::string>& metadata);

}  // namespace nt
