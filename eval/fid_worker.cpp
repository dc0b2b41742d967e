// eval/fid_worker: offline FID (eval/scoring.h does the work).
//   fid_worker --checkpoint runs/x/ckpt/step_00005000        # one checkpoint; last line "fid: X"
//   fid_worker --run-dir runs/x [--watch]                    # every unscored checkpoint of a run
//   fid_worker --make-ref --data X.h5 --out ref.npz [--num N]  # reference statistics of a data set
//   fid_worker --make-ref --images DIR --out ref.npz         # ... of a folder of images, as the reference's fid.py ref
//   fid_worker --stats A.npz --ref B.npz                     # distance of two statistics files
//   fid_worker --images DIR --ref B.npz [--num N]            # FID of a folder of samples, as fid.py calc
// The evaluation settings default to the [eval] section of the run's config.toml (or --config).
//
// --run-dir scores, in step order, every checkpoint in DIR/ckpt that has no eval line in
// DIR/metrics.jsonl for its (step, cfg_scale, extractor, S_churn), appends one line per score and writes
// DIR/samples/eval_step_XXXXXXXX[_cfgS].png. With --watch it then polls DIR/ckpt every --poll
// seconds and stops once a checkpoint at the run's train.steps (re-read from DIR/config.toml each
// round; the trainer always checkpoints its last step) has been scored, or on SIGINT/SIGTERM/SIGUSR1
// (after the checkpoint being scored; a second signal ends it at once).
#include <boost/program_options.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/metrics.h"
#include "data/latent_dataset.h"
#include "data/progress.h"
#include "eval/feature_extractor.h"
#include "eval/frechet.h"
#include "eval/image_folder.h"
#include "eval/npz.h"
#include "eval/scoring.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop = sig;
  std::signal(sig, SIG_DFL);  // a second signal ends the process at once
}

// The evaluation settings: the config's [eval] section with the command line's overrides.
struct Settings {
  nt::EvalConfig eval;
  int batch = 64;
  c10::Device device{c10::kCPU};
};

std::vector<double> parse_scales(const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || !std::isfinite(v))
      throw std::runtime_error("--cfg-scale: '" + item + "' is not a number (give e.g. 1.5 or 1,1.5)");
    out.push_back(v);
  }
  if (out.empty()) throw std::runtime_error("--cfg-scale needs at least one number");
  return out;
}

Settings resolve_settings(const po::variables_map& vm, const std::string& config_path) {
  Settings s;
  if (!config_path.empty()) s.eval = nt::load_config(config_path).eval;
  if (vm.count("num-samples")) s.eval.num_samples = vm["num-samples"].as<int64_t>();
  if (vm.count("seeds")) s.eval.seeds = vm["seeds"].as<std::string>();
  if (vm.count("steps")) s.eval.steps = vm["steps"].as<int>();
  if (vm.count("s-churn")) s.eval.S_churn = vm["s-churn"].as<double>();
  if (!(s.eval.S_churn >= 0)) throw std::runtime_error("--s-churn must be >= 0");
  if (vm.count("cfg-scale")) s.eval.cfg_scales = parse_scales(vm["cfg-scale"].as<std::string>());
  if (vm.count("extractor")) s.eval.extractor = vm["extractor"].as<std::string>();
  if (vm.count("extractor-weights")) s.eval.extractor_weights = vm["extractor-weights"].as<std::string>();
  if (vm.count("vae")) s.eval.vae_weights = vm["vae"].as<std::string>();
  if (vm.count("ref")) s.eval.ref_stats = vm["ref"].as<std::string>();
  s.batch = vm["batch"].as<int>();
  if (s.batch < 1) throw std::runtime_error("--batch must be >= 1");
  const std::string dev = vm["device"].as<std::string>();
  if (dev == "cuda" || (dev == "auto" && torch::cuda::is_available())) {
    if (!torch::cuda::is_available()) throw std::runtime_error("--device cuda, but no CUDA device is available");
    s.device = c10::Device(c10::kCUDA, 0);
  } else if (dev != "cpu" && dev != "auto") {
    throw std::runtime_error("--device must be auto, cpu or cuda, got '" + dev + "'");
  }
  return s;
}

nt::FeatureStats load_reference(const Settings& s) { return nt::load_reference_stats(s.eval.ref_stats); }

