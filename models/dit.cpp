// DiT / TREAD forward pass and initialisation (see models/dit.h).
#include "models/dit.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "models/attention_backend.h"
#include "models/autocast.h"
#include "models/fp32_attention.h"
#include "models/fused_kernels.h"
#include "models/gelu_linear.h"
#include "models/gelu_mlp.h"
#include "models/linear_node.h"
#include "models/modulated_linear.h"
#include "models/modulated_norm.h"
#include "models/recompute.h"
#include "models/router.h"

namespace nt {
namespace F = torch::nn::functional;

// a + b * c. On CUDA one fused kernel (addcmul) instead of two; on the CPU two plain ones:
// addcmul's vectorised and scalar loops round differently (fused multiply-add), so a sample's
// value would depend on where it falls in the batch.
namespace {
at::Tensor add_mul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  return a.is_cuda() ? at::addcmul(a, b, c) : a + b * c;
}

// bias - bias.detach(), an exact zero in branch's dtype that carries bias's history: added to a
// branch whose product took its bias detached, the bias gets its gradient (grad branch summed
// over the rows, in branch's dtype) as from the product itself.
at::Tensor with_bias_history(const at::Tensor& branch, const at::Tensor& bias) {
  return branch + (bias - bias.detach()).to(branch.scalar_type());
}

// The gated residual x + gate * branch (x, branch [N, T, D], gate [N, D]): the fused kernel
// when asked for and it applies, else add_mul. `bias` (optional): the bias branch's product took
// detached (see fused_gated_residual), whose gradient comes from here.
at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& branch, bool fused,
                          const at::Tensor& bias = {}) {
  if (fused && fused_gated_residual_supports(x, gate, branch)) return fused_gated_residual(x, gate, branch, bias);
  return add_mul(x, gate.unsqueeze(1), bias.defined() ? with_bias_history(branch, bias) : branch);
}
}  // namespace

// x * (1 + scale) + shift.
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return add_mul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1));  // [N,T,D] with [N,1,D]
}

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::none;
  if (name == "norm") return Recompute::norm;
  if (name == "mlp") return Recompute::mlp;
  if (name == "norm+mlp") return Recompute::norm_mlp;
  if (name == "blocks") return Recompute::blocks;
  throw std::runtime_error("recompute must be \"none\", \"norm\", \"mlp\", \"norm+mlp\" or \"blocks\", got \"" + name +
                           "\"");
}


// ---------------------------------------------------------------------------------------
// Embedders

PatchEmbedImpl::PatchEmbedImpl(int in_channels, int hidden_size, int patch_size) {
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, hidden_size, patch_size)
                                    .stride(patch_size)
                                    .bias(true)));
}

at::Tensor PatchEmbedImpl::forward(const at::Tensor& x) { return x.is_cuda() ? as_product(x) : as_convolution(x); }

at::Tensor PatchEmbedImpl::as_convolution(const at::Tensor& x) {
  return proj->forward(x).flatten(2).transpose(1, 2);  // [N,D,h,w] -> [N, h*w, D]
}

at::Tensor PatchEmbedImpl::as_product(const at::Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), p = proj->weight.size(2), D = proj->weight.size(0);
  TORCH_CHECK(x.size(2) % p == 0 && x.size(3) % p == 0, "patch embedding: ", x.size(2), "x", x.size(3),
              " is not a multiple of the patch size ", p);
  const int64_t h = x.size(2) / p, w = x.size(3) / p;
  const at::Tensor patches =
      x.reshape({N, C, h, p, w, p}).permute({0, 2, 4, 1, 3, 5}).reshape({N * h * w, C * p * p});  // [N T, C p p]
  return at::addmm(proj->bias, patches, proj->weight.reshape({D, C * p * p}).t()).view({N, h * w, D});
}

TimestepEmbedderImpl::TimestepEmbedderImpl(int hidden_size, int freq)
    : frequency_embedding_size(freq) {
  mlp = register_module("mlp", torch::nn::Sequential(
                                   torch::nn::Linear(freq, hidden_size), torch::nn::SiLU(),
                                   torch::nn::Linear(hidden_size, hidden_size)));
}

