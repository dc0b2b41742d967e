// KL-VAE encoder and decoder, weights loading with LDM or diffusers names (see models/vae.h).
#include "models/vae.h"

#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/safetensors.h"

namespace nt {
namespace F = torch::nn::functional;

namespace {

torch::nn::GroupNorm normalize(int channels) {  // LDM's Normalize
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-6).affine(true));
}

torch::nn::Conv2d conv(int in, int out, int kernel, int stride = 1, int padding = 0) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(true));
}

at::Tensor swish(const at::Tensor& x) { return at::silu(x); }  // x * sigmoid(x)

void check_channels(int channels, const char* what) {
  if (channels <= 0 || channels % 32 != 0)
    throw std::runtime_error(std::string("VAE: ") + what + " has " + std::to_string(channels) +
                             " channels; GroupNorm(32) needs a positive multiple of 32");
}

std::string shape_text(at::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

std::string config_text(const VaeConfig& c) {
  std::ostringstream o;
  o << "ch " << c.ch << ", ch_mult ";
  for (size_t i = 0; i < c.ch_mult.size(); ++i) o << (i ? "," : "") << c.ch_mult[i];
  o << ", " << c.num_res_blocks << " res blocks, z " << c.z_channels;
  return o.str();
}

bool starts_with(const std::string& s, const std::string& head) {
  return s.compare(0, head.size(), head) == 0;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t from = 0) {
  std::string s;
  for (size_t i = from; i < parts.size(); ++i) s += (i > from ? "." : "") + parts[i];
  return s;
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 6 && s.find_first_not_of("0123456789") == std::string::npos;
}

// The rest of a resnet parameter name: diffusers' conv_shortcut is LDM's nin_shortcut.
std::string resnet_rest(const std::vector<std::string>& p, size_t from) {
  std::vector<std::string> rest(p.begin() + from, p.end());
  if (!rest.empty() && rest[0] == "conv_shortcut") rest[0] = "nin_shortcut";
  return join(rest);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The weight of a q/k/v/proj_out 1x1 conv of a mid attention block (a Linear in diffusers).
bool is_attn_projection(const std::string& ldm) {
  for (const char* t : {".mid.attn_1.q.weight", ".mid.attn_1.k.weight", ".mid.attn_1.v.weight",
                        ".mid.attn_1.proj_out.weight"})
    if (ends_with(ldm, t)) return true;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Blocks

VaeResnetBlockImpl::VaeResnetBlockImpl(int in_channels, int out_channels) {
  check_channels(in_channels, "a resnet block's input");
  check_channels(out_channels, "a resnet block's output");
  norm1 = register_module("norm1", normalize(in_channels));
  conv1 = register_module("conv1", conv(in_channels, out_channels, 3, 1, 1));
  norm2 = register_module("norm2", normalize(out_channels));
  conv2 = register_module("conv2", conv(out_channels, out_channels, 3, 1, 1));
  if (in_channels != out_channels)
    nin_shortcut = register_module("nin_shortcut", conv(in_channels, out_channels, 1));
}

at::Tensor VaeResnetBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv1(swish(norm1(x)));           // [N,Cout,H,W]
  h = conv2(swish(norm2(h)));                      // [N,Cout,H,W]
  return (nin_shortcut ? nin_shortcut(x) : x) + h;  // [N,Cout,H,W]
}

VaeAttnBlockImpl::VaeAttnBlockImpl(int channels) {
  check_channels(channels, "the attention block");
  norm = register_module("norm", normalize(channels));
  q = register_module("q", conv(channels, channels, 1));
  k = register_module("k", conv(channels, channels, 1));
  v = register_module("v", conv(channels, channels, 1));
  proj_out = register_module("proj_out", conv(channels, channels, 1));
}

at::Tensor VaeAttnBlockImpl::forward(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3);
  at::Tensor h = norm(x);                                      // [N,C,H,W]
  at::Tensor qs = q(h).reshape({n, c, hh * ww}).permute({0, 2, 1});  // [N,HW,C]
  at::Tensor ks = k(h).reshape({n, c, hh * ww});               // [N,C,HW]
  at::Tensor vs = v(h).reshape({n, c, hh * ww});               // [N,C,HW]
  at::Tensor w = at::bmm(qs, ks) * std::pow(double(c), -0.5);  // [N,HW(q),HW(k)]
  w = at::softmax(w, 2);
  h = at::bmm(vs, w.permute({0, 2, 1})).reshape({n, c, hh, ww});  // [N,C,H,W]
  return x + proj_out(h);
}

VaeMidImpl::VaeMidImpl(int channels) {
  block_1 = register_module("block_1", VaeResnetBlock(channels, channels));
  attn_1 = register_module("attn_1", VaeAttnBlock(channels));
  block_2 = register_module("block_2", VaeResnetBlock(channels, channels));
}

at::Tensor VaeMidImpl::forward(const at::Tensor& x) {
  return block_2(attn_1(block_1(x)));  // [N,C,h,w]
}

VaeDownsampleImpl::VaeDownsampleImpl(int channels) {
  conv = register_module("conv", nt::conv(channels, channels, 3, 2, 0));
}

at::Tensor VaeDownsampleImpl::forward(const at::Tensor& x) {
  // No asymmetric padding in conv: pad right and bottom by one zero, then stride 2.
  return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).value(0)));  // [N,C,H/2,W/2]
}

