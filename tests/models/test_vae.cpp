// KL-VAE (models/vae.h): shapes and parameter names, golden encode/decode values of a small
// VAE (ch 32, ch_mult 2,1,1, 1 res block, z 4) from a re-implementation of the LDM semantics
// (tests/golden/vae.md), the same weights in LDM, diffusers (new and old attention names) and
// full-checkpoint (first_stage_model., loss.*) naming, and the loader's errors.
#include "models/vae.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <set>
#include <string>

#include "core/safetensors.h"
#include "test_util.h"

namespace {

using nt::test::scratch_dir;
using nt::test::thrown_message;

const std::string kGolden = std::string(NT_SOURCE_DIR) + "/tests/golden/";
const c10::Device kCpu(c10::kCPU);

// fp32 convolutions of another kernel order move these outputs by ~1e-7 relative; a pixel one
// level off (1/127.5) moves the moments by ~2e-3 (measured with the generator).
constexpr double kTol = 1e-5;  // max|got - want| / max|want|

nt::VaeConfig small_config() {
  nt::VaeConfig c;
  c.ch = 32;
  c.ch_mult = {2, 1, 1};
  c.num_res_blocks = 1;
  c.z_channels = 4;
  return c;
}

double rel_err(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  EXPECT_EQ(got.sizes(), want.sizes()) << what;
  if (got.sizes() != want.sizes()) return 1e30;
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = want.to(at::kDouble).abs().max().item<double>();
  std::cout << "[ golden   ] " << what << ": max abs err " << err << ", relative " << err / scale
            << "\n";
  return err / scale;
}

std::vector<nt::NamedTensor> file_tensors(const nt::SafetensorsFile& f) {
  std::vector<nt::NamedTensor> out;
  for (const auto& name : f.order) out.push_back({name, f.tensors.at(name)});
  return out;
}

struct Golden : ::testing::Test {
  static void SetUpTestSuite() {
    cases = new nt::SafetensorsFile(nt::load_safetensors(kGolden + "vae_small_cases.safetensors"));
  }
  static void TearDownTestSuite() { delete cases; }
  static const at::Tensor& c(const std::string& name) { return cases->tensors.at(name); }

  // Checks a loaded VAE against the golden moments and decoded images.
  static void expect_golden(nt::AutoencoderKL& vae, const std::string& what) {
    torch::NoGradGuard no_grad;
    EXPECT_LE(rel_err(vae->encode_moments(c("images")), c("moments"), what + " moments"), kTol);
    EXPECT_LE(rel_err(vae->decode(c("z")), c("decoded"), what + " decoded"), kTol);
  }
  static nt::SafetensorsFile* cases;
};
nt::SafetensorsFile* Golden::cases = nullptr;

TEST(Vae, ShapesAndNames) {
  nt::VaeConfig cfg;
  cfg.ch = 32;
  cfg.ch_mult = {1, 2};
  cfg.num_res_blocks = 1;
  nt::AutoencoderKL vae(cfg);
  vae->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(cfg.factor(), 2);
  at::Tensor m = vae->encode_moments(at::rand({2, 3, 16, 12}) * 2 - 1);
  EXPECT_EQ(m.sizes(), (at::IntArrayRef{2, 8, 8, 6}));
  EXPECT_EQ(vae->decode(at::randn({3, 4, 8, 6})).sizes(), (at::IntArrayRef{3, 3, 16, 12}));
  // logvar clamped to [-30, 20]
  {
    nt::AutoencoderKL big(cfg);
    big->eval();
    big->quant_conv->bias.fill_(100.0);
    at::Tensor mm = big->encode_moments(at::zeros({1, 3, 4, 4}));
    EXPECT_LE(mm.narrow(1, 4, 4).max().item<double>(), 20.0);
    EXPECT_GT(mm.narrow(1, 0, 4).max().item<double>(), 50.0);  // the mean is not clamped
  }

  std::set<std::string> names;
  for (const auto& p : vae->named_parameters()) names.insert(p.key());
  for (const char* n : {"encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
                        "encoder.down.0.downsample.conv.weight",
                        "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.attn_1.q.weight",
                        "encoder.mid.block_2.norm2.bias", "encoder.norm_out.weight",
                        "decoder.up.1.block.1.conv2.weight", "decoder.up.1.upsample.conv.weight",
                        "decoder.up.0.block.0.nin_shortcut.weight", "decoder.conv_out.bias",
                        "quant_conv.weight", "post_quant_conv.bias"})
    EXPECT_TRUE(names.count(n)) << n;
  for (const char* n : {"encoder.down.1.downsample.conv.weight", "decoder.up.0.upsample.conv.weight",
                        "decoder.up.1.block.0.nin_shortcut.weight"})
    EXPECT_FALSE(names.count(n)) << n;

  // Bad inputs name what is wrong.
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { vae->encode_moments(at::zeros({1, 3, 5, 4})); }),
                  "multiples of 2");
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { vae->decode(at::zeros({1, 3, 4, 4})); }),
                  "[N,4,h,w]");
  nt::VaeConfig odd = cfg;
  odd.ch = 48;
  EXPECT_CONTAINS(thrown_message<std::runtime_error>([&] { nt::AutoencoderKL bad(odd); }),
                  "GroupNorm(32)");
}

