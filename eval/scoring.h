// The evaluation pipeline shared by eval/fid_worker and the evaluation rank: generate samples
// for fixed seeds, turn them into images in [0,1], extract features, accumulate float64 FID
// statistics, and compare them with reference statistics.
//
//   seeds --generate_samples (EDM Heun, opt.steps; CFG when cfg_scale != 1)--> x [B,C,H,W]
//         --samples_to_images01--> images [B,C',H',W'] in [0,1] --images_to_8bit--> levels k/255
//         --extractor--> [B,D] --> sums
//
// Samples to images: the model's x = scale_factor·(v − shift_factor), so v = x/scale_factor +
// shift_factor. In latent space "pixels" v is an image in [−1,1] (docs/data-format.md: the
// importers map a pixel p to p/127.5 − 1); otherwise v goes through the VAE decoder (images in
// about [−1,1]). Either way images01 = clamp((img + 1)/2, 0, 1). The features are taken from
// 8-bit images, as the reference scores its samples: CompVis/tread's decode turns them into uint8
// by (images01 · 255).to(uint8), a truncation, and computes FID from those (as pytorch-fid and
// EDM read 8-bit image files); the extractor gets k/255.
//
// Several evaluation ranks split the seeds into contiguous shares; each accumulates its own
// sums, and the sums added up (FeatureAccumulator::add_sums, or an all-reduce of sum/outer/n)
// give exactly the statistics of one rank scoring all seeds, up to float64 summation order.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/latent_dataset.h"
#include "dist/model_io.h"
#include "eval/feature_extractor.h"
#include "eval/frechet.h"
#include "models/dit.h"
#include "models/vae.h"

namespace nt {

// How a model's samples become images: the "data" record of a checkpoint manifest
// (dist/model_io.h data_info_to_json) or a data set's attributes.
struct DecodeInfo {
  std::string latent_space = "pixels";  // "pixels" or a VAE's latent space, e.g. "sd-vae-ft-ema"
  double scale_factor = 1.0, shift_factor = 0.0;
  bool pixels() const { return latent_space == "pixels"; }
};
// From a manifest's "data" record; throws std::runtime_error naming `where` when it is missing
// or lacks latent_space / scale_factor / shift_factor.
DecodeInfo decode_info_from_json(const nlohmann::json& data, const std::string& where);
DecodeInfo decode_info_of(const DatasetInfo& d);

// A latent decoder: unnormalised latents v [N,C,h,w] -> images [N,3,H,W] in about [−1,1].
using LatentDecoder = std::function<at::Tensor(const at::Tensor& v)>;
// The AutoencoderKL of models/vae.h (architecture `cfg`; the default is sd-vae-ft-ema's) as a
// LatentDecoder on `device` (eval/vae_decode.cpp). Throws std::runtime_error naming the file
// when it is missing or invalid.
LatentDecoder make_vae_decoder(const std::string& weights, const c10::Device& device, const VaeConfig& cfg = {});

// Model-space samples x [N,C,H,W] -> images [N,C',H',W'] float32 in [0,1] (see the top). A
// non-pixel latent space needs `decoder`; without one, throws std::runtime_error naming the
// latent space and eval.vae_weights.
at::Tensor samples_to_images01(const at::Tensor& x, const DecodeInfo& info, const LatentDecoder* decoder);

// images01 [N,C,H,W] in [0,1] -> the 8-bit levels the reference saves, floor(images01 · 255), as
// float32 k/255 in [0,1] (what the extractors take). Values outside [0,1] are clamped first.
at::Tensor images_to_8bit(const at::Tensor& images01);

// The first `num_samples` seeds of `seeds` ("a-b" inclusive, or lists "1,5,7-9", parsed by
// core/config.h parse_int_list), and of those the contiguous share of `rank` among `world`
// ranks: [rank·n/world, (rank+1)·n/world). Throws std::runtime_error when the list holds fewer
// than num_samples seeds or num_samples < 2.
std::vector<int64_t> eval_seeds(const std::string& seeds, int64_t num_samples, int rank, int world);

struct EvalConfig;  // core/config.h

struct ScoreOptions {
  // The sampling settings of `eval` (num_samples, seeds, steps, S_churn) at guidance `cfg_scale`.
  static ScoreOptions of(const EvalConfig& eval, double cfg_scale);

