#include "dist/sharded_checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <set>

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

namespace {

// Elements [offset, offset + count) of the float32 shard `name` ([shard] values) in rank file `f`.
at::Tensor read_shard(const SafetensorsIndex& f, const std::string& name, int64_t shard, int64_t offset,
                      int64_t count) {
  auto it = f.tensors.find(name);
  if (it == f.tensors.end()) throw CheckpointError("'" + f.path + "' lacks '" + name + "'");
  if (it->second.dtype != at::kFloat || it->second.nbytes != static_cast<uint64_t>(shard) * 4)
    throw CheckpointError("'" + f.path + "': '" + name + "' is not a float32 shard of " + std::to_string(shard) +
                          " values, as the manifest's layout says");
  return read_tensor_elements(f, name, offset, count);
}

}  // namespace

std::map<std::string, std::map<std::string, at::Tensor>> load_full_tensors(
    const std::string& dir, const nlohmann::json& manifest, const std::vector<std::string>& kinds) {
  const FlatLayout layout = FlatLayout::from_json(manifest.at("layout"));
  const int world = layout.world;
  // shards[kind][unit][rank]: one rank file open at a time; only the kinds asked for are read.
  std::map<std::string, std::vector<std::vector<at::Tensor>>> shards;
  for (int r = 0; r < world; ++r) {
    const SafetensorsIndex f = index_safetensors((std::filesystem::path(dir) / rank_file_name(r)).string());
    for (const auto& kind : kinds) {
      auto& units = shards[kind];
      units.resize(layout.units.size());
      for (size_t u = 0; u < layout.units.size(); ++u) {
        const int64_t shard = layout.units[u].padded / world;
        units[u].push_back(read_shard(f, layout.units[u].name + "." + kind, shard, 0, shard));
      }
    }
  }
  std::map<std::string, std::map<std::string, at::Tensor>> out;
  for (const auto& kind : kinds)
    for (size_t u = 0; u < layout.units.size(); ++u) {
      auto flat = at::cat(shards[kind][u]);  // [padded]
      for (const auto& p : layout.units[u].params)
        out[kind][p.name] = flat.narrow(0, p.offset, p.numel).view(p.shape).clone();
    }
  return out;
}

std::map<std::string, at::Tensor> load_full_tensors(const std::string& dir, const nlohmann::json& manifest,
                                                    const std::string& kind) {
  return load_full_tensors(dir, manifest, std::vector<std::string>{kind}).at(kind);
}

std::vector<at::Tensor> shard_from_params(
    const FlatLayout& layout, int rank, const c10::Device& device,
    const std::function<at::Tensor(const FlatParam& p, int64_t offset, int64_t count)>& elements) {
  std::vector<at::Tensor> out;
  for (const auto& u : layout.units) {
    const int64_t shard = u.padded / layout.world, a = rank * shard, b = a + shard;
    auto buf = torch::zeros({shard}, torch::TensorOptions().dtype(at::kFloat));  // [padded / W]
    for (const auto& p : u.params) {
      const int64_t lo = std::max(a, p.offset), hi = std::min(b, p.offset + p.numel);
      if (lo < hi) buf.narrow(0, lo - a, hi - lo).copy_(elements(p, lo - p.offset, hi - lo));
    }
    out.push_back(buf.to(device));
  }
  return out;
}

std::vector<at::Tensor> shard_from_full(const std::map<std::string, at::Tensor>& full, const FlatLayout& layout,
                                        int rank, const c10::Device& device, const std::string& what) {
  for (const auto& u : layout.units)  // every parameter checked, also those of other ranks' shards
    for (const auto& p : u.params) {
      auto it = full.find(p.name);
      if (it == full.end()) throw CheckpointError(what + " has no parameter '" + p.name + "'");
      if (it->second.sizes().vec() != p.shape)
        throw CheckpointError(what + ": parameter '" + p.name + "' has shape " + c10::str(it->second.sizes()) +
                              ", the model expects " + c10::str(at::IntArrayRef(p.shape)));
    }
  return shard_from_params(layout, rank, device, [&](const FlatParam& p, int64_t offset, int64_t count) {
    return full.at(p.name).reshape({-1}).narrow(0, offset, count);
  });
}