// The "data" record of a checkpoint's manifest, read without verifying (load does that).
nlohmann::json manifest_data(const std::string& ckpt) {
  std::ifstream in(fs::path(ckpt) / "manifest.json");
  if (!in) throw nt::CheckpointError("'" + ckpt + "/manifest.json' is missing: not a complete checkpoint folder");
  try {
    return nlohmann::json::parse(in).value("data", nlohmann::json());
  } catch (const nlohmann::json::exception& e) {
    throw nt::CheckpointError("'" + ckpt + "/manifest.json' is not valid JSON: " + e.what());
  }
}

nt::ScoreOptions score_options(const Settings& s, double cfg_scale, const std::string& grid) {
  nt::ScoreOptions o = nt::ScoreOptions::of(s.eval, cfg_scale);
  o.batch_size = s.batch;
  o.grid_png = grid;
  return o;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

nt::EvalResult score_one(const std::string& ckpt, const nt::FeatureStats& ref, const Settings& s,
                         nt::FeatureExtractor& fx, std::unique_ptr<nt::LatentDecoder>& vae, double cfg_scale,
                         const std::string& grid, const std::string& what) {
  const nlohmann::json data = manifest_data(ckpt);
  const nt::LatentDecoder* dec = nt::decoder_for(data.value("latent_space", std::string("unknown")), s.eval.vae_weights, s.device, vae);
  nt::Progress progress(what, s.eval.num_samples, "samples");
  auto r = nt::score_checkpoint(ckpt, ref, s.eval.ref_stats, fx, dec, score_options(s, cfg_scale, grid), s.device,
                                [&](int64_t done, int64_t) { progress.update(done); });
  progress.finish();
  return r;
}

// ---- --checkpoint ---------------------------------------------------------------------------

int run_checkpoint(const po::variables_map& vm) {
  const std::string ckpt = vm["checkpoint"].as<std::string>();
  if (!fs::is_directory(ckpt)) throw nt::CheckpointError("checkpoint folder '" + ckpt + "' does not exist");
  const std::string config = vm.count("config") ? vm["config"].as<std::string>()
                             : fs::exists(fs::path(ckpt) / "config.toml") ? (fs::path(ckpt) / "config.toml").string()
                                                                          : "";
  const Settings s = resolve_settings(vm, config);
  const nt::FeatureStats ref = load_reference(s);
  auto fx = nt::make_feature_extractor(s.eval.extractor, s.eval.extractor_weights, s.device);
  nt::check_reference(ref, *fx, s.eval.ref_stats);
  std::unique_ptr<nt::LatentDecoder> vae;
  const std::string grid = vm.count("grid") ? vm["grid"].as<std::string>() : "";
  for (size_t i = 0; i < s.eval.cfg_scales.size(); ++i) {
    const double cfg = s.eval.cfg_scales[i];
    std::string g = grid;
    if (!g.empty() && s.eval.cfg_scales.size() > 1) g = g.substr(0, g.rfind('.')) + "_cfg" + fmt("%g", cfg) + ".png";
    auto r = score_one(ckpt, ref, s, *fx, vae, cfg, g, "eval " + ckpt + " cfg " + fmt("%g", cfg));
    std::cerr << "step " << r.step << " cfg_scale " << fmt("%g", cfg) << ": " << r.num_samples << " samples, "
              << fx->name() << " features, " << fmt("%.1f", r.seconds) << " s\n";
    if (s.eval.cfg_scales.size() == 1) std::printf("fid: %.6f\n", r.fid);
    else std::printf("fid: %.6f cfg_scale=%g\n", r.fid, cfg);
    std::fflush(stdout);
  }
  return 0;
}

// ---- --run-dir [--watch] --------------------------------------------------------------------

// step, cfg_scale, extractor, S_churn (0 in lines written before it was recorded)
using EvalKey = std::tuple<int64_t, double, std::string, double>;

std::set<EvalKey> scored_evals(const std::string& metrics_path) {
  std::set<EvalKey> out;
  std::ifstream in(metrics_path);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || j.value("kind", std::string()) != "eval") continue;  // also a half-written line
    if (!j.contains("step") || !j.contains("cfg_scale") || !j.contains("extractor")) continue;
    out.insert({j["step"].get<int64_t>(), j["cfg_scale"].get<double>(), j["extractor"].get<std::string>(),
                j.value("S_churn", 0.0)});
  }
  return out;
}

