// tread_sample: generate samples from a checkpoint or a weights file with the EDM Heun sampler.
//   tread_sample --checkpoint runs/x/ckpt/latest --seeds 0-63 --steps 18 --out grid.png
//   tread_sample --config F --weights W.safetensors --seeds 0-99 --classes 0-9 --out grid.png
//   ... --out samples.h5   (/samples [N,C,H,W] before decoding, /labels, /seeds)
//   ... --out grid.png --vae sd-vae-ft-ema.safetensors   (latent-space samples decoded to images)
//   ... --out DIR/ [--subdirs]   (one DIR/<seed:06d>.png per sample, as the reference's generate
//                                 writes them for its FID: 8-bit grey or RGB; --subdirs puts seed s
//                                 in DIR/<s - s % 1000:06d>/)
#include <boost/program_options.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "core/config.h"
#include "core/host_memory.h"
#include "core/log.h"
#include "data/latent_dataset.h"
#include "data/sample_file.h"
#include "eval/image_grid.h"
#include "eval/scoring.h"
#include "eval/vae_options.h"
#include "dist/model_io.h"
#include "launch/cli.h"
#include "models/sampling.h"
#include "models/zoo.h"

namespace po = boost::program_options;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string six_digits(int64_t v) {  // Python's f"{v:06d}"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06lld", static_cast<long long>(v));
  return buf;
}

// The reference's generate (edm.py): sample of seed s -> <dir>/<s:06d>.png, or with subdirs
// <dir>/<s - s % 1000:06d>/<s:06d>.png; one channel as PIL's mode "L", three as "RGB".
void write_sample_pngs(const std::string& dir, bool subdirs, const at::Tensor& images01, const at::Tensor& seeds) {
  const at::Tensor levels = (nt::images_to_8bit(images01) * 255).round().to(at::kByte);  // [B,C,H,W], floor(255 u)
  if (levels.size(1) != 1 && levels.size(1) != 3)
    throw std::runtime_error("samples with " + std::to_string(levels.size(1)) +
                             " channels cannot be PNG images (1 grey or 3 RGB): write a .h5 instead");
  for (int64_t i = 0; i < levels.size(0); ++i) {
    const int64_t seed = seeds[i].item<int64_t>();
    std::filesystem::path folder(dir);
    if (subdirs) folder /= six_digits(seed - seed % 1000);
    std::filesystem::create_directories(folder);
    nt::write_png((folder / (six_digits(seed) + ".png")).string(), levels[i].permute({1, 2, 0}).contiguous());
  }
}

}  // namespace

