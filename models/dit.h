// DiT with TREAD token routing, parameter for parameter the reference CompVis/tread `dit.py`:
// the state_dict names (x_embedder.proj.weight, blocks.{i}.attn.qkv.weight, ...) are the
// reference's, so safetensors files move between this project and PyTorch both ways.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"

namespace nt {

// Resolved sizes of a DiT (the zoo entry with the config's overrides applied).
struct DiTConfig {
  int input_size = 32;
  int in_channels = 4;
  int num_classes = 1000;  // 0 = unconditional (no y_embedder)
  int depth = 28;
  int hidden_size = 1152;
  int num_heads = 16;
  int patch_size = 2;
  double mlp_ratio = 4.0;
  bool adaln_zero = true;            // initialize_weights: zero adaLN and final linears (model.init)
  std::vector<RouteConfig> routes;  // enabled in training when non-empty

  int tokens() const { return (input_size / patch_size) * (input_size / patch_size); }
};

// This rank's rows of the global batch. Training randomness (sigma, noise, class dropout,
// routing) is drawn for the whole global batch from a generator that is the same on every rank,
// and each rank keeps its rows: W ranks then train exactly what one rank trains.
struct BatchSlice {
  int64_t offset = 0;  // first global row of this rank
  int64_t global = 0;  // global batch size; 0: the local batch is the whole batch
  int64_t rows(int64_t local) const { return global > 0 ? global : local; }
  at::Tensor take(const at::Tensor& drawn, int64_t local) const {
    return global > 0 ? drawn.narrow(0, offset, local) : drawn;
  }
};

// What a training forward keeps for backward (models/recompute.h): `none` keeps every
// intermediate tensor; `norm` keeps each LayerNorm + adaLN modulate's inputs, not its output,
// the input of the product it feeds (qkv, fc1, the final layer: models/modulated_linear.h), and
// computes it again in backward (one more elementwise pass each); `mlp` recomputes each MLP's
// GELU (keeps the first layer's output, which GELU keeps anyway, not the GELU's output, 4x the
// stream's width: one more elementwise pass, models/gelu_linear.h); `norm_mlp` both; `blocks`
// keeps only each transformer block's inputs and runs the whole block again in backward (about
// one more forward of the blocks). The numbers are the same in every mode.
enum class Recompute { none, norm, mlp, norm_mlp, blocks };
// "none" | "norm" | "mlp" | "norm+mlp" | "blocks"
Recompute parse_recompute(const std::string& name);
inline bool recomputes_norm(Recompute r) { return r == Recompute::norm || r == Recompute::norm_mlp; }
inline bool recomputes_mlp(Recompute r) { return r == Recompute::mlp || r == Recompute::norm_mlp; }

// How each transformer block (and the final layer) computes; training forwards only (grad mode
// on) for `recompute`.
struct BlockOptions {
  Recompute recompute = Recompute::none;
  // LayerNorm + modulate through the project's fused CUDA kernels (models/modulated_norm.h)
  // where they apply; LibTorch's ops elsewhere.
  bool fused_kernels = false;
  // Each MLP as one node with the GELU in its products' cuBLASLt epilogues (models/gelu_mlp.h)
  // where they apply; with `norm` recomputation the node takes the MLP's norm in as well.
  bool fused_mlp = false;
  // `recompute` applies to the transformer blocks 0 .. recompute_blocks - 1 only (and the final
  // layer); the later blocks keep every intermediate (Recompute::none). -1: every block. Memory
  // for compute block by block: e.g. the GELU outputs kept in as many blocks as memory allows.
  int recompute_blocks = -1;
};

// How one forward pass routes and conditions.
struct ForwardOptions {
  double class_drop_prob = 0.0;  // labels -> null class with this probability (rand < p)
  bool force_routing = false;    // route even in eval mode (TREAD-guided sampling)
  std::optional<double> selection_ratio;  // overrides every route's ratio when set
  // Randomness for class dropout and the router. `gen` serves the whole batch (training);
  // `sample_gens`, when non-empty, gives one generator per sample for the router so that a
  // sample's routing does not depend on its batch (sampling).
  at::Generator* gen = nullptr;
  std::vector<at::Generator>* sample_gens = nullptr;
  BatchSlice slice;  // which rows of the global batch's draws are this batch's
  // Called around each transformer block i (training with resharded parameters gathers a
  // block's parameters before it runs and frees them after): before_block(i), then
  // after_block(i, the block's output).
  std::function<void(int)> before_block;
  std::function<void(int, const at::Tensor&)> after_block;
  BlockOptions block;  // recomputation and fused ops of every block
};

// The blocks a routed (training) forward runs outside autocast, in fp32, as the reference does:
// the block right after each route's end. [depth]; training keeps their parameters fp32 whatever
// dist.param_dtype says.
std::vector<bool> fp32_blocks(const DiTConfig& cfg);

// adaLN modulation of normalised tokens: x * (1 + scale) + shift, per sample.
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);

// Embeds scalar timesteps: 256 sinusoidal frequencies (cos, then sin; max period 10000) -> MLP.
struct TimestepEmbedderImpl : torch::nn::Module {
  explicit TimestepEmbedderImpl(int hidden_size, int frequency_embedding_size = 256);
  static at::Tensor timestep_embedding(const at::Tensor& t, int dim, double max_period = 10000);
  at::Tensor forward(const at::Tensor& t);  // t [N] -> [N, D]
  torch::nn::Sequential mlp{nullptr};       // mlp.0 Linear(256, D), mlp.1 SiLU, mlp.2 Linear(D, D)
  int frequency_embedding_size;
};
TORCH_MODULE(TimestepEmbedder);