bool is_scored(const std::set<EvalKey>& done, int64_t step, double cfg, const std::string& extractor, double churn) {
  auto same = [](double a, double b) { return std::abs(a - b) <= 1e-9 * std::max(1.0, std::abs(b)); };
  for (const auto& [s, c, e, ch] : done)
    if (s == step && e == extractor && same(c, cfg) && same(ch, churn)) return true;
  return false;
}

int run_run_dir(const po::variables_map& vm) {
  const std::string dir = vm["run-dir"].as<std::string>();
  const fs::path config_path = fs::path(dir) / "config.toml";
  if (!fs::is_directory(dir)) throw std::runtime_error("run folder '" + dir + "' does not exist");
  const std::string config = vm.count("config") ? vm["config"].as<std::string>()
                             : fs::exists(config_path)  ? config_path.string()
                                                        : "";
  const Settings s = resolve_settings(vm, config);
  const bool watch = vm["watch"].as<bool>();
  const double poll = vm["poll"].as<double>();
  if (!(poll > 0)) throw std::runtime_error("--poll must be a positive number of seconds");
  if (watch && !fs::exists(config_path))
    throw std::runtime_error("--watch needs '" + config_path.string() + "' (its train.steps tells when training ends)");
  const nt::FeatureStats ref = load_reference(s);
  auto fx = nt::make_feature_extractor(s.eval.extractor, s.eval.extractor_weights, s.device);
  nt::check_reference(ref, *fx, s.eval.ref_stats);
  std::unique_ptr<nt::LatentDecoder> vae;
  const std::string metrics_path = (fs::path(dir) / "metrics.jsonl").string();
  const std::string ckpt_root = (fs::path(dir) / "ckpt").string();
  if (watch) {
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGUSR1, on_stop_signal);  // Slurm's warning before the time limit
  }
  int64_t train_steps = watch ? nt::load_config(config_path.string()).train.steps : 0;
  std::set<std::pair<int64_t, double>> failed;  // not retried while watching
  int errors = 0, scored = 0;
  nt::MetricsSink sink;
  bool sink_open = false;
  while (true) {
    auto ckpts = nt::list_checkpoints(ckpt_root);  // newest first
    std::reverse(ckpts.begin(), ckpts.end());
    const std::set<EvalKey> done = scored_evals(metrics_path);
    bool finished = false;
    for (const auto& [step, path] : ckpts) {
      for (const double cfg : s.eval.cfg_scales) {
        if (g_stop) break;
        if (is_scored(done, step, cfg, fx->name(), s.eval.S_churn) || failed.count({step, cfg})) continue;
        const std::string grid = nt::eval_grid_path(dir, step, cfg, s.eval.S_churn);
        try {
          auto r = score_one(path, ref, s, *fx, vae, cfg, grid, "eval step " + std::to_string(step));
          if (!sink_open) sink.open(metrics_path);
          sink_open = true;
          sink.write(r.to_json());
          ++scored;
          std::printf("step %lld cfg_scale %g: fid %.6f (%s, %lld samples, %.1f s)\n", static_cast<long long>(r.step),
                      cfg, r.fid, r.extractor.c_str(), static_cast<long long>(r.num_samples), r.seconds);
          std::fflush(stdout);
        } catch (const nt::CheckpointError& e) {
          if (!fs::exists(path)) {  // removed by the trainer's retention while we waited or read
            std::cerr << "fid_worker: skipped '" << path << "': it was removed\n";
            continue;
          }
          std::cerr << "fid_worker: " << e.what() << "\n";
          failed.insert({step, cfg});
          ++errors;
        }
      }
      if (watch && step >= train_steps) finished = true;
    }
    if (!watch || g_stop || finished) break;
    for (double waited = 0; waited < poll && !g_stop; waited += 0.1)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (g_stop) break;
    try {
      train_steps = nt::load_config(config_path.string()).train.steps;  // a resumed run may train longer
    } catch (const std::exception& e) {
      std::cerr << "fid_worker: keeping train.steps = " << train_steps << ": " << e.what() << "\n";
    }
  }
  if (g_stop) std::cerr << "fid_worker: stopped by signal " << g_stop << "\n";
  std::cerr << "fid_worker: " << scored << " evaluation(s) written to " << metrics_path
            << (errors ? ", " + std::to_string(errors) + " checkpoint(s) could not be scored" : std::string()) << "\n";
  return errors ? 1 : 0;
}