  int64_t num_samples = 50000;
  std::string seeds = "100000-149999";
  int steps = 40;           // EDM Heun steps
  double S_churn = 0;       // EDM S_churn (noise from each seed's own generator); 0 = deterministic
  double cfg_scale = 1.0;   // classifier-free guidance; 1 = the conditional model alone
  int batch_size = 64;      // samples per generation/extraction batch (does not change results)
  std::string grid_png;     // when set, rank 0 writes a grid of its first (up to 64) images
  int eval_rank = 0, eval_world = 1;
};

// Called after every batch with this rank's samples done so far and its total.
using ScoreProgress = std::function<void(int64_t done, int64_t total)>;

// Generates this rank's share of the seeds from `model` (already on `device`; put in eval mode),
// decodes, extracts and accumulates features. sigma_data: the run's
// diffusion.sigma_data. Returns the (unfinalised) accumulator of this rank's share.
FeatureAccumulator sample_features(DiT& model, double sigma_data, const DecodeInfo& info,
                                   FeatureExtractor& extractor, const LatentDecoder* decoder,
                                   const ScoreOptions& opt, const c10::Device& device,
                                   const ScoreProgress& progress = {});

// Throws std::runtime_error naming `ref_path` when the reference statistics do not have the
// extractor's feature size.
void check_reference(const FeatureStats& ref, const FeatureExtractor& extractor, const std::string& ref_path);

// One evaluation: the line appended to metrics.jsonl.
struct EvalResult {
  int64_t step = 0;
  double fid = 0;
  std::string extractor;
  int64_t num_samples = 0;
  double cfg_scale = 1.0;
  double S_churn = 0;
  double seconds = 0;  // wall time of loading, sampling, extraction and the distance
  // {"kind":"eval","step":..,"fid":..,"extractor":..,"num_samples":..,"cfg_scale":..,"S_churn":..,"seconds":..}
  nlohmann::json to_json() const;
};

// Scores one checkpoint folder on a single rank (opt.eval_rank/eval_world are ignored): its EMA
// model (dist/model_io.h load_checkpoint_model), sigma_data from its config.toml, the decode
// information from its manifest's "data" record. Throws CheckpointError for a missing or corrupt
// checkpoint and std::runtime_error for a missing VAE or mismatched reference statistics.
EvalResult score_checkpoint(const std::string& ckpt_dir, const FeatureStats& ref, const std::string& ref_path,
                            FeatureExtractor& extractor, const LatentDecoder* decoder,
                            const ScoreOptions& opt, const c10::Device& device,
                            const ScoreProgress& progress = {});

// Reference statistics from an .npz (mu, sigma); errors say how to make them.
FeatureStats load_reference_stats(const std::string& path);
// The PNG grid of an evaluation: <run_dir>/samples/eval_step_XXXXXXXX[_cfgS][_churnC].png (the
// suffixes when cfg_scale != 1, S_churn != 0).
std::string eval_grid_path(const std::string& run_dir, int64_t step, double cfg_scale, double S_churn = 0);

// What scoring a checkpoint needs of it: its EMA model on `device`, sigma_data from its
// config.toml and the decode info from its manifest's "data" record. Throws CheckpointError for
// an incomplete or corrupt folder.
struct ScoringModel {
  LoadedCheckpoint checkpoint;
  double sigma_data = 0.5;
  DecodeInfo info;
};
ScoringModel load_scoring_model(const std::string& ckpt_dir, const c10::Device& device);
// The VAE decoder that samples of `latent_space` need to become images, made once into `cache`
// from `vae_weights`; nullptr for "pixels". Without weights: an error naming eval.vae_weights.
const LatentDecoder* decoder_for(const std::string& latent_space, const std::string& vae_weights,
                                 const c10::Device& device, std::unique_ptr<LatentDecoder>& cache);

}  // namespace nt