// Class labels -> vectors; the extra row `num_classes` is the null class of guidance.
struct LabelEmbedderImpl : torch::nn::Module {
  LabelEmbedderImpl(int num_classes, int hidden_size);
  at::Tensor forward(const at::Tensor& labels, double class_drop_prob, at::Generator* gen,
                     const BatchSlice& slice = {});
  torch::nn::Embedding embedding_table{nullptr};  // [num_classes + 1, D]
  int num_classes;
};
TORCH_MODULE(LabelEmbedder);

// Patch embedding: Conv2d(C, D, kernel = stride = p), tokens in row-major patch order. On CUDA
// the same map as one matrix product (as_product): the patches [N T, C p p] (each in the conv
// weight's (c, kh, kw) order) times the weight viewed as [D, C p p], the bias in the product's
// epilogue, giving [N, T, D] contiguous. The convolution gives [N, D, h, w], whose token-major
// view then costs cuDNN's layout kernels, a strided bias add, the strided pos_embed add and a copy
// to contiguous, and as much again in backward (DiT-XL/2 at batch 128 on the H200, fifteenth
// session's trace: about 0.8 ms forward and 0.5 ms backward per step). The same values to the
// products' rounding; the CPU keeps the convolution.
struct PatchEmbedImpl : torch::nn::Module {
  PatchEmbedImpl(int in_channels, int hidden_size, int patch_size);
  at::Tensor forward(const at::Tensor& x);         // [N,C,H,W] -> [N, T, D]
  at::Tensor as_convolution(const at::Tensor& x);  // [N, T, D], a transposed view
  at::Tensor as_product(const at::Tensor& x);      // [N, T, D], contiguous
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

// Multi-head self-attention with a fused qkv projection (timm's Attention, qkv_bias = True).
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int dim, int num_heads);
  at::Tensor forward(const at::Tensor& x);  // [N, T, D] -> [N, T, D]
  // After the qkv product: [N, T, 3D] -> [N, T, D]. `proj_bias_elsewhere`: proj takes its bias
  // detached (its gradient then comes from the residual the output goes to). `qkv_bias`: the
  // qkv product took this bias detached; its gradient comes from the split of qkv_out.
  at::Tensor attend(const at::Tensor& qkv_out, bool proj_bias_elsewhere = false, const at::Tensor& qkv_bias = {});
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  int num_heads;
};
TORCH_MODULE(Attention);

// fc1 -> tanh-GELU -> fc2 (timm's Mlp).
struct MlpImpl : torch::nn::Module {
  MlpImpl(int dim, int hidden);
  // With `recompute`, GELU runs again in backward instead of its output being kept; `fused`:
  // one node, the GELU in the products' epilogues where cuBLASLt serves (models/gelu_mlp.h).
  // `fc2_bias_elsewhere`: fc2 takes its bias detached (its gradient comes from the residual).
  at::Tensor forward(const at::Tensor& x, bool recompute = false, bool fused = false, bool fc2_bias_elsewhere = false);
  // After fc1: [N, T, hidden] -> [N, T, D].
  at::Tensor from_hidden(const at::Tensor& h, bool recompute = false, bool fc2_bias_elsewhere = false);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// A transformer block with adaLN-Zero conditioning (six modulation vectors).
struct DiTBlockImpl : torch::nn::Module {
  DiTBlockImpl(int hidden_size, int num_heads, double mlp_ratio);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c, const BlockOptions& opt = {});  // x [N,T,D], c [N,D]
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // .0 SiLU, .1 Linear(D, 6D)
  int hidden_size;
};
TORCH_MODULE(DiTBlock);

// LayerNorm + adaLN (shift, scale) + linear to patch_size^2 * C outputs.
struct FinalLayerImpl : torch::nn::Module {
  FinalLayerImpl(int hidden_size, int patch_size, int out_channels);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c, const BlockOptions& opt = {});  // [N,T,D] -> [N,T,p*p*C]
  torch::nn::Linear linear{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};  // .0 SiLU, .1 Linear(D, 2D)
  int hidden_size;
};
TORCH_MODULE(FinalLayer);

struct DiTImpl : torch::nn::Module {
  explicit DiTImpl(const DiTConfig& cfg);
  // x [N,C,H,W] float, t [N] or [1] (c_noise), y [N] int64 -> [N,C,H,W].
  // Routes apply when (is_training() and routes exist) or opt.force_routing.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y,
                     const ForwardOptions& opt = {});
  // Classifier-free guidance on the network output: uncond + s * (cond - uncond).
  at::Tensor forward_with_cfg(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y,
                              double cfg_scale, const ForwardOptions& opt = {});
  at::Tensor unpatchify(const at::Tensor& x);  // [N,T,p*p*C] -> [N,C,H,W]
  // xavier-uniform linears and patch projection, zero biases, N(0, 0.02) timestep-MLP and label
  // embeddings, sin-cos pos_embed; then, with cfg.adaln_zero, zero adaLN and final linears (the
  // DiT paper's adaLN-Zero). Without it the reference's: CompVis/tread's initialize_weights ends
  // with those linears xavier as well. The random draws are the same either way.
  void initialize_weights(at::Generator* gen = nullptr);

  DiTConfig cfg;
  PatchEmbed x_embedder{nullptr};
  TimestepEmbedder t_embedder{nullptr};
  LabelEmbedder y_embedder{nullptr};
  at::Tensor pos_embed;  // [1, T, D], fixed (requires_grad = false), saved like the reference
  torch::nn::ModuleList blocks{nullptr};
  FinalLayer final_layer{nullptr};
  std::vector<DiTBlock> block_list;
};
TORCH_MODULE(DiT);

// Fixed 2-D sin-cos position embedding [grid*grid, dim] (float64 maths, as the reference).
at::Tensor get_2d_sincos_pos_embed(int dim, int grid_size);

}  // namespace nt
