// The VAE of models/vae.h as the LatentDecoder of eval/scoring.h.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <stdexcept>

#include "eval/scoring.h"
#include "models/vae.h"

namespace nt {

LatentDecoder make_vae_decoder(const std::string& weights, const c10::Device& device, const VaeConfig& cfg) {
  if (weights.empty())
    throw std::runtime_error("no VAE weights given: set eval.vae_weights (or --vae) to its .safetensors");
  if (!std::filesystem::exists(weights)) throw std::runtime_error("VAE weights '" + weights + "' do not exist");
  auto vae = std::make_shared<AutoencoderKL>(load_vae(weights, device, cfg));
  return [vae, device](const at::Tensor& v) {
    torch::NoGradGuard no_grad;
    return (*vae)->decode(v.to(device, at::kFloat));  // [N,z,h,w] -> [N,3,8h,8w] in about [-1,1]
  };
}

}  // namespace nt