at::Tensor TimestepEmbedderImpl::timestep_embedding(const at::Tensor& t, int dim, double max_period) {
  const int half = dim / 2;
  // On the CPU, then moved, as the reference computes them.
  const auto freqs = to_device_async(
      at::exp(-std::log(max_period) * at::arange(0, half, at::TensorOptions().dtype(at::kFloat)) / half),
      t.device());  // [half]
  auto args = t.unsqueeze(1).to(at::kFloat) * freqs.unsqueeze(0);  // [N, half]
  auto emb = at::cat({at::cos(args), at::sin(args)}, -1);    // [N, 2*half]
  if (dim % 2) emb = at::cat({emb, at::zeros_like(emb.narrow(1, 0, 1))}, -1);
  return emb;
}

at::Tensor TimestepEmbedderImpl::forward(const at::Tensor& t) {
  return mlp->forward(timestep_embedding(t, frequency_embedding_size));  // [N, D]
}

LabelEmbedderImpl::LabelEmbedderImpl(int num_classes, int hidden_size) : num_classes(num_classes) {
  embedding_table = register_module("embedding_table", torch::nn::Embedding(num_classes + 1, hidden_size));
}

at::Tensor LabelEmbedderImpl::forward(const at::Tensor& labels, double class_drop_prob, at::Generator* gen,
                                      const BatchSlice& slice) {
  TORCH_CHECK(labels.dim() == 1, "labels must be [N], got ", labels.sizes());
  at::Tensor y = labels;
  const int64_t n = labels.size(0), rows = slice.rows(n);
  if (class_drop_prob >= 1.0) {  // rand < 1 always holds: every label dropped
    // In training the reference draws rand(N) all the same (token_drop), and the routing draws
    // follow it in the stream: the same draw, discarded. Sampling's unconditional passes (eval)
    // draw nothing, as before: their generators are the seeds' own.
    if (gen && is_training()) at::rand({rows}, *gen, at::TensorOptions().dtype(at::kFloat).device(gen->device()));
    y = at::full_like(labels, num_classes);
  } else if (class_drop_prob > 0) {
    auto opts = at::TensorOptions().dtype(at::kFloat).device(labels.device());
    auto r = slice.take(gen ? to_device_async(at::rand({rows}, *gen, opts.device(gen->device())), labels.device())
                            : at::rand({rows}, opts),
                        n);  // [N], drawn on the generator's device
    y = at::where(r < class_drop_prob, at::full_like(labels, num_classes), labels);
  }
  return embedding_table->forward(y);  // [N, D]
}

// ---------------------------------------------------------------------------------------
// Transformer block

namespace {
// m's bias, detached where its gradient comes from elsewhere (the residual after m's product).
at::Tensor bias_of(const torch::nn::Linear& m, bool elsewhere) { return elsewhere ? m->bias.detach() : m->bias; }
// y = x W^T + b as PyTorch's nn.Linear computes it: at::linear flattens a contiguous input of
// more than two dims and puts the bias into the product (addmm: on CUDA, the GEMM's epilogue).
// torch::nn::Linear's own forward (torch::nn::functional::linear) runs a matmul and then a
// separate bias add over the whole output for such inputs. On CUDA its weight gradient takes the
// form models/product_forms.h picks (models/linear_node.h). `bias_elsewhere`: b detached (the
// same values; its gradient then comes from the residual after the product).
at::Tensor linear(const torch::nn::Linear& m, const at::Tensor& x, bool bias_elsewhere = false) {
  return linear_node(x, m->weight, bias_of(m, bias_elsewhere));
}
}  // namespace

AttentionImpl::AttentionImpl(int dim, int num_heads) : num_heads(num_heads) {
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(true)));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x) { return attend(linear(qkv, x)); }

