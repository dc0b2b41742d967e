// tread_sample: generate samples from a checkpoint or a weights file with the EDM Heun sampler.
//   tread_sample --checkpoint runs/x/ckpt/latest --seeds 0-63 --steps 18 --out grid.png
//   tread_sample --config F --weights W.safetensors --seeds 0-99 --classes 0-9 --out grid.png
//   ... --out samples.h5   (/samples [N,C,H,W] before decoding, /labels, /seeds)
//   ... --out grid.png --vae sd-vae-ft-ema.safetensors   (latent-space samples decoded to images)
#include <boost/program_options.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
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
      ("out", po::value<std::string>(), "output: samples.h5 or grid.png")
      ("vae", po::value<std::string>(), "VAE weights (.safetensors, LDM or diffusers names) that decode latent-space "
                                        "samples into the grid.png (not used for .h5 or pixel data)");
  nt::VaeFlags vae_flags;
  nt::add_vae_architecture_options(opts, vae_flags);
  try {
    po::variables_map vm;
    if (!nt::parse_command_line(argc, argv, opts, vm)) return 0;  // --help
    if (!vm.count("seeds") || !vm.count("out")) throw std::runtime_error("--seeds and --out are required (try --help)");
    const std::string out = vm["out"].as<std::string>();
    if (!ends_with(out, ".h5") && !ends_with(out, ".png"))
      throw std::runtime_error("--out must end in .h5 or .png, got '" + out + "'");
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
      // The PNG shows the 8-bit images the reference saves (images_to_8bit: floor(images01 * 255)),
      // which write_image_grid's rounding then keeps as they are.
      at::Tensor images01;  // [N, C', H', W'] in [0, 1]
      if (space == "pixels") {
        nt::DecodeInfo px;
        px.latent_space = "pixels";
        px.scale_factor = data_info.value("scale_factor", 1.0);
        px.shift_factor = data_info.value("shift_factor", 0.0);
        images01 = nt::samples_to_images01(r.samples, px, nullptr);
      } else {
        if (!vm.count("vae"))
          throw std::runtime_error("a PNG of samples in latent space '" + space +
                                   "' needs the VAE to decode them: give --vae W.safetensors, or write a .h5 instead");
        const nt::DecodeInfo info = nt::decode_info_from_json(data_info, data_source.empty() ? "the config's data (no data file found)" : data_source);
        const nt::LatentDecoder decoder =
            nt::make_vae_decoder(vm["vae"].as<std::string>(), device, nt::vae_config(vae_flags));
        std::vector<at::Tensor> parts;  // decoded in network batches: the VAE's activations are large
        for (int64_t b0 = 0; b0 < r.samples.size(0); b0 += req.batch_size) {
          const int64_t b = std::min<int64_t>(req.batch_size, r.samples.size(0) - b0);
          parts.push_back(nt::samples_to_images01(r.samples.narrow(0, b0, b).to(device), info, &decoder).cpu());
        }
        images01 = at::cat(parts);
      }
      const at::Tensor images = nt::images_to_8bit(images01) * 2 - 1;  // [-1, 1], as write_image_grid takes them
      const int64_t n = images.size(0);
      const int nrow = req.classes.empty() ? static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))))
                                           : static_cast<int>(n / req.classes.size());
      const int zoom = std::max<int>(1, 64 / static_cast<int>(images.size(2)));
      std::filesystem::path parent = std::filesystem::path(out).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
      nt::write_image_grid(out, images, nrow, zoom);
    }
    std::cout << "wrote " << out << " (" << r.samples.size(0) << " samples)\n";
    return 0;
  } catch (const std::exception& e) {
    nt::log_error(e.what());
    return 1;
  }
}