// ---- --make-ref -----------------------------------------------------------------------------

// Writes the statistics of `acc` to `out` (its folder made when missing) and says what they are.
void write_reference(const std::string& out, const nt::FeatureAccumulator& acc, const nt::FeatureExtractor& fx,
                     const std::string& of) {
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  nt::write_stats_npz(out, acc.finalize());
  std::printf("wrote %s: %s features (D = %lld) of %lld samples of %s\n", out.c_str(), fx.name().c_str(),
              static_cast<long long>(fx.dim()), static_cast<long long>(acc.count()), of.c_str());
}

int64_t num_to_use(const po::variables_map& vm, int64_t available, const std::string& of) {
  const int64_t num = vm.count("num") ? vm["num"].as<int64_t>() : available;
  if (num < 2 || num > available)
    throw std::runtime_error("--num must be in [2, " + std::to_string(available) + "] (the samples of '" + of +
                             "'), got " + std::to_string(num));
  return num;
}

// The features of a folder of images as the reference's fid.py reads it (eval/image_folder.h):
// --num N takes the subset EDM's Dataset(max_size = N, random_seed = --subset-seed) keeps. Batches
// are read while the previous one is extracted; runs of equal size go to the extractor together
// (the reference stacks each batch, so all its images must have one size).
nt::FeatureAccumulator image_folder_features(const po::variables_map& vm, const Settings& s, nt::FeatureExtractor& fx,
                                             const std::string& dir) {
  const nt::ImageFolder folder(dir);
  const std::vector<int64_t> files =
      nt::edm_subset(folder.size(), num_to_use(vm, folder.size(), dir), vm["subset-seed"].as<int64_t>());
  const int64_t num = static_cast<int64_t>(files.size());
  auto batch_files = [&](int64_t b0) {
    return std::vector<int64_t>(files.begin() + b0, files.begin() + std::min<int64_t>(num, b0 + s.batch));
  };
  auto read = [&folder](std::vector<int64_t> idx) { return folder.read01(idx); };
  nt::FeatureAccumulator acc;
  nt::Progress progress("features of " + dir, num, "images");
  std::future<std::vector<at::Tensor>> next = std::async(std::launch::async, read, batch_files(0));
  for (int64_t b0 = 0; b0 < num; b0 += s.batch) {
    const std::vector<int64_t> idx = batch_files(b0);  // positions in the folder
    std::vector<at::Tensor> images = next.get();  // [3,H,W] each
    if (b0 + s.batch < num) next = std::async(std::launch::async, read, batch_files(b0 + s.batch));
    for (size_t i = 0; i < images.size();) {
      size_t j = i + 1;
      while (j < images.size() && images[j].sizes() == images[i].sizes()) ++j;
      at::Tensor x = at::stack(std::vector<at::Tensor>(images.begin() + i, images.begin() + j));  // [n,3,H,W]
      if (fx.channels() == 1) {  // a grey-image extractor takes grey files, their one channel
        for (size_t k = i; k < j; ++k)
          if (!images[k][0].equal(images[k][1]) || !images[k][0].equal(images[k][2]))
            throw std::runtime_error("'" + folder.where(idx[k]) + "' is a colour image, and the " + fx.name() +
                                     " extractor takes grey images (1 channel)");
        x = x.narrow(1, 0, 1);  // [n,1,H,W]
      }
      acc.add(fx.features(x));  // [n,D]
      i = j;
    }
    progress.update(b0 + static_cast<int64_t>(images.size()));
  }
  progress.finish();
  return acc;
}

// --images DIR (without --make-ref): the reference's `fid.py calc`, the FID of a folder of samples
// (e.g. tread_sample --out DIR/) against --ref; last line `fid: X`.
int run_images(const po::variables_map& vm) {
  const Settings s = resolve_settings(vm, vm.count("config") ? vm["config"].as<std::string>() : "");
  const std::string dir = vm["images"].as<std::string>();
  const nt::FeatureStats ref = load_reference(s);
  auto fx = nt::make_feature_extractor(s.eval.extractor, s.eval.extractor_weights, s.device);
  nt::check_reference(ref, *fx, s.eval.ref_stats);
  const nt::FeatureAccumulator acc = image_folder_features(vm, s, *fx, dir);
  std::printf("%lld images of %s, %s features\n", static_cast<long long>(acc.count()), dir.c_str(), fx->name().c_str());
  std::printf("fid: %.9f\n", nt::frechet_distance(acc.finalize(), ref));
  return 0;
}