at::Tensor AttentionImpl::attend(const at::Tensor& qkv_out, bool proj_bias_elsewhere, const at::Tensor& qkv_bias) {
  const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3, hd = D / num_heads;
  // train.attention = "fused" (bf16) or train.fp32_attention = "fused" (fp32: TREAD's block after a
  // route): the project's kernels read q, k, v in place and return [N, T, D]; their backward writes
  // qkv's gradient (and the bias's) itself.
  const bool fused = qkv_out.scalar_type() == at::kFloat ? fp32_attention_kind() == Fp32AttentionKind::fused
                                                          : fused_attention_chosen();
  if (fused && fused_attention_supports(qkv_out, num_heads))
    return linear(proj, fused_attention(qkv_out, qkv_bias, num_heads), proj_bias_elsewhere);
  // q, k, v as strided views of the product: unbind on the token-major layout, then each
  // transposed. Backward then stacks the three gradients straight into qkv's own layout
  // [N, T, 3, H, hd] (one copy; three selects would each fill a zero tensor and add, and unbind
  // on a permuted [3, N, H, T, hd] would stack, then copy again to undo the permutation). With
  // `qkv_bias` (the product took it detached) the fused op does that stack and forms the bias's
  // gradient in the same pass; where it does not apply, the bias gets its gradient through the
  // output as from the product itself.
  std::vector<at::Tensor> qkv_parts;  // q, k, v [N, H, T, hd]
  if (qkv_bias.defined() && fused_qkv_split_supports(qkv_out, num_heads)) {
    qkv_parts = fused_qkv_split(qkv_out, qkv_bias, num_heads);
  } else {
    qkv_parts = qkv_views(qkv_bias.defined() ? with_bias_history(qkv_out, qkv_bias) : qkv_out, num_heads);
  }
  const at::Tensor &q = qkv_parts[0], &k = qkv_parts[1], &v = qkv_parts[2];
  at::Tensor o;
#if TORCH_VERSION_MAJOR >= 2
  // fp32 on CUDA (TREAD's block after a route): products without TF32 (models/fp32_attention.h).
  if (q.is_cuda() && q.scalar_type() == at::kFloat && fp32_attention_kind() != Fp32AttentionKind::sdpa)
    o = fp32_attention(q, k, v);
  else
    o = at::scaled_dot_product_attention(q, k, v);
#else
  auto attn = at::softmax(at::matmul(q * std::pow(static_cast<double>(hd), -0.5), k.transpose(-2, -1)), -1);
  o = at::matmul(attn, v);  // [N, H, T, hd]
#endif
  return linear(proj, o.transpose(1, 2).reshape({N, T, D}), proj_bias_elsewhere);  // [N, T, D]
}

MlpImpl::MlpImpl(int dim, int hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
}

at::Tensor MlpImpl::forward(const at::Tensor& x, bool recompute, bool fused, bool fc2_bias_elsewhere) {  // x [N, T, D]
  if (fused)
    return gelu_mlp(x, fc1->weight, fc1->bias, fc2->weight, bias_of(fc2, fc2_bias_elsewhere), recompute);
  return from_hidden(linear(fc1, x), recompute, fc2_bias_elsewhere);
}

at::Tensor MlpImpl::from_hidden(const at::Tensor& h, bool recompute, bool fc2_bias_elsewhere) {  // h [N, T, hidden]
  if (recompute) return gelu_linear(h, fc2->weight, bias_of(fc2, fc2_bias_elsewhere));
  return linear(fc2, at::gelu(h, "tanh"), fc2_bias_elsewhere);  // [N, T, D]
}