VaeUpsampleImpl::VaeUpsampleImpl(int channels) {
  conv = register_module("conv", nt::conv(channels, channels, 3, 1, 1));
}

at::Tensor VaeUpsampleImpl::forward(const at::Tensor& x) {
  at::Tensor up = at::upsample_nearest2d(x, {2 * x.size(2), 2 * x.size(3)});  // [N,C,2H,2W]
  return conv(up);
}

// ---------------------------------------------------------------------------------------
// Encoder and decoder

VaeEncoderImpl::VaeEncoderImpl(const VaeConfig& cfg) {
  const int levels = static_cast<int>(cfg.ch_mult.size());
  conv_in = register_module("conv_in", conv(cfg.in_channels, cfg.ch, 3, 1, 1));
  down = register_module("down", torch::nn::ModuleList());
  int block_in = cfg.ch;
  for (int i = 0; i < levels; ++i) {
    const int block_out = cfg.ch * cfg.ch_mult[i];
    VaeLevel level;
    level->block = level->register_module("block", torch::nn::ModuleList());
    for (int j = 0; j < cfg.num_res_blocks; ++j) {
      level->block->push_back(VaeResnetBlock(block_in, block_out));
      block_in = block_out;
    }
    if (i != levels - 1)
      level->downsample = level->register_module("downsample", VaeDownsample(block_in));
    down->push_back(level);
  }
  mid = register_module("mid", VaeMid(block_in));
  norm_out = register_module("norm_out", normalize(block_in));
  conv_out = register_module("conv_out", conv(block_in, 2 * cfg.z_channels, 3, 1, 1));
}

at::Tensor VaeEncoderImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv_in(x);  // [N,ch,H,W]
  for (size_t i = 0; i < down->size(); ++i) {
    auto& level = down->at<VaeLevelImpl>(i);
    for (size_t j = 0; j < level.block->size(); ++j)
      h = level.block->at<VaeResnetBlockImpl>(j).forward(h);  // [N,ch*mult[i],H/2^i,W/2^i]
    if (level.downsample) h = level.downsample(h);
  }
  h = mid(h);                                // [N,C,H/f,W/f]
  return conv_out(swish(norm_out(h)));       // [N,2z,H/f,W/f]
}

VaeDecoderImpl::VaeDecoderImpl(const VaeConfig& cfg) {
  const int levels = static_cast<int>(cfg.ch_mult.size());
  const int top = cfg.ch * cfg.ch_mult[levels - 1];
  conv_in = register_module("conv_in", conv(cfg.z_channels, top, 3, 1, 1));
  mid = register_module("mid", VaeMid(top));
  up = register_module("up", torch::nn::ModuleList());
  // Level i runs after level i+1 (whose output has ch*ch_mult[i+1] channels) and has
  // num_res_blocks + 1 blocks; all but level 0 end with an upsample.
  for (int i = 0; i < levels; ++i) {
    int block_in = cfg.ch * cfg.ch_mult[std::min(i + 1, levels - 1)];
    const int block_out = cfg.ch * cfg.ch_mult[i];
    VaeLevel level;
    level->block = level->register_module("block", torch::nn::ModuleList());
    for (int j = 0; j < cfg.num_res_blocks + 1; ++j) {
      level->block->push_back(VaeResnetBlock(block_in, block_out));
      block_in = block_out;
    }
    if (i != 0) level->upsample = level->register_module("upsample", VaeUpsample(block_out));
    up->push_back(level);
  }
  const int bottom = cfg.ch * cfg.ch_mult[0];
  norm_out = register_module("norm_out", normalize(bottom));
  conv_out = register_module("conv_out", conv(bottom, cfg.in_channels, 3, 1, 1));
}

