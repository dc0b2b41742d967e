#include "eval/scoring.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "core/config.h"
#include "dist/model_io.h"
#include "core/checkpoint.h"
#include "eval/image_grid.h"
#include "eval/npz.h"
#include "models/sampling.h"

namespace nt {

DecodeInfo decode_info_from_json(const nlohmann::json& data, const std::string& where) {
  if (!data.is_object())
    throw std::runtime_error("'" + where + "' has no \"data\" record: cannot tell how its samples become images");
  DecodeInfo d;
  try {
    d.latent_space = data.at("latent_space").get<std::string>();
    d.scale_factor = data.at("scale_factor").get<double>();
    d.shift_factor = data.at("shift_factor").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + where + "': its \"data\" record lacks latent_space, scale_factor or shift_factor (" +
                             e.what() + ")");
  }
  if (!(d.scale_factor != 0) || !std::isfinite(d.scale_factor))
    throw std::runtime_error("'" + where + "': data scale_factor must be a finite non-zero number");
  return d;
}

DecodeInfo decode_info_of(const DatasetInfo& info) {
  DecodeInfo d;
  d.latent_space = info.latent_space;
  d.scale_factor = info.scale_factor;
  d.shift_factor = info.shift_factor;
  return d;
}

at::Tensor samples_to_images01(const at::Tensor& x, const DecodeInfo& info, const LatentDecoder* decoder) {
  auto v = x.to(at::kFloat) / info.scale_factor + info.shift_factor;  // [N,C,H,W], the stored values
  if (!info.pixels()) {
    if (decoder == nullptr || !*decoder)
      throw std::runtime_error("samples in latent space '" + info.latent_space +
                               "' need the VAE to become images: set eval.vae_weights (or --vae) to its .safetensors");
    v = (*decoder)(v).to(at::kFloat);  // [N,3,8h,8w] in about [-1,1]
  }
  return ((v + 1) * 0.5).clamp(0, 1);  // [N,C',H',W'] in [0,1]
}

at::Tensor images_to_8bit(const at::Tensor& images01) {
  return (images01.to(at::kFloat).clamp(0, 1) * 255).floor() / 255;  // [N,C,H,W] levels k/255
}

std::vector<int64_t> eval_seeds(const std::string& seeds, int64_t num_samples, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world)
    throw std::runtime_error("evaluation rank " + std::to_string(rank) + " is outside [0, " + std::to_string(world) + ")");
  if (num_samples < 2)
    throw std::runtime_error("eval.num_samples must be >= 2 for a covariance, got " + std::to_string(num_samples));
  std::vector<int64_t> all;
  try {
    all = parse_int_list(seeds);
  } catch (const ConfigError& e) {
    throw std::runtime_error(std::string("eval.seeds: ") + e.what());
  }
  if (static_cast<int64_t>(all.size()) < num_samples)
    throw std::runtime_error("eval.seeds '" + seeds + "' holds " + std::to_string(all.size()) + " seeds, fewer than " +
                             "eval.num_samples = " + std::to_string(num_samples));
  const int64_t b0 = num_samples * rank / world, b1 = num_samples * (rank + 1) / world;
  return std::vector<int64_t>(all.begin() + b0, all.begin() + b1);
}

ScoreOptions ScoreOptions::of(const EvalConfig& eval, double cfg_scale) {
  ScoreOptions o;
  o.num_samples = eval.num_samples;
  o.seeds = eval.seeds;
  o.steps = eval.steps;
  o.S_churn = eval.S_churn;
  o.cfg_scale = cfg_scale;
  return o;
}

FeatureAccumulator sample_features(DiT& model, double sigma_data, const DecodeInfo& info, FeatureExtractor& extractor,
                                   const LatentDecoder* decoder, const ScoreOptions& opt, const c10::Device& device,
                                   const ScoreProgress& progress) {
  if (!info.pixels() && (decoder == nullptr || !*decoder))
    throw std::runtime_error("the model's samples live in latent space '" + info.latent_space +
                             "': decoding them needs the VAE; set eval.vae_weights (or --vae) to its .safetensors");
  if (opt.steps < 2) throw std::runtime_error("eval.steps must be >= 2 for the Heun sampler, got " + std::to_string(opt.steps));
  if (opt.batch_size < 1) throw std::runtime_error("the evaluation batch size must be >= 1");
  const std::vector<int64_t> seeds = eval_seeds(opt.seeds, opt.num_samples, opt.eval_rank, opt.eval_world);
  const int64_t n = static_cast<int64_t>(seeds.size());

  SampleRequest req;
  req.sampler.num_steps = opt.steps;
  req.sampler.S_churn = opt.S_churn;
  req.guidance = Guidance::cfg_scale(opt.cfg_scale);
  req.sigma_data = sigma_data;
  req.batch_size = opt.batch_size;

  FeatureAccumulator acc;
  std::vector<at::Tensor> grid;  // rank 0's first images, for the PNG
  int64_t grid_count = 0;
  const bool want_grid = !opt.grid_png.empty() && opt.eval_rank == 0;
  if (progress) progress(0, n);
  for (int64_t b0 = 0; b0 < n; b0 += opt.batch_size) {
    const int64_t b1 = std::min(n, b0 + static_cast<int64_t>(opt.batch_size));
    req.seeds.assign(seeds.begin() + b0, seeds.begin() + b1);
    const SampleResult r = generate_samples(model, req, device);         // samples [B,C,H,W] on the CPU
    at::Tensor images = images_to_8bit(samples_to_images01(r.samples.to(device), info, decoder));  // [B,C',H',W'] k/255
    acc.add(extractor.features(images));                                 // [B,D]
    if (want_grid && grid_count < 64) {
      auto keep = images.narrow(0, 0, std::min<int64_t>(64 - grid_count, images.size(0))).to(at::kCPU);
      grid_count += keep.size(0);
      grid.push_back(keep);
    }
    if (progress) progress(b1, n);
  }
  if (want_grid && grid_count > 0) {
    auto images = at::cat(grid) * 2 - 1;  // [G,C',H',W'] in [-1,1], as write_image_grid takes them
    const int nrow = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(grid_count))));
    const int zoom = std::max<int>(1, 64 / static_cast<int>(images.size(2)));
    const std::filesystem::path parent = std::filesystem::path(opt.grid_png).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    write_image_grid(opt.grid_png, images, nrow, zoom);
  }
  return acc;
}