DiTBlockImpl::DiTBlockImpl(int hidden_size, int num_heads, double mlp_ratio) : hidden_size(hidden_size) {
  attn = register_module("attn", Attention(hidden_size, num_heads));
  mlp = register_module("mlp", Mlp(hidden_size, static_cast<int>(hidden_size * mlp_ratio)));
  adaLN_modulation = register_module(
      "adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(hidden_size, 6 * hidden_size)));
}

at::Tensor DiTBlockImpl::forward(const at::Tensor& x, const at::Tensor& c, const BlockOptions& opt) {
  if (opt.recompute == Recompute::blocks) {
    BlockOptions inner = opt;
    inner.recompute = Recompute::none;
    return nt::recompute([this, inner](const std::vector<at::Tensor>& in) { return forward(in[0], in[1], inner); },
                         {x, c}, parameters());
  }
  const bool norm = recomputes_norm(opt.recompute), fused = opt.fused_kernels;
  // With the fused kernels, proj's and fc2's bias gradients come from the residuals' backward
  // kernels (which form grad branch anyway), not from reductions of their own.
  const bool bias_elsewhere = fused && x.is_cuda() && fused_kernels_built();
  // adaLN's Linear through linear_node (torch::nn::Linear's op on the CPU; on CUDA its weight
  // gradient may go straight into the gradient buffer, models/linear_backward.h).
  auto* ada = adaLN_modulation[1]->as<torch::nn::Linear>();
  auto mod = linear_node(at::silu(c), ada->weight, ada->bias).chunk(6, 1);  // 6 x [N, D]
  const auto &shift_msa = mod[0], &scale_msa = mod[1], &gate_msa = mod[2];
  const auto &shift_mlp = mod[3], &scale_mlp = mod[4], &gate_mlp = mod[5];
  // Gated residuals x + gate * f(x). With `norm`, each branch's first product takes the norm's
  // inputs (its normalised input is computed again in backward, not kept).
  auto& qkv = attn->qkv;
  auto& fc1 = mlp->fc1;
  // So is qkv's, from the split of its output into q, k, v (fused_qkv_split).
  const at::Tensor qkv_bias = bias_elsewhere ? qkv->bias : at::Tensor();
  at::Tensor x_res = x;  // x as the residual takes it
  at::Tensor a;          // the attention branch [N, T, D]
  if (norm) {
    a = attn->attend(modulated_linear(x, shift_msa, scale_msa, qkv->weight, bias_of(qkv, bias_elsewhere), fused),
                     bias_elsewhere, qkv_bias);
  } else if (fused && fused_modulated_norm_supports(x, shift_msa, scale_msa)) {
    // The norm hands x on to the residual: x's two gradients meet in the norm's backward kernel.
    auto yx = fused_modulated_norm_passing(x, shift_msa, scale_msa, kModulatedNormEps, cuda_autocast_enabled());
    x_res = yx[1];
    a = attn->attend(linear(qkv, yx[0], bias_elsewhere), bias_elsewhere, qkv_bias);
  } else {
    a = attn->attend(linear(qkv, modulated_norm(x, shift_msa, scale_msa, fused), bias_elsewhere), bias_elsewhere,
                     qkv_bias);
  }
  const at::Tensor proj_bias = bias_elsewhere ? attn->proj->bias : at::Tensor();
  at::Tensor h, n;  // the stream after attention; the MLP's normalised input
  if (!norm && fused && fused_residual_norm_supports(x_res, gate_msa, a, shift_mlp, scale_mlp)) {
    // The residual and the MLP's norm in one pass each way (their gradients meet in the kernel).
    auto hn = fused_residual_norm(x_res, gate_msa, a, shift_mlp, scale_mlp, kModulatedNormEps, cuda_autocast_enabled(),
                                  proj_bias);
    h = hn[0];
    n = hn[1];
  } else {
    h = gated_residual(x_res, gate_msa, a, fused, proj_bias);
    if (!norm) n = modulated_norm(h, shift_mlp, scale_mlp, fused);
  }
  const bool gelu_again = recomputes_mlp(opt.recompute);
  auto& fc2 = mlp->fc2;
  at::Tensor f;  // [N, T, D]
  if (!norm)
    f = mlp->forward(n, gelu_again, opt.fused_mlp, bias_elsewhere);
  else if (opt.fused_mlp)
    f = modulated_gelu_mlp(h, shift_mlp, scale_mlp, fused, fc1->weight, fc1->bias, fc2->weight,
                           bias_of(fc2, bias_elsewhere), gelu_again);
  else
    f = mlp->from_hidden(modulated_linear(h, shift_mlp, scale_mlp, fc1->weight, fc1->bias, fused), gelu_again,
                         bias_elsewhere);
  return gated_residual(h, gate_mlp, f, fused, bias_elsewhere ? fc2->bias : at::Tensor());
}

FinalLayerImpl::FinalLayerImpl(int hidden_size, int patch_size, int out_channels) : hidden_size(hidden_size) {
  linear = register_module("linear", torch::nn::Linear(hidden_size, patch_size * patch_size * out_channels));
  adaLN_modulation = register_module(
      "adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(hidden_size, 2 * hidden_size)));
}

at::Tensor FinalLayerImpl::forward(const at::Tensor& x, const at::Tensor& c, const BlockOptions& opt) {
  auto mod = adaLN_modulation->forward(c).chunk(2, 1);  // shift, scale: [N, D]
  const bool norm = opt.recompute == Recompute::blocks || recomputes_norm(opt.recompute), fused = opt.fused_kernels;
  return norm ? modulated_linear(x, mod[0], mod[1], linear->weight, linear->bias, fused)
              : nt::linear(linear, modulated_norm(x, mod[0], mod[1], fused));
}

// ---------------------------------------------------------------------------------------
// DiT

DiTImpl::DiTImpl(const DiTConfig& c) : cfg(c) {
  TORCH_CHECK(cfg.input_size % cfg.patch_size == 0, "model.input_size ", cfg.input_size,
              " is not a multiple of the patch size ", cfg.patch_size);
  TORCH_CHECK(cfg.hidden_size % cfg.num_heads == 0, "hidden_size ", cfg.hidden_size,
              " is not a multiple of num_heads ", cfg.num_heads);
  x_embedder = register_module("x_embedder", PatchEmbed(cfg.in_channels, cfg.hidden_size, cfg.patch_size));
  t_embedder = register_module("t_embedder", TimestepEmbedder(cfg.hidden_size));
  if (cfg.num_classes > 0)
    y_embedder = register_module("y_embedder", LabelEmbedder(cfg.num_classes, cfg.hidden_size));
  pos_embed = register_parameter("pos_embed", torch::zeros({1, cfg.tokens(), cfg.hidden_size}),
                                 /*requires_grad=*/false);
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < cfg.depth; ++i) {
    block_list.push_back(DiTBlock(cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio));
    blocks->push_back(block_list.back());
  }
  final_layer = register_module("final_layer", FinalLayer(cfg.hidden_size, cfg.patch_size, cfg.in_channels));
  initialize_weights();
}

at::Tensor get_2d_sincos_pos_embed(int dim, int grid_size) {
  TORCH_CHECK(dim % 4 == 0, "sin-cos position embedding needs hidden_size % 4 == 0, got ", dim);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto omega = at::arange(dim / 4, f64) / (dim / 4.0);  // per half: arange(D/4) / (D/4)
  omega = 1.0 / at::pow(10000.0, omega);  // [D/4]
  auto g = at::arange(grid_size, f64);
  auto rows = g.repeat_interleave(grid_size);  // token k = i*G + j -> i
  auto cols = g.repeat({grid_size});           // -> j
  auto embed_1d = [&](const at::Tensor& pos) {  // [M] -> [M, D/2]: sin | cos
    auto out = pos.unsqueeze(1) * omega.unsqueeze(0);
    return at::cat({at::sin(out), at::cos(out)}, 1);
  };
  // The reference meshgrid puts the column (w) coordinate first.
  return at::cat({embed_1d(cols), embed_1d(rows)}, 1);  // [G*G, D] float64
}

void DiTImpl::initialize_weights(at::Generator* gen) {
  torch::NoGradGuard no_grad;
  auto xavier = [&](at::Tensor w2d) {  // w2d [out, in] view
    const double fan_in = w2d.size(1), fan_out = w2d.size(0);
    const double a = std::sqrt(6.0 / (fan_in + fan_out));
    if (gen) w2d.uniform_(-a, a, *gen); else w2d.uniform_(-a, a);
  };
  auto normal = [&](at::Tensor w, double std) {
    if (gen) w.normal_(0, std, *gen); else w.normal_(0, std);
  };
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      xavier(lin->weight);
      lin->bias.zero_();
    }
  }
  auto w = x_embedder->proj->weight;
  xavier(w.view({w.size(0), -1}));
  x_embedder->proj->bias.zero_();
  if (y_embedder) normal(y_embedder->embedding_table->weight, 0.02);
  normal(t_embedder->mlp[0]->as<torch::nn::Linear>()->weight, 0.02);
  normal(t_embedder->mlp[2]->as<torch::nn::Linear>()->weight, 0.02);
  if (cfg.adaln_zero) {  // adaLN-Zero; the reference (CompVis/tread) keeps the xavier draws above
    for (auto& b : block_list) {
      auto* lin = b->adaLN_modulation[1]->as<torch::nn::Linear>();
      lin->weight.zero_();
      lin->bias.zero_();
    }
    auto* fl = final_layer->adaLN_modulation[1]->as<torch::nn::Linear>();
    fl->weight.zero_();
    fl->bias.zero_();
    final_layer->linear->weight.zero_();
    final_layer->linear->bias.zero_();
  }
  pos_embed.copy_(get_2d_sincos_pos_embed(cfg.hidden_size, cfg.input_size / cfg.patch_size)
                      .to(at::kFloat).unsqueeze(0));
}