int run_make_ref(const po::variables_map& vm) {
  if (!vm.count("out") || vm.count("data") == vm.count("images"))
    throw std::runtime_error("--make-ref needs --data X.h5 or --images DIR (one of them) and --out ref.npz (see --help)");
  const std::string out = vm["out"].as<std::string>();
  const Settings s = resolve_settings(vm, vm.count("config") ? vm["config"].as<std::string>() : "");
  if (vm.count("images")) {
    auto fx = nt::make_feature_extractor(s.eval.extractor, s.eval.extractor_weights, s.device);
    const std::string dir = vm["images"].as<std::string>();
    write_reference(out, image_folder_features(vm, s, *fx, dir), *fx, dir);
    return 0;
  }
  const std::vector<std::string> data = vm["data"].as<std::vector<std::string>>();
  nt::LatentDataset ds(data);
  const nt::DatasetInfo& info = ds.info();
  const int64_t num = num_to_use(vm, info.size, data[0]);
  auto fx = nt::make_feature_extractor(s.eval.extractor, s.eval.extractor_weights, s.device);
  std::unique_ptr<nt::LatentDecoder> vae;
  const nt::LatentDecoder* dec = nt::decoder_for(info.latent_space, s.eval.vae_weights, s.device, vae);
  const nt::DecodeInfo decode = nt::decode_info_of(info);
  nt::FeatureAccumulator acc;
  nt::Progress progress("make-ref " + data[0], num, "samples");
  for (int64_t b0 = 0; b0 < num; b0 += s.batch) {
    std::vector<int64_t> idx;
    for (int64_t i = b0; i < std::min<int64_t>(num, b0 + s.batch); ++i) idx.push_back(i);
    at::Tensor x, y;
    ds.read(idx, /*noise_seed=*/0, &x, &y);                                   // x [B,C,H,W] normalised
    // Stored pixels are 8-bit images already (p/127.5 - 1, docs/data-format.md: used as stored);
    // the VAE's reconstructions of latents become 8-bit as the scored samples do.
    at::Tensor images = nt::samples_to_images01(x.to(s.device), decode, dec);  // [B,C',H',W'] in [0,1]
    if (!decode.pixels()) images = nt::images_to_8bit(images);
    acc.add(fx->features(images));  // [B,D]
    progress.update(b0 + static_cast<int64_t>(idx.size()));
  }
  progress.finish();
  write_reference(out, acc, *fx, data[0]);
  return 0;
}

// ---- --stats --ref --------------------------------------------------------------------------