TEST(Vae, DefaultConfigIsSdVae) {
  // sd-vae-ft-ema: 248 tensors, 83,653,863 parameters (diffusers' AutoencoderKL reports the same).
  nt::AutoencoderKL vae;
  int64_t count = 0, tensors = 0;
  for (const auto& p : vae->parameters()) {
    count += p.numel();
    ++tensors;
  }
  EXPECT_EQ(tensors, 248);
  EXPECT_EQ(count, 83653863);
  EXPECT_EQ(vae->cfg.factor(), 8);
  EXPECT_DOUBLE_EQ(vae->cfg.scale_factor, 0.18215);
  EXPECT_EQ(vae->decoder->up->size(), 4u);
  EXPECT_EQ(vae->decoder->conv_in->weight.sizes(), (at::IntArrayRef{512, 4, 3, 3}));
  EXPECT_EQ(vae->decoder->norm_out->weight.size(0), 128);
}

TEST(Vae, DiffusersNames) {
  const int L = 4;
  EXPECT_EQ(nt::vae_ldm_name("decoder.up_blocks.0.resnets.1.conv_shortcut.weight", L),
            "decoder.up.3.block.1.nin_shortcut.weight");
  EXPECT_EQ(nt::vae_ldm_name("decoder.up_blocks.2.upsamplers.0.conv.bias", L),
            "decoder.up.1.upsample.conv.bias");
  EXPECT_EQ(nt::vae_ldm_name("encoder.down_blocks.3.resnets.0.norm1.weight", L),
            "encoder.down.3.block.0.norm1.weight");
  EXPECT_EQ(nt::vae_ldm_name("encoder.down_blocks.1.downsamplers.0.conv.weight", L),
            "encoder.down.1.downsample.conv.weight");
  EXPECT_EQ(nt::vae_ldm_name("encoder.mid_block.resnets.1.conv2.weight", L),
            "encoder.mid.block_2.conv2.weight");
  EXPECT_EQ(nt::vae_ldm_name("decoder.mid_block.attentions.0.group_norm.bias", L),
            "decoder.mid.attn_1.norm.bias");
  EXPECT_EQ(nt::vae_ldm_name("encoder.mid_block.attentions.0.to_out.0.weight", L),
            "encoder.mid.attn_1.proj_out.weight");
  EXPECT_EQ(nt::vae_ldm_name("encoder.mid_block.attentions.0.proj_attn.weight", L),
            "encoder.mid.attn_1.proj_out.weight");
  EXPECT_EQ(nt::vae_ldm_name("decoder.mid_block.attentions.0.key.bias", L),
            "decoder.mid.attn_1.k.bias");
  EXPECT_EQ(nt::vae_ldm_name("decoder.conv_norm_out.weight", L), "decoder.norm_out.weight");
  // LDM names and unknown names stay as they are.
  for (const char* n : {"encoder.down.0.block.0.conv1.weight", "quant_conv.weight",
                        "decoder.up_blocks.4.resnets.0.conv1.weight", "loss.logvar"})
    EXPECT_EQ(nt::vae_ldm_name(n, L), n);
}