std::vector<bool> fp32_blocks(const DiTConfig& cfg) {
  std::vector<bool> out(static_cast<size_t>(std::max(cfg.depth, 0)), false);
  for (const auto& route : cfg.routes)
    if (route.end_layer + 1 < cfg.depth) out[static_cast<size_t>(route.end_layer + 1)] = true;
  return out;
}

at::Tensor DiTImpl::unpatchify(const at::Tensor& x) {
  const int64_t N = x.size(0), p = cfg.patch_size, c = cfg.in_channels;
  const int64_t h = cfg.input_size / p;
  TORCH_CHECK(x.size(1) == h * h, "unpatchify: ", x.size(1), " tokens, expected ", h * h);
  return x.reshape({N, h, h, p, p, c})
      .permute({0, 5, 1, 3, 2, 4})  // nhwpqc -> nchpwq
      .reshape({N, c, h * p, h * p});
}

at::Tensor DiTImpl::forward(const at::Tensor& x_in, const at::Tensor& t_in, const at::Tensor& y,
                            const ForwardOptions& opt) {
  // [N, T, D], made contiguous once: the embedder's output is a transposed view, and every
  // elementwise op of the residual stream would otherwise keep that layout (the LayerNorms
  // copying it, the adds running unvectorised), in forward and backward. Same values.
  auto x = (x_embedder->forward(x_in) + pos_embed).contiguous();
  auto c = t_embedder->forward(t_in);              // [N or 1, D]
  if (y_embedder) c = c + y_embedder->forward(y, opt.class_drop_prob, opt.gen, opt.slice);  // [N, D]
  if (c.size(0) != x.size(0)) c = c.expand({x.size(0), -1});

  const bool routing = !cfg.routes.empty() && (is_training() || opt.force_routing);
  at::Tensor x_T = x;  // tokens after the embedder, for the nano variant's route-end mixing
  at::Tensor x_D_last, ids_keep;
  size_t r = 0;
  bool fp32_next = false;  // the block after a route ends runs outside autocast
  for (int idx = 0; idx < cfg.depth; ++idx) {
    const RouteConfig* route = routing && r < cfg.routes.size() ? &cfg.routes[r] : nullptr;
    if (route && idx == route->start_layer) {
      x_D_last = x;
      ids_keep = route_keep_ids(x, opt.selection_ratio.value_or(route->selection_ratio), opt.gen,
                                opt.sample_gens, opt.slice);
      x = route_start(x, ids_keep);  // [N, K, D]
    }
    if (opt.before_block) opt.before_block(idx);
    BlockOptions block_opt = opt.block;
    if (block_opt.recompute_blocks >= 0 && idx >= block_opt.recompute_blocks) block_opt.recompute = Recompute::none;
    if (fp32_next && cuda_autocast_enabled()) {
      set_cuda_autocast_flag(false);
      x = block_list[idx]->forward(x.to(at::kFloat), c.to(at::kFloat), block_opt);
      set_cuda_autocast_flag(true);
    } else {
      x = block_list[idx]->forward(x, c, block_opt);
    }
    if (opt.after_block) opt.after_block(idx, x);
    fp32_next = false;
    if (route && idx == route->end_layer) {
      at::Tensor original = x_D_last;
      if (route->x_T != 0.0 || route->x_D_last != 1.0)
        original = x_T * route->x_T + x_D_last * route->x_D_last;
      x = route_end(x, ids_keep, original);  // [N, T, D]
      fp32_next = true;
      ++r;
    }
  }
  return unpatchify(final_layer->forward(x, c, opt.block));
}

at::Tensor DiTImpl::forward_with_cfg(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y,
                                     double cfg_scale, const ForwardOptions& opt) {
  ForwardOptions cond = opt, uncond = opt;
  cond.class_drop_prob = 0.0;
  uncond.class_drop_prob = 1.0;  // rand < 1 always: every label becomes the null class
  auto cond_out = forward(x, t, y, cond);
  auto uncond_out = forward(x, t, y, uncond);
  return uncond_out + cfg_scale * (cond_out - uncond_out);
}

}  // namespace nt
