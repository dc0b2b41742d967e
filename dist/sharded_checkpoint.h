// Sharded checkpoints (docs/checkpoint-format.md): each trainer rank writes its shards of every
// unit's flat buffers into rank_XXXXX.safetensors as "<unit>.<kind>" (kind: param, exp_avg,
// exp_avg_sq, ema) plus its generator states "rng.<name>"; the manifest records the flat layout
// by parameter name, so a checkpoint written by W ranks loads into any W'.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dist/flat_layout.h"

namespace nt {

std::string rank_file_name(int rank);  // "rank_00000.safetensors"

// Writes this rank's shards: `buffers[kind][u]` is the rank's shard of unit u ([padded / W]).
void save_rank_shards(const std::string& dir, int rank, const FlatLayout& layout,
                      const std::map<std::string, std::vector<at::Tensor>>& buffers,
                      const std::map<std::string, at::Tensor>& rng_states);

// Reassembles the full tensors of `kind` by parameter name from all rank files of a
// checkpoint folder whose manifest (already verified) holds "layout" and "world_size".
std::map<std::string, at::Tensor> load_full_tensors(const std::string& dir, const nlohmann::json& manifest,
                                                    const std::string& kind);
// The same for several kinds at once: kind -> name -> tensor. Only those kinds' tensors are read
// from the rank files (an evaluation reading "ema" reads a quarter of the checkpoint).
std::map<std::string, std::map<std::string, at::Tensor>> load_full_tensors(
    const std::string& dir, const nlohmann::json& manifest, const std::vector<std::string>& kinds);

// This rank's shards and generator states for `layout`, read straight from the byte ranges of
// the rank files that hold them, for a checkpoint whose units hold the same parameters at the same
// offsets (any world size: the layouts then differ only in padding and shard size). On the
// writer's W a rank reads its own file only; on another W the files whose shards overlap its own
// (about W/W' + 1 of them), and the generator states of rank `rank` mod W. With `verify` every
// file it reads is first checked against the manifest's SHA-256 (false: the caller checked
// resume_files already). Returns nullopt when the units differ (then reassemble by name:
// load_full_tensors, shard_from_full).
struct RankShards {
  std::map<std::string, std::vector<at::Tensor>> buffers;  // kind -> [unit] ([padded / W] each)
  std::map<std::string, at::Tensor> rng;                   // generator states by name
};
std::optional<RankShards> load_rank_shards(const std::string& dir, const nlohmann::json& manifest,
                                           const FlatLayout& layout, int rank, const std::vector<std::string>& kinds,
                                           const c10::Device& device, bool verify = true);

// The files of a checkpoint (its manifest) that rank `rank` of `layout` reads when it resumes:
// the rank files load_rank_shards reads, or every rank file when the units differ (reassembly by
// name); rank 0 also takes the listed files that are no rank file (config.toml). So the ranks
// check a checkpoint together, each file by the ranks that read it, none hashing all of it.
std::vector<std::string> resume_files(const nlohmann::json& manifest, const FlatLayout& layout, int rank);

// This rank's fp32 shards of `layout`'s units ([padded / W] each, the padding zeros), filled
// parameter by parameter: `elements(p, offset, count)` gives elements [offset, offset + count) of
// parameter p, flattened, in any floating dtype; only the elements in the rank's range are asked for.
std::vector<at::Tensor> shard_from_params(
    const FlatLayout& layout, int rank, const c10::Device& device,
    const std::function<at::Tensor(const FlatParam& p, int64_t offset, int64_t count)>& elements);

// Fills `layout`'s flat buffers (this rank's shards, [padded / W] each) from full tensors by
// parameter name; throws CheckpointError naming a missing or mis-shaped parameter.
std::vector<at::Tensor> shard_from_full(const std::map<std::string, at::Tensor>& full, const FlatLayout& layout,
                                        int rank, const c10::Device& device, const std::string& what);

// The generator state `name` this rank saved (a run resumed on another W takes rank r mod W).
at::Tensor load_rng_state(const std::string& dir, const nlohmann::json& manifest, int rank, const std::string& name);

}  // namespace nt