TEST_F(Golden, LdmNames) {
  nt::AutoencoderKL vae = nt::load_vae(kGolden + "vae_small_ldm.safetensors", kCpu, small_config());
  EXPECT_FALSE(vae->is_training());
  for (const auto& p : vae->parameters()) EXPECT_FALSE(p.requires_grad());
  expect_golden(vae, "LDM names");
}

// On CUDA (an evaluation rank decoding latents on its GPU; skipped without one): the golden
// decode to 1e-2 of its scale (cuDNN convolutions, TF32 where LibTorch allows it by default).
TEST_F(Golden, CudaDecodeMatchesTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  nt::AutoencoderKL vae =
      nt::load_vae(kGolden + "vae_small_ldm.safetensors", c10::Device(c10::kCUDA, 0), small_config());
  torch::NoGradGuard no_grad;
  const at::Tensor out = vae->decode(c("z").to(torch::kCUDA));
  ASSERT_TRUE(out.is_cuda());
  EXPECT_LE(rel_err(out.cpu(), c("decoded"), "CUDA decoded"), 1e-2);
}

TEST_F(Golden, DiffusersNamesLoadIdentically) {
  nt::AutoencoderKL ldm = nt::load_vae(kGolden + "vae_small_ldm.safetensors", kCpu, small_config());
  nt::AutoencoderKL dif =
      nt::load_vae(kGolden + "vae_small_diffusers.safetensors", kCpu, small_config());
  auto a = ldm->named_parameters(), b = dif->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(at::equal(p.value(), b[p.key()])) << p.key();
  expect_golden(dif, "diffusers names");

  // Older diffusers attention names (query/key/value/proj_attn) in float32.
  nt::SafetensorsFile f = nt::load_safetensors(kGolden + "vae_small_diffusers.safetensors");
  std::vector<nt::NamedTensor> old;
  for (const auto& name : f.order) {
    std::string n = name;
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
             {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."},
             {".to_out.0.", ".proj_attn."}}) {
      const size_t at = n.find(from);
      if (at != std::string::npos) n.replace(at, from.size(), to);
    }
    old.push_back({n, f.tensors.at(name).to(at::kFloat)});
  }
  const std::string path = scratch_dir() + "/old_names.safetensors";
  nt::save_safetensors(path, old);
  nt::AutoencoderKL older = nt::load_vae(path, kCpu, small_config());
  for (const auto& p : older->named_parameters()) EXPECT_TRUE(at::equal(p.value(), a[p.key()])) << p.key();
}

TEST_F(Golden, WholeLdmCheckpoint) {
  // A latent-diffusion checkpoint: first_stage_model.* is the VAE, the rest is ignored, and so
  // are the loss.* tensors of VAE training.
  nt::SafetensorsFile f = nt::load_safetensors(kGolden + "vae_small_ldm.safetensors");
  std::vector<nt::NamedTensor> ckpt{{"model.diffusion_model.out.0.weight", at::ones({7})},
                                    {"first_stage_model.loss.logvar", at::zeros({1})},
                                    {"first_stage_model.model_ema.decay", at::ones({})},
                                    {"first_stage_model.loss.discriminator.main.0.weight",
                                     at::ones({2, 3, 4, 4})}};
  for (const auto& name : f.order) ckpt.push_back({"first_stage_model." + name, f.tensors.at(name)});
  const std::string path = scratch_dir() + "/ldm_ckpt.safetensors";
  nt::save_safetensors(path, ckpt);
  nt::AutoencoderKL vae = nt::load_vae(path, kCpu, small_config());
  expect_golden(vae, "first_stage_model. prefix");

  // A VAE training checkpoint without the prefix: encoder.*, decoder.*, ... and loss.*.
  std::vector<nt::NamedTensor> vae_ckpt = file_tensors(f);
  vae_ckpt.push_back({"loss.logvar", at::zeros({1})});
  vae_ckpt.push_back({"loss.perceptual_loss.net.slice1.0.weight", at::ones({4, 3, 3, 3})});
  nt::save_safetensors(path, vae_ckpt);
  nt::AutoencoderKL plain = nt::load_vae(path, kCpu, small_config());
  expect_golden(plain, "loss.* ignored");
}