void check_reference(const FeatureStats& ref, const FeatureExtractor& extractor, const std::string& ref_path) {
  if (!ref.mu.defined() || ref.mu.dim() != 1 || ref.mu.size(0) != extractor.dim())
    throw std::runtime_error("reference statistics '" + ref_path + "' have " +
                             (ref.mu.defined() && ref.mu.dim() == 1 ? std::to_string(ref.mu.size(0)) : std::string("no")) +
                             " features, but the " + extractor.name() + " extractor gives " +
                             std::to_string(extractor.dim()) + " (made with another extractor? rebuild them with "
                             "fid_worker --make-ref)");
}

nlohmann::json EvalResult::to_json() const {
  return {{"kind", "eval"},           {"step", step},       {"fid", fid},          {"extractor", extractor},
          {"num_samples", num_samples}, {"cfg_scale", cfg_scale}, {"S_churn", S_churn}, {"seconds", seconds}};
}

EvalResult score_checkpoint(const std::string& ckpt_dir, const FeatureStats& ref, const std::string& ref_path,
                            FeatureExtractor& extractor, const LatentDecoder* decoder, const ScoreOptions& opt,
                            const c10::Device& device, const ScoreProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  check_reference(ref, extractor, ref_path);
  ScoringModel m = load_scoring_model(ckpt_dir, device);
  ScoreOptions one = opt;
  one.eval_rank = 0;
  one.eval_world = 1;
  const FeatureAccumulator acc =
      sample_features(m.checkpoint.model, m.sigma_data, m.info, extractor, decoder, one, device, progress);
  EvalResult r;
  r.step = m.checkpoint.manifest.at("step").get<int64_t>();
  r.fid = frechet_distance(acc.finalize(), ref);
  r.extractor = extractor.name();
  r.num_samples = acc.count();
  r.cfg_scale = opt.cfg_scale;
  r.S_churn = opt.S_churn;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

ScoringModel load_scoring_model(const std::string& ckpt_dir, const c10::Device& device) {
  ScoringModel m;
  m.checkpoint = load_checkpoint_model(ckpt_dir, "ema");
  m.sigma_data = parse_config(m.checkpoint.config_toml, ckpt_dir + "/config.toml").diffusion.sigma_data;
  m.info = decode_info_from_json(m.checkpoint.manifest.value("data", nlohmann::json()), ckpt_dir + "/manifest.json");
  m.checkpoint.model->to(device);
  return m;
}

const LatentDecoder* decoder_for(const std::string& latent_space, const std::string& vae_weights,
                                 const c10::Device& device, std::unique_ptr<LatentDecoder>& cache) {
  if (latent_space == "pixels") return nullptr;
  if (!cache) {
    if (vae_weights.empty())
      throw std::runtime_error("samples in latent space '" + latent_space +
                               "' need the VAE to become images: set eval.vae_weights (fid_worker: --vae "
                               "W.safetensors)");
    cache = std::make_unique<LatentDecoder>(make_vae_decoder(vae_weights, device));
  }
  return cache.get();
}

FeatureStats load_reference_stats(const std::string& path) {
  if (path.empty())
    throw std::runtime_error("no reference statistics: set eval.ref_stats or give --ref ref.npz (make them with "
                             "fid_worker --make-ref --data X.h5 --out ref.npz)");
  if (!std::filesystem::exists(path))
    throw std::runtime_error("reference statistics '" + path + "' do not exist (make them with "
                             "fid_worker --make-ref --data X.h5 --out " + path + ")");
  return read_stats_npz(path);
}

std::string eval_grid_path(const std::string& run_dir, int64_t step, double cfg_scale, double S_churn) {
  char suffix[64] = "";
  if (cfg_scale != 1.0) std::snprintf(suffix, sizeof(suffix), "_cfg%g", cfg_scale);
  if (S_churn != 0.0) std::snprintf(suffix + std::strlen(suffix), sizeof(suffix) - std::strlen(suffix), "_churn%g", S_churn);
  return (std::filesystem::path(run_dir) / "samples" / ("eval_" + checkpoint_name(step) + suffix + ".png")).string();
}

}  // namespace nt
