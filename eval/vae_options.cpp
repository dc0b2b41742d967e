// The KL-VAE architecture flags (see eval/vae_options.h).
#include "eval/vae_options.h"

#include <boost/program_options.hpp>

#include <sstream>
#include <vector>

namespace nt {
namespace po = boost::program_options;

namespace {

std::vector<int> positive_ints(const std::string& text, const std::string& option) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v <= 0)
      throw po::error("--" + option + " must be a comma-separated list of positive integers, got '" + text + "'");
    out.push_back(v);
  }
  if (out.empty()) throw po::error("--" + option + " must not be empty");
  return out;
}

}  // namespace

void add_vae_architecture_options(po::options_description& desc, VaeFlags& f) {
  desc.add_options()
      ("vae-ch", po::value(&f.cfg.ch)->default_value(f.cfg.ch), "VAE base width")
      ("vae-ch-mult", po::value(&f.ch_mult)->default_value(f.ch_mult), "VAE width multipliers per level")
      ("vae-res-blocks", po::value(&f.cfg.num_res_blocks)->default_value(f.cfg.num_res_blocks),
       "VAE res blocks per level")
      ("vae-z", po::value(&f.cfg.z_channels)->default_value(f.cfg.z_channels), "VAE latent channels");
}

VaeConfig vae_config(const VaeFlags& f) {
  VaeConfig cfg = f.cfg;
  cfg.ch_mult = positive_ints(f.ch_mult, "vae-ch-mult");
  return cfg;
}

}  // namespace nt