TEST_F(Golden, LoaderErrors) {
  const std::string dir = scratch_dir();
  nt::SafetensorsFile f = nt::load_safetensors(kGolden + "vae_small_ldm.safetensors");

  // A missing file names it.
  EXPECT_CONTAINS(thrown_message<std::runtime_error>(
                      [&] { nt::load_vae(dir + "/nope.safetensors", kCpu, small_config()); }),
                  dir + "/nope.safetensors");

  // A missing tensor: the file and the tensor.
  auto all = file_tensors(f);
  std::vector<nt::NamedTensor> less;
  for (const auto& t : all)
    if (t.name != "decoder.up.2.block.1.conv1.bias") less.push_back(t);
  nt::save_safetensors(dir + "/less.safetensors", less);
  std::string msg = thrown_message<std::runtime_error>(
      [&] { nt::load_vae(dir + "/less.safetensors", kCpu, small_config()); });
  EXPECT_CONTAINS(msg, "less.safetensors");
  EXPECT_CONTAINS(msg, "decoder.up.2.block.1.conv1.bias");

  // A wrong shape: the file's tensor name and both shapes.
  std::vector<nt::NamedTensor> wrong = all;
  for (auto& t : wrong)
    if (t.name == "encoder.mid.attn_1.k.weight") t.tensor = at::zeros({32, 16, 1, 1});
  nt::save_safetensors(dir + "/wrong.safetensors", wrong);
  msg = thrown_message<std::runtime_error>(
      [&] { nt::load_vae(dir + "/wrong.safetensors", kCpu, small_config()); });
  EXPECT_CONTAINS(msg, "wrong.safetensors");
  EXPECT_CONTAINS(msg, "encoder.mid.attn_1.k.weight");
  EXPECT_CONTAINS(msg, "[32,16,1,1]");
  EXPECT_CONTAINS(msg, "[32,32,1,1]");

  // A tensor that is no parameter (e.g. the config has fewer levels than the file).
  std::vector<nt::NamedTensor> extra = all;
  extra.push_back({"decoder.up.3.block.0.conv1.weight", at::zeros({32, 32, 3, 3})});
  nt::save_safetensors(dir + "/extra.safetensors", extra);
  msg = thrown_message<std::runtime_error>(
      [&] { nt::load_vae(dir + "/extra.safetensors", kCpu, small_config()); });
  EXPECT_CONTAINS(msg, "extra.safetensors");
  EXPECT_CONTAINS(msg, "decoder.up.3.block.0.conv1.weight");

  // The right file with the default (sd-vae-ft-ema) config: shapes do not fit.
  msg = thrown_message<std::runtime_error>(
      [&] { nt::load_vae(kGolden + "vae_small_ldm.safetensors", kCpu); });
  EXPECT_CONTAINS(msg, "vae_small_ldm.safetensors");
  EXPECT_CONTAINS(msg, "ch 128, ch_mult 1,2,4,4");

  // Both naming schemes for one parameter.
  std::vector<nt::NamedTensor> both = all;
  both.push_back({"encoder.conv_norm_out.weight", at::ones({32})});
  nt::save_safetensors(dir + "/both.safetensors", both);
  msg = thrown_message<std::runtime_error>(
      [&] { nt::load_vae(dir + "/both.safetensors", kCpu, small_config()); });
  EXPECT_CONTAINS(msg, "encoder.conv_norm_out.weight");
  EXPECT_CONTAINS(msg, "encoder.norm_out.weight");
}

}  // namespace