int run_stats(const po::variables_map& vm) {
  if (!vm.count("ref")) throw std::runtime_error("give both --stats A.npz and --ref B.npz (see --help)");
  const nt::FeatureStats a = nt::read_stats_npz(vm["stats"].as<std::string>());
  const nt::FeatureStats b = nt::read_stats_npz(vm["ref"].as<std::string>());
  if (a.mu.size(0) != b.mu.size(0))
    throw std::runtime_error("the statistics have different feature sizes: " + vm["stats"].as<std::string>() +
                             " has D = " + std::to_string(a.mu.size(0)) + ", " + vm["ref"].as<std::string>() +
                             " has D = " + std::to_string(b.mu.size(0)));
  std::printf("fid: %.9f\n", nt::frechet_distance(a, b));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts(
      "fid_worker: Fréchet distance (FID) of checkpoints, runs and statistics files\n"
      "usage: fid_worker --checkpoint DIR [settings]        score one checkpoint; last line `fid: X`\n"
      "       fid_worker --run-dir DIR [--watch] [settings] score every unscored checkpoint of a run,\n"
      "                                                     appending eval lines to DIR/metrics.jsonl\n"
      "       fid_worker --make-ref --data X.h5 --out ref.npz [--num N] [settings]\n"
      "       fid_worker --make-ref --images DIR --out ref.npz [--num N] [settings]\n"
      "                                                     the statistics of the PNG and JPEG images\n"
      "                                                     under DIR, as the reference's fid.py ref\n"
      "       fid_worker --stats A.npz --ref B.npz          distance of two statistics files\n"
      "       fid_worker --images DIR [--num N] [settings]  FID of a folder of samples (e.g. tread_sample\n"
      "                                                     --out DIR/) against --ref, as fid.py calc\n"
      "Settings default to the [eval] section of the run's config.toml (or of --config F).\n"
      "--watch stops once the checkpoint at the run's train.steps is scored, or on Ctrl-C.\n\n"
      "Options");
  opts.add_options()
      ("help,h", "print this help")
      ("checkpoint", po::value<std::string>(), "score one checkpoint folder (its EMA weights)")
      ("run-dir", po::value<std::string>(), "score every checkpoint of a run without an eval line")
      ("watch", po::bool_switch(), "with --run-dir: keep polling until training ends")
      ("poll", po::value<double>()->default_value(60.0), "with --watch: seconds between looks at DIR/ckpt")
      ("make-ref", po::bool_switch(), "compute reference statistics of a data set or a folder of images (--data or --images, --out)")
      ("data", po::value<std::vector<std::string>>()->multitoken(), "with --make-ref: HDF5 data set(s)")
      ("images", po::value<std::string>(), "a folder of images (recursively), taken as the reference's fid.py takes one: "
                                           "its statistics with --make-ref, else its FID against --ref")
      ("subset-seed", po::value<int64_t>()->default_value(0), "with --images and --num: the seed of EDM's random subset")
      ("out", po::value<std::string>(), "with --make-ref: the .npz to write")
      ("num", po::value<int64_t>(), "with --make-ref --data: the first N samples; with --images: N of the images as EDM's Dataset(max_size=N) picks them (default: all)")
      ("stats", po::value<std::string>(), ".npz with `mu` [D] and `sigma` [D, D] to score against --ref")
      ("ref", po::value<std::string>(), "reference .npz statistics (default eval.ref_stats)")
      ("config", po::value<std::string>(), "TOML config whose [eval] gives the defaults")
      ("num-samples", po::value<int64_t>(), "samples to generate (default eval.num_samples)")
      ("seeds", po::value<std::string>(), "seeds, e.g. 0-49999 (default eval.seeds); the first N are used")
      ("steps", po::value<int>(), "Heun steps (default eval.steps)")
      ("s-churn", po::value<double>(), "EDM S_churn, stochastic sampling (default eval.S_churn)")
      ("cfg-scale", po::value<std::string>(), "guidance scale(s), e.g. 1 or 1,1.5 (default eval.cfg_scales)")
      ("extractor", po::value<std::string>(), "inception | classifier (default eval.extractor)")
      ("extractor-weights", po::value<std::string>(), "the extractor's .safetensors (default eval.extractor_weights)")
      ("vae", po::value<std::string>(), "VAE .safetensors for latent data (default eval.vae_weights)")
      ("grid", po::value<std::string>(), "with --checkpoint: write a PNG grid of the first 64 samples")
      ("batch", po::value<int>()->default_value(64), "samples per batch (does not change the result)")
      ("device", po::value<std::string>()->default_value("auto"), "auto | cpu | cuda")
      ("threads", po::value<int>()->default_value(0), "CPU threads (0 = LibTorch's default)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "fid_worker: " << e.what() << "\n(run fid_worker --help for the options)\n";
    return 1;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  const bool make_ref = vm["make-ref"].as<bool>();
  const int modes = int(vm.count("checkpoint")) + int(vm.count("run-dir")) + int(make_ref) + int(vm.count("stats")) +
                    int(vm.count("images") && !make_ref);
  if (modes != 1) {
    std::cerr << "fid_worker: give exactly one of --checkpoint DIR, --run-dir DIR, --make-ref, --stats A.npz --ref B.npz, "
                 "--images DIR (see --help)\n";
    return 1;
  }
  if (vm["watch"].as<bool>() && !vm.count("run-dir")) {
    std::cerr << "fid_worker: --watch goes with --run-dir\n";
    return 1;
  }
  try {
    if (vm["threads"].as<int>() > 0) torch::set_num_threads(vm["threads"].as<int>());
    if (vm.count("stats")) return run_stats(vm);
    if (vm.count("checkpoint")) return run_checkpoint(vm);
    if (vm.count("run-dir")) return run_run_dir(vm);
    if (!make_ref) return run_images(vm);
    return run_make_ref(vm);
  } catch (const std::exception& e) {
    std::cerr << "fid_worker: " << e.what() << "\n";
    return 1;
  }
}
