#include "dist/sharded_checkpoint.h"

#include <torch/torch.h>

#include <filesystem>

#include "core/checkpoint.h"
#include "core/safetensors.h"

namespace nt {

std::string rank_file_name(int rank) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "rank_%05d.safetensors", rank);
  return buf;
}

void save_rank_shards(const std::string& dir, int rank, const FlatLayout& layout,
                      const std::map<std::string, std::vector<at::Tensor>>& buffers,
                      const std::map<std::string, at::Tensor>& rng_states) {
  std::vector<NamedTensor> tensors;
  for (const auto& [kind, bufs] : buffers)
    for (size_t u = 0; u < layout.units.size(); ++u)
      tensors.push_back({layout.units[u].name + "." + kind, bufs[u].detach().to(at::kCPU)});
  for (const auto& [name, state] : rng_states) tensors.push_back({"rng." + name, state.to(at::kCPU)});
  save_safetensors((std::filesystem::path(dir) / rank_file_name(rank)).string(), tensors,
                   {{"rank", std::to_string(rank)}, {"world", std::to_string(layout.world)}});
}

std::map<std::string, std::map<std::string, at::Tensor>> load_full_tensors(
    const std::string& dir, const nlohmann::json& manifest, const std::vector<std::string>& kinds) {
  const FlatLayout layout = FlatLayout::from_json(manifest.at("layout"));
  const int world = layout.world;
  std::vector<SafetensorsFile> files;  // each rank file read once, for every kind
  for (int r = 0; r < world; ++r)
    files.push_back(load_safetensors((std::filesystem::path(dir) / rank_file_name(r)).string()));
  std::map<std::string, std::map<std::string, at::Tensor>> out;
  for (const auto& kind : kinds) {
    auto& full = out[kind];
    for (const auto& u : layout.units) {
      std::vector<at::Tensor> shards;
      for (int r = 0; r < world; ++r) {
        auto it = files[r].tensors.find(u.name + "." + kind);
        if (it == files[r].tensors.end())
          throw CheckpointError("'" + (std::filesystem::path(dir) / rank_file_name(r)).string() + "' lacks '" +
                                u.name + "." + kind + "'");
        if (it->second.numel() != u.padded / world)
          throw CheckpointError("'" + u.name + "." + kind + "' in rank " + std::to_string(r) +
                                " has the wrong size for the manifest's layout");
        shards.push_back(it->second);
      }
      auto flat = at::cat(shards);  // [padded]
      for (const auto& p : u.params) full[p.name] = flat.narrow(0, p.offset, p.numel).view(p.shape).clone();
    }
  }
  return out;
}

std::map<std::string, at::Tensor> load_full_tensors(const std::string& dir, const nlohmann::json& manifest,
                                                    const std::string& kind) {
  return load_full_tensors(dir, manifest, std::vector<std::string>{kind}).at(kind);
}

std::vector<at::Tensor> shard_from_full(const std::map<std::string, at::Tensor>& full, const FlatLayout& layout,
                                        int rank, const c10::Device& device, const std::string& what) {
  std::vector<at::Tensor> out;
  for (const auto& u : layout.units) {
    auto flat = torch::zeros({u.padded}, torch::TensorOptions().dtype(at::kFloat));
    for (const auto& p : u.params) {
      auto it = full.find(p.name);
      if (it == full.end()) throw CheckpointError(what + " has no parameter '" + p.name + "'");
      if (it->second.sizes().vec() != p.shape)
        throw CheckpointError(what + ": parameter '" + p.name + "' has shape " + c10::str(it->second.sizes()) +
                              ", the model expects " + c10::str(at::IntArrayRef(p.shape)));
      flat.narrow(0, p.offset, p.numel).copy_(it->second.reshape({-1}));
    }
    const int64_t shard = u.padded / layout.world;
    out.push_back(flat.narrow(0, rank * shard, shard).clone().to(device));
  }
  return out;
}

std::optional<RankShards> load_own_shards(const std::string& dir, const nlohmann::json& manifest,
                                          const FlatLayout& layout, int rank, const std::vector<std::string>& kinds,
                                          const c10::Device& device) {
  if (FlatLayout::from_json(manifest.at("layout")).to_json() != layout.to_json()) return std::nullopt;
  const std::string name = rank_file_name(rank);
  verify_checkpoint_files(dir, manifest, {name});
  const std::string path = (std::filesystem::path(dir) / name).string();
  auto file = load_safetensors(path);
  RankShards out;
  for (const auto& kind : kinds)
    for (const auto& u : layout.units) {
      auto it = file.tensors.find(u.name + "." + kind);
      if (it == file.tensors.end()) throw CheckpointError("'" + path + "' lacks '" + u.name + "." + kind + "'");
      if (it->second.numel() != u.shard() || it->second.scalar_type() != at::kFloat)
        throw CheckpointError("'" + path + "': '" + u.name + "." + kind + "' is not a float32 shard of " +
                              std::to_string(u.shard()) + " values, as the manifest's layout says");
      out.buffers[kind].push_back(it->second.to(device));
    }
  for (const auto& [key, t] : file.tensors)
    if (key.rfind("rng.", 0) == 0) out.rng[key.substr(4)] = t;
  return out;
}

at::Tensor load_rng_state(const std::string& dir, const nlohmann::json& manifest, int rank, const std::string& name) {
  const int world = manifest.at("world_size").get<int>();
  const auto path = (std::filesystem::path(dir) / rank_file_name(rank % world)).string();
  auto file = load_safetensors(path);
  auto it = file.tensors.find("rng." + name);
  if (it == file.tensors.end()) throw CheckpointError("'" + path + "' lacks the generator state 'rng." + name + "'");
  return it->second;
}

}  // namespace nt