at::Tensor VaeDecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = mid(conv_in(z));  // [N,C,h,w]
  for (int i = static_cast<int>(up->size()) - 1; i >= 0; --i) {
    auto& level = up->at<VaeLevelImpl>(i);
    for (size_t j = 0; j < level.block->size(); ++j)
      h = level.block->at<VaeResnetBlockImpl>(j).forward(h);  // [N,ch*mult[i],f*h/2^i,...]
    if (level.upsample) h = level.upsample(h);
  }
  return conv_out(swish(norm_out(h)));  // [N,in,f*h,f*w]
}

// ---------------------------------------------------------------------------------------
// AutoencoderKL

AutoencoderKLImpl::AutoencoderKLImpl(const VaeConfig& config) : cfg(config) {
  if (cfg.ch_mult.empty()) throw std::runtime_error("VAE: ch_mult must not be empty");
  for (int m : cfg.ch_mult)
    if (m <= 0) throw std::runtime_error("VAE: ch_mult entries must be positive (" + config_text(cfg) + ")");
  if (cfg.num_res_blocks < 1 || cfg.z_channels < 1 || cfg.in_channels < 1)
    throw std::runtime_error("VAE: num_res_blocks, z_channels and in_channels must be positive (" +
                             config_text(cfg) + ")");
  encoder = register_module("encoder", VaeEncoder(cfg));
  decoder = register_module("decoder", VaeDecoder(cfg));
  quant_conv = register_module("quant_conv", conv(2 * cfg.z_channels, 2 * cfg.z_channels, 1));
  post_quant_conv = register_module("post_quant_conv", conv(cfg.z_channels, cfg.z_channels, 1));
}

at::Tensor AutoencoderKLImpl::encode_moments(const at::Tensor& images) {
  const int f = cfg.factor();
  if (images.dim() != 4 || images.size(1) != cfg.in_channels || images.size(2) % f != 0 ||
      images.size(3) % f != 0)
    throw std::runtime_error("VAE encode: images must be [N," + std::to_string(cfg.in_channels) +
                             ",H,W] with H and W multiples of " + std::to_string(f) + ", got " +
                             shape_text(images.sizes()));
  at::Tensor m = quant_conv(encoder(images));                   // [N,2z,H/f,W/f]
  auto parts = m.chunk(2, 1);                                   // mean, logvar [N,z,H/f,W/f]
  return at::cat({parts[0], at::clamp(parts[1], -30.0, 20.0)}, 1);  // [N,2z,H/f,W/f]
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  if (z.dim() != 4 || z.size(1) != cfg.z_channels)
    throw std::runtime_error("VAE decode: latents must be [N," + std::to_string(cfg.z_channels) +
                             ",h,w], got " + shape_text(z.sizes()));
  return decoder(post_quant_conv(z));  // [N,in,f*h,f*w]
}

// ---------------------------------------------------------------------------------------
// Names and loading

std::string vae_ldm_name(const std::string& name, int levels) {
  const std::vector<std::string> p = split(name);
  if (p.size() < 3 || (p[0] != "encoder" && p[0] != "decoder")) return name;
  const std::string& side = p[0];
  const std::string& part = p[1];
  if (part == "conv_norm_out") return side + ".norm_out." + join(p, 2);
  if ((part == "down_blocks" || part == "up_blocks") && p.size() >= 6 && is_index(p[2]) &&
      is_index(p[4])) {
    int level = std::stoi(p[2]);
    if (part == "up_blocks") {  // diffusers counts the decoder's levels from the bottom
      if (level >= levels) return name;
      level = levels - 1 - level;
    }
    const std::string lvl = side + (part == "down_blocks" ? ".down." : ".up.") + std::to_string(level);
    if (p[3] == "resnets") return lvl + ".block." + p[4] + "." + resnet_rest(p, 5);
    if ((p[3] == "downsamplers" || p[3] == "upsamplers") && p[4] == "0")
      return lvl + (p[3] == "downsamplers" ? ".downsample." : ".upsample.") + join(p, 5);
    return name;
  }
  if (part == "mid_block" && p.size() >= 5 && p[2] == "resnets" && (p[3] == "0" || p[3] == "1"))
    return side + ".mid.block_" + (p[3] == "0" ? "1" : "2") + "." + resnet_rest(p, 4);
  if (part == "mid_block" && p.size() >= 5 && p[2] == "attentions" && p[3] == "0") {
    static const std::map<std::string, std::string> attn = {
        {"group_norm", "norm"}, {"to_q", "q"},  {"query", "q"},   {"to_k", "k"},
        {"key", "k"},           {"to_v", "v"},  {"value", "v"},   {"proj_attn", "proj_out"}};
    const std::string base = side + ".mid.attn_1.";
    if (p[4] == "to_out" && p.size() >= 7 && p[5] == "0") return base + "proj_out." + join(p, 6);
    auto it = attn.find(p[4]);
    if (it != attn.end()) return base + it->second + "." + join(p, 5);
  }
  return name;
}

