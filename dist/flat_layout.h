// Flat parameter layout, FSDP-style: each transformer block is one unit ("blocks.{i}"), the
// embedders and final layer form the root unit ("root"). A unit's parameters live in one flat
// fp32 buffer, in named_parameters order, padded to a multiple of the world size W; rank r owns
// the contiguous shard [r*padded/W, (r+1)*padded/W). Checkpoints record this layout by
// parameter name, so they load into any W.
#pragma once
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace torch::nn { class Module; }

namespace nt {

struct FlatParam {
  std::string name;            // reference state_dict name
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
};

struct FlatUnit {
  std::string name;  // "root" or "blocks.{i}"
  std::vector<FlatParam> params;
  int64_t numel = 0;   // sum of the parameters
  int64_t padded = 0;  // numel rounded up to a multiple of W
  int64_t shard() const { return padded / world; }
  int world = 1;
};

struct FlatLayout {
  std::vector<FlatUnit> units;
  int world = 1;
  int64_t numel() const;  // all parameters, unpadded
  nlohmann::json to_json() const;
  static FlatLayout from_json(const nlohmann::json& j);
};

// "blocks.3.attn.qkv.weight" -> "blocks.3"; everything else -> "root".
std::string unit_of(const std::string& param_name);

// The layout of `model`'s trainable parameters (requires_grad) for W ranks.
FlatLayout make_layout(torch::nn::Module& model, int world);

// One fp32 buffer [padded] per unit holding the current parameter values of `model`.
std::vector<at::Tensor> gather_params(torch::nn::Module& model, const FlatLayout& layout);
// Makes each trainable parameter of `model` a view into its unit's buffer (same values); the
// parameters take the buffers' dtype (a bf16 buffer makes its parameters bf16).
void bind_params(torch::nn::Module& model, const FlatLayout& layout, std::vector<at::Tensor>& flat);
// Copies flat buffers into the parameters of `model` (e.g. EMA weights into a sampling model).
void load_flat(torch::nn::Module& model, const FlatLayout& layout, const std::vector<at::Tensor>& flat);
// The gradients of `model`'s parameters as one fp32 buffer [padded] per unit (zeros where a
// parameter has no gradient and in the padding).
std::vector<at::Tensor> gather_grads(torch::nn::Module& model, const FlatLayout& layout);
// Makes each trainable parameter's .grad a view into its unit's gradient buffer, so backward
// accumulates straight into the flat buffers (zero them before each backward, never set the
// gradients to none). Returns the buffers, one zeroed [padded] per unit in its parameters' dtype.
std::vector<at::Tensor> bind_grads(torch::nn::Module& model, const FlatLayout& layout);

}  // namespace nt
