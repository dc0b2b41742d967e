// KL-VAE of latent diffusion (the LDM `AutoencoderKL`, e.g. Stable Diffusion's sd-vae-ft-ema):
// the encoder turns images into a diagonal Gaussian over latents (moments = mean || logvar),
// the decoder turns latents back into images. The semantics are CompVis/latent-diffusion's
// ldm/modules/diffusionmodules/model.py (Encoder, Decoder, ResnetBlock, AttnBlock, Upsample,
// Downsample) with attn_resolutions = [] and dropout 0, as the nano reference's
// `autoencoder.get_model` builds it, and ldm/models/autoencoder.py (quant_conv, post_quant_conv):
//   Normalize   = GroupNorm(32 groups, eps 1e-6, affine); nonlinearity = swish x*sigmoid(x)
//   ResnetBlock = x' + conv2(swish(norm2(conv1(swish(norm1(x)))))), x' = nin_shortcut(x) (1x1
//                 conv) when the channel count changes, else x
//   AttnBlock   = x + proj_out(softmax(q^T k / sqrt(C)) applied to v), q/k/v/proj_out 1x1 convs
//   Downsample  = pad (0,1,0,1) with zeros, conv 3x3 stride 2;  Upsample = nearest x2, conv 3x3
// The modules carry the LDM parameter names (encoder.down.0.block.0.conv1.weight, ...,
// decoder.up.3.upsample.conv.weight, quant_conv.weight); load_vae also reads the diffusers
// names and maps them.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>

#include <string>
#include <vector>

namespace nt {

// The sizes of an AutoencoderKL; the defaults are sd-vae-ft-ema's (the nano reference's
// ddconfig: ch 128, ch_mult 1,2,4,4, 2 res blocks, z 4, embed_dim 4, 256 px -> 32x32x4).
struct VaeConfig {
  int in_channels = 3;                // image channels (in and out)
  int ch = 128;                       // base width; level i has ch * ch_mult[i] channels
  std::vector<int> ch_mult{1, 2, 4, 4};
  int num_res_blocks = 2;             // per encoder level (the decoder has one more)
  int z_channels = 4;                 // latent channels (= embed_dim)
  double scale_factor = 0.18215;      // diffusion latents are scale_factor * z

  // Spatial down-sampling factor f = 2^(levels - 1): 8 for the default.
  int factor() const { return 1 << (static_cast<int>(ch_mult.size()) - 1); }
};

// ResnetBlock without time embedding (temb_channels = 0).
struct VaeResnetBlockImpl : torch::nn::Module {
  VaeResnetBlockImpl(int in_channels, int out_channels);
  at::Tensor forward(const at::Tensor& x);  // [N,Cin,H,W] -> [N,Cout,H,W]
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Conv2d nin_shortcut{nullptr};  // 1x1, only when Cin != Cout
};
TORCH_MODULE(VaeResnetBlock);

// Single-head self-attention over the H*W positions, with 1x1-conv projections.
struct VaeAttnBlockImpl : torch::nn::Module {
  explicit VaeAttnBlockImpl(int channels);
  at::Tensor forward(const at::Tensor& x);  // [N,C,H,W] -> [N,C,H,W]
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(VaeAttnBlock);

// The middle of encoder and decoder: block_1, attn_1, block_2 at the lowest resolution.
struct VaeMidImpl : torch::nn::Module {
  explicit VaeMidImpl(int channels);
  at::Tensor forward(const at::Tensor& x);
  VaeResnetBlock block_1{nullptr}, block_2{nullptr};
  VaeAttnBlock attn_1{nullptr};
};
TORCH_MODULE(VaeMid);

// Downsample: zero pad right/bottom by one, conv 3x3 stride 2 ([N,C,H,W] -> [N,C,H/2,W/2]).
struct VaeDownsampleImpl : torch::nn::Module {
  explicit VaeDownsampleImpl(int channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(VaeDownsample);

// Upsample: nearest x2, conv 3x3 ([N,C,H,W] -> [N,C,2H,2W]).
struct VaeUpsampleImpl : torch::nn::Module {
  explicit VaeUpsampleImpl(int channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(VaeUpsample);

// One resolution level: `block` resnet blocks, then (not at the last level) a resampler named
// `downsample` (encoder) or `upsample` (decoder).
struct VaeLevelImpl : torch::nn::Module {
  torch::nn::ModuleList block{nullptr};
  VaeDownsample downsample{nullptr};
  VaeUpsample upsample{nullptr};
};
TORCH_MODULE(VaeLevel);

// images [N,in,H,W] -> [N, 2*z, H/f, W/f] (before quant_conv).
struct VaeEncoderImpl : torch::nn::Module {
  explicit VaeEncoderImpl(const VaeConfig& cfg);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr};  // VaeLevel per level, highest resolution first
  VaeMid mid{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(VaeEncoder);

// z [N,z,h,w] (after post_quant_conv) -> images [N,in,f*h,f*w].
struct VaeDecoderImpl : torch::nn::Module {
  explicit VaeDecoderImpl(const VaeConfig& cfg);
  at::Tensor forward(const at::Tensor& z);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  VaeMid mid{nullptr};
  torch::nn::ModuleList up{nullptr};  // VaeLevel per level, index = level (run last to first)
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(VaeDecoder);

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const VaeConfig& cfg = {});

  // images [N,3,H,W] in [-1,1] -> moments [N, 2*z, H/f, W/f] (mean || logvar, logvar clamped
  // to [-30,20]), f = 2^(len(ch_mult)-1); H and W must be multiples of f.
  at::Tensor encode_moments(const at::Tensor& images);
  // z [N,z,h,w] (unscaled VAE latents, i.e. already divided by scale_factor) -> images
  // [N,3,f*h,f*w], roughly in [-1,1].
  at::Tensor decode(const at::Tensor& z);

  VaeConfig cfg;
  VaeEncoder encoder{nullptr};
  VaeDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr};       // 1x1, 2z -> 2z
  torch::nn::Conv2d post_quant_conv{nullptr};  // 1x1, z -> z
};
TORCH_MODULE(AutoencoderKL);

// The LDM name of a parameter given in diffusers' AutoencoderKL naming (levels = the number
// of resolution levels, len(ch_mult)); names already in LDM form come back unchanged. E.g.
//   decoder.up_blocks.0.resnets.1.conv_shortcut.weight -> decoder.up.3.block.1.nin_shortcut.weight
//   encoder.mid_block.attentions.0.to_out.0.weight     -> encoder.mid.attn_1.proj_out.weight
//   (older diffusers: query/key/value/proj_attn = to_q/to_k/to_v/to_out.0 = q/k/v/proj_out)
std::string vae_ldm_name(const std::string& name, int levels);

// Loads weights in LDM names (encoder.down.0.block.0.conv1.weight, ...; a whole LDM checkpoint
// with the `first_stage_model.` prefix is accepted, its other tensors ignored) or diffusers
// names (sd-vae-ft-ema's diffusion_pytorch_model.safetensors). Tensors outside encoder.*,
// decoder.*, quant_conv.* and post_quant_conv.* (loss.* of VAE training: LPIPS and the
// discriminator; model_ema.*) are ignored. Strict: every parameter present with its shape
// (diffusers' [C,C] linear attention weights stand for the [C,C,1,1] 1x1 convs), no unknown
// tensor inside those parts (e.g. a level the config lacks); otherwise std::runtime_error
// naming the file and the tensor. Any float dtype is converted to
// float32. The model is returned in eval mode on `device`, without gradients.
AutoencoderKL load_vae(const std::string& path, const c10::Device& device,
                       const VaeConfig& cfg = {});

}  // namespace nt