AutoencoderKL load_vae(const std::string& path, const c10::Device& device, const VaeConfig& cfg) {
  const std::string file = "'" + path + "'";
  SafetensorsFile f = load_safetensors(path);  // names the file when missing or malformed
  AutoencoderKL model(cfg);
  const int levels = static_cast<int>(cfg.ch_mult.size());

  const std::string prefix = "first_stage_model.";
  bool prefixed = false;
  for (const auto& name : f.order) prefixed = prefixed || starts_with(name, prefix);

  struct Entry {
    std::string name;  // as in the file
    at::Tensor tensor;
  };
  std::map<std::string, Entry> by_ldm;  // LDM name -> file tensor
  for (const auto& name : f.order) {
    std::string n = name;
    if (prefixed) {  // a whole LDM checkpoint: only its first stage model
      if (!starts_with(n, prefix)) continue;
      n = n.substr(prefix.size());
    }
    // Other parts of a checkpoint (loss.*: LPIPS and discriminator of VAE training,
    // model_ema.*, ...) are not the VAE's; unknown names inside the VAE's parts are errors.
    const std::string top = n.substr(0, n.find('.'));
    if (top != "encoder" && top != "decoder" && top != "quant_conv" && top != "post_quant_conv")
      continue;
    const std::string ldm = vae_ldm_name(n, levels);
    auto [it, fresh] = by_ldm.emplace(ldm, Entry{name, f.tensors.at(name)});
    if (!fresh)
      throw std::runtime_error(file + " holds both '" + it->second.name + "' and '" + name +
                               "' for the VAE parameter '" + ldm + "'");
  }

  torch::NoGradGuard no_grad;
  std::vector<std::string> missing;
  std::set<std::string> used;
  for (auto& p : model->named_parameters()) {
    auto it = by_ldm.find(p.key());
    if (it == by_ldm.end()) {
      missing.push_back(p.key());
      continue;
    }
    used.insert(p.key());
    at::Tensor t = it->second.tensor;
    if (is_attn_projection(p.key()) && t.dim() == 2)
      t = t.reshape({t.size(0), t.size(1), 1, 1});  // diffusers' Linear [C,C] = 1x1 conv
    if (t.sizes() != p.value().sizes())
      throw std::runtime_error(file + ": tensor '" + it->second.name + "' has shape " +
                               shape_text(it->second.tensor.sizes()) + " but the VAE (" +
                               config_text(cfg) + ") expects " + shape_text(p.value().sizes()) +
                               " for '" + p.key() + "'");
    if (!at::isFloatingType(t.scalar_type()))
      throw std::runtime_error(file + ": tensor '" + it->second.name + "' is not a float tensor");
    p.value().copy_(t.to(at::kFloat));
  }
  if (!missing.empty()) {
    std::string s = file + " lacks " + std::to_string(missing.size()) +
                    " tensor(s) of the VAE (" + config_text(cfg) + "), e.g. '" + missing[0] + "'";
    for (size_t i = 1; i < std::min<size_t>(missing.size(), 4); ++i) s += ", '" + missing[i] + "'";
    s += " (LDM names; diffusers names are accepted too)";
    throw std::runtime_error(s);
  }
  std::vector<std::string> unknown;
  for (const auto& [ldm, e] : by_ldm)
    if (!used.count(ldm)) unknown.push_back(e.name);
  if (!unknown.empty()) {
    std::string s = file + " holds " + std::to_string(unknown.size()) +
                    " tensor(s) that are no parameter of the VAE (" + config_text(cfg) +
                    "), e.g. '" + unknown[0] + "'";
    for (size_t i = 1; i < std::min<size_t>(unknown.size(), 4); ++i) s += ", '" + unknown[i] + "'";
    throw std::runtime_error(s + "; is the config right?");
  }
  model->to(device);
  model->eval();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  return model;
}

}  // namespace nt
