// The KL-VAE architecture flags of the tools that load VAE weights (tread_data encode,
// tread_sample): --vae-ch, --vae-ch-mult, --vae-res-blocks, --vae-z, defaulting to
// sd-vae-ft-ema's architecture (models/vae.h VaeConfig).
#pragma once
#include <boost/program_options/options_description.hpp>

#include <string>

#include "models/vae.h"

namespace nt {

struct VaeFlags {
  VaeConfig cfg;
  std::string ch_mult = "1,2,4,4";
};

void add_vae_architecture_options(boost::program_options::options_description& desc, VaeFlags& flags);
// The architecture the flags describe; a malformed --vae-ch-mult throws
// boost::program_options::error naming it.
VaeConfig vae_config(const VaeFlags& flags);

}  // namespace nt