int main(int argc, char** argv) {
  nt::tune_host_allocator();
  po::options_description opts("tread_sample: generate samples with the EDM Heun sampler\n\nOptions");
  opts.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value<std::string>(), "checkpoint folder (its EMA weights and config)")
      ("config", po::value<std::string>(), "TOML config (with --weights)")
      ("weights", po::value<std::string>(), "reference-named .safetensors weights (with --config)")
      ("weights-kind", po::value<std::string>()->default_value("ema"), "with --checkpoint: ema | raw")
      ("set", po::value<std::vector<std::string>>()->composing(), "override a config key (repeatable)")
      ("seeds", po::value<std::string>(), "seeds, e.g. 0-63 or 1,5,7-9")
      ("steps", po::value<int>()->default_value(18), "Heun steps")
      ("cfg-scale", po::value<double>()->default_value(1.0), "guidance scale: cfg (1 = none), tread (> 1, as rf.py)")
      ("guidance", po::value<std::string>()->default_value("cfg"), "cfg | tread (TREAD-guided, as rf.py sample_tread)")
      ("tread-ratio", po::value<double>()->default_value(0.0), "tread guidance: selection ratio of the guiding branch")
      ("tread-delta", po::value<double>()->default_value(0.2), "tread guidance: the other branch routes ratio + delta")
      ("s-churn", po::value<double>()->default_value(0.0), "EDM S_churn (stochastic sampling)")
      ("classes", po::value<std::string>(), "one row per class, e.g. 0-9 (seeds split evenly into rows)")
      ("batch", po::value<int>()->default_value(64), "samples per network batch (does not change the samples)")
      ("device", po::value<std::string>()->default_value("auto"), "auto | cpu | cuda")
      ("out", po::value<std::string>(), "output: samples.h5, grid.png, or DIR/ (a PNG per sample, DIR/<seed:06d>.png)")
      ("subdirs", po::bool_switch(), "with --out DIR/: seed s in DIR/<s - s % 1000:06d>/, as the reference's subdirs")
      ("vae", po::value<std::string>(), "VAE weights (.safetensors, LDM or diffusers names) that decode latent-space "
                                        "samples into the grid.png (not used for .h5 or pixel data)");
  nt::VaeFlags vae_flags;
  nt::add_vae_architecture_options(opts, vae_flags);
  try {
    po::variables_map vm;
    if (!nt::parse_command_line(argc, argv, opts, vm)) return 0;  // --help
    if (!vm.count("seeds") || !vm.count("out")) throw std::runtime_error("--seeds and --out are required (try --help)");
    const std::string out = vm["out"].as<std::string>();
    const bool folder_out = ends_with(out, "/");
    if (!ends_with(out, ".h5") && !ends_with(out, ".png") && !folder_out)
      throw std::runtime_error("--out must end in .h5, .png or / (a folder of PNGs), got '" + out + "'");
    if (vm["subdirs"].as<bool>() && !folder_out) throw std::runtime_error("--subdirs needs --out DIR/");
    const std::vector<std::string> sets = nt::config_overrides(vm);

    nt::DiT model{nullptr};
    nt::Config cfg;
    nlohmann::json data_info;  // latent space and normalisation, to turn samples into images
    std::string data_source;   // where data_info comes from, for messages
    if (vm.count("checkpoint")) {
      if (vm.count("weights") || vm.count("config"))
        throw std::runtime_error("give either --checkpoint, or --config with --weights, not both");
      const std::string kind = vm["weights-kind"].as<std::string>();
      if (kind != "ema" && kind != "raw") throw std::runtime_error("--weights-kind must be ema or raw");
      auto ck = nt::load_checkpoint_model(vm["checkpoint"].as<std::string>(), kind == "ema" ? "ema" : "param");
      model = ck.model;
      cfg = nt::parse_config(ck.config_toml, vm["checkpoint"].as<std::string>() + "/config.toml", sets);
      data_info = ck.manifest.value("data", nlohmann::json());
      data_source = vm["checkpoint"].as<std::string>() + "/manifest.json";
    } else {
      if (!vm.count("config") || !vm.count("weights"))
        throw std::runtime_error("give --checkpoint DIR, or --config F with --weights W.safetensors");
      cfg = nt::load_config(vm["config"].as<std::string>(), sets);
      model = nt::DiT(nt::resolve_model(cfg.model));
      nt::load_weights(model, vm["weights"].as<std::string>());
      if (!cfg.data.paths.empty() && std::filesystem::exists(cfg.data.paths[0])) {
        nt::LatentDataset data({cfg.data.paths[0]});
        data_info = {{"latent_space", data.info().latent_space}, {"scale_factor", data.info().scale_factor},
                     {"shift_factor", data.info().shift_factor}};
        data_source = cfg.data.paths[0];
      }
    }
    std::string dev = vm["device"].as<std::string>();
    c10::Device device(c10::kCPU);
    if (dev == "cuda" || (dev == "auto" && torch::cuda::is_available())) device = c10::Device(c10::kCUDA, 0);
    model->to(device);

    nt::SampleRequest req;
    req.seeds = nt::parse_int_list(vm["seeds"].as<std::string>());
    if (vm.count("classes")) req.classes = nt::parse_int_list(vm["classes"].as<std::string>());
    req.sampler.num_steps = vm["steps"].as<int>();
    req.sampler.S_churn = vm["s-churn"].as<double>();
    req.sigma_data = cfg.diffusion.sigma_data;
    req.batch_size = vm["batch"].as<int>();
    if (req.batch_size < 1) throw std::runtime_error("--batch must be >= 1");
    if (req.sampler.num_steps < 2) throw std::runtime_error("--steps must be >= 2");
    const std::string guidance = vm["guidance"].as<std::string>();
    if (guidance == "cfg") {
      req.guidance = nt::Guidance::cfg_scale(vm["cfg-scale"].as<double>());
    } else if (guidance == "tread") {
      if (model->cfg.routes.empty()) throw std::runtime_error("--guidance tread needs a model with [[model.routes]]");
      try {
        req.guidance = nt::Guidance::tread(vm["cfg-scale"].as<double>(), vm["tread-ratio"].as<double>(),
                                           vm["tread-delta"].as<double>());
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error(std::string("--guidance tread: ") + e.what() +
                                 " (--cfg-scale, --tread-ratio, --tread-delta)");
      }
    } else {
      throw std::runtime_error("--guidance must be cfg or tread, got '" + guidance + "'");
    }

    auto r = nt::generate_samples(model, req, device);
    if (ends_with(out, ".h5")) {
      nt::write_sample_file(out, r.samples, r.labels, r.seeds,
                            {{"latent_space", data_info.value("latent_space", std::string("unknown"))}});
    } else {
      const std::string space = data_info.value("latent_space", std::string("unknown"));
      // The PNGs show the 8-bit images the reference saves (images_to_8bit: floor(images01 * 255)).
      nt::DecodeInfo info;
      std::unique_ptr<nt::LatentDecoder> decoder;
      if (space == "pixels") {
        info.latent_space = "pixels";
        info.scale_factor = data_info.value("scale_factor", 1.0);
        info.shift_factor = data_info.value("shift_factor", 0.0);
      } else {
        if (!vm.count("vae"))
          throw std::runtime_error("PNGs of samples in latent space '" + space +
                                   "' need the VAE to decode them: give --vae W.safetensors, or write a .h5 instead");
        info = nt::decode_info_from_json(data_info, data_source.empty() ? "the config's data (no data file found)" : data_source);
        decoder = std::make_unique<nt::LatentDecoder>(
            nt::make_vae_decoder(vm["vae"].as<std::string>(), device, nt::vae_config(vae_flags)));
      }
      std::vector<at::Tensor> parts;  // decoded in network batches: the VAE's activations are large
      for (int64_t b0 = 0; b0 < r.samples.size(0); b0 += req.batch_size) {
        const int64_t b = std::min<int64_t>(req.batch_size, r.samples.size(0) - b0);
        at::Tensor images01 = nt::samples_to_images01(r.samples.narrow(0, b0, b).to(device), info, decoder.get()).cpu();
        if (folder_out)  // written batch by batch: a folder may hold many more images than memory
          write_sample_pngs(out, vm["subdirs"].as<bool>(), images01, r.seeds.narrow(0, b0, b));
        else
          parts.push_back(images01);  // [b, C', H', W'] in [0, 1]
      }
      if (!folder_out) {
        // write_image_grid's rounding keeps the 8-bit levels as they are.
        const at::Tensor images = nt::images_to_8bit(at::cat(parts)) * 2 - 1;  // [-1, 1], as write_image_grid takes them
        const int64_t n = images.size(0);
        const int nrow = req.classes.empty() ? static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))))
                                             : static_cast<int>(n / req.classes.size());
        const int zoom = std::max<int>(1, 64 / static_cast<int>(images.size(2)));
        std::filesystem::path parent = std::filesystem::path(out).parent_path();
        if (!parent.empty()) std::filesystem::create_directories(parent);
        nt::write_image_grid(out, images, nrow, zoom);
      }
    }
    std::cout << "wrote " << out << " (" << r.samples.size(0) << " samples)\n";
    return 0;
  } catch (const std::exception& e) {
    nt::log_error(e.what());
    return 1;
  }
}