namespace {

// The same units with the same parameters at the same offsets (the layouts of one model for any W).
bool same_units(const FlatLayout& a, const FlatLayout& b) {
  if (a.units.size() != b.units.size()) return false;
  for (size_t u = 0; u < a.units.size(); ++u) {
    const FlatUnit &x = a.units[u], &y = b.units[u];
    if (x.name != y.name || x.numel != y.numel || x.params.size() != y.params.size()) return false;
    for (size_t i = 0; i < x.params.size(); ++i) {
      const FlatParam &p = x.params[i], &q = y.params[i];
      if (p.name != q.name || p.shape != q.shape || p.offset != q.offset || p.numel != q.numel) return false;
    }
  }
  return true;
}

// Unit u's elements that rank `rank` of `layout` holds: [a, b) of the flat buffer (from b to the
// shard's end: padding, zeros).
std::pair<int64_t, int64_t> rank_range(const FlatLayout& layout, size_t u, int rank) {
  const int64_t s_new = layout.units[u].padded / layout.world;
  const int64_t a = rank * s_new, b = std::min(a + s_new, layout.units[u].numel);
  return {a, std::max(a, b)};
}

// The writers (rank files) whose shards hold what rank `rank` of `layout` holds, and the one whose
// generator states it takes (`rank` mod the writers' W), for layouts with the same units.
std::set<int> rank_readers(const FlatLayout& written, const FlatLayout& layout, int rank) {
  std::set<int> readers = {rank % written.world};
  for (size_t u = 0; u < layout.units.size(); ++u) {
    const int64_t s_old = written.units[u].padded / written.world;
    const auto [a, b] = rank_range(layout, u, rank);
    for (int64_t k = a / s_old; k * s_old < b; ++k) readers.insert(static_cast<int>(k));
  }
  return readers;
}

}  // namespace

std::vector<std::string> resume_files(const nlohmann::json& manifest, const FlatLayout& layout, int rank) {
  const FlatLayout written = FlatLayout::from_json(manifest.at("layout"));
  std::vector<std::string> names;
  if (same_units(written, layout)) {
    for (int k : rank_readers(written, layout, rank)) names.push_back(rank_file_name(k));
  } else {
    for (int k = 0; k < written.world; ++k) names.push_back(rank_file_name(k));
  }
  if (rank == 0) {
    std::set<std::string> rank_files;
    for (int k = 0; k < written.world; ++k) rank_files.insert(rank_file_name(k));
    for (const auto& [name, digest] : manifest.at("files").items())
      if (!rank_files.count(name)) names.push_back(name);
  }
  return names;
}

std::optional<RankShards> load_rank_shards(const std::string& dir, const nlohmann::json& manifest,
                                           const FlatLayout& layout, int rank, const std::vector<std::string>& kinds,
                                           const c10::Device& device, bool verify) {
  const FlatLayout written = FlatLayout::from_json(manifest.at("layout"));
  if (!same_units(written, layout)) return std::nullopt;
  const int old_world = written.world, new_world = layout.world;
  // Unit u's elements this rank holds, [a, b), lie in the writers' shards [k * s_old, (k + 1) * s_old).
  auto range = [&](size_t u) { return rank_range(layout, u, rank); };
  const std::set<int> readers = rank_readers(written, layout, rank);
  if (verify) {
    std::vector<std::string> names;
    for (int k : readers) names.push_back(rank_file_name(k));
    verify_checkpoint_files(dir, manifest, names);
  }
  std::map<int, SafetensorsIndex> files;
  for (int k : readers) files[k] = index_safetensors((std::filesystem::path(dir) / rank_file_name(k)).string());

  RankShards out;
  for (const auto& kind : kinds)
    for (size_t u = 0; u < layout.units.size(); ++u) {
      const FlatUnit& unit = layout.units[u];
      const int64_t s_old = written.units[u].padded / old_world;
      const auto [a, b] = range(u);
      auto buf = torch::zeros({unit.padded / new_world}, torch::TensorOptions().dtype(at::kFloat));
      for (int64_t k = a / s_old; k * s_old < b; ++k) {
        const int64_t lo = std::max(a, k * s_old), hi = std::min(b, (k + 1) * s_old);
        buf.narrow(0, lo - a, hi - lo)
            .copy_(read_shard(files.at(static_cast<int>(k)), unit.name + "." + kind, s_old, lo - k * s_old, hi - lo));
      }
      out.buffers[kind].push_back(buf.to(device));
    }
  const SafetensorsIndex& states = files.at(rank % old_world);
  for (const auto& name : states.order)
    if (name.rfind("rng.", 0) == 0) out.rng[name.substr(4)] = read_tensor(states, name);
  return out;
}

at::Tensor load_rng_state(const std::string& dir, const nlohmann::json& manifest, int rank, const std::string& name) {
  const int world = manifest.at("world_size").get<int>();
  const auto path = (std::filesystem::path(dir) / rank_file_name(rank % world)).string();
  const SafetensorsIndex file = index_safetensors(path);
  auto it = file.tensors.find("rng." + name);
  if (it == file.tensors.end()) throw CheckpointError("'" + path + "' lacks the generator state 'rng." + name + "'");
  return read_tensor(file, "rng." + name);
}

}  // namespace nt
