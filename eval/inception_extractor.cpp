// The Inception-v3 of pytorch-fid (models/inception.h) as a FeatureExtractor: pool3, 2048 features.
#include <torch/torch.h>

#include <memory>
#include <stdexcept>

#include "eval/feature_extractor.h"
#include "models/inception.h"

namespace nt {

namespace {

class InceptionExtractor : public FeatureExtractor {
 public:
  InceptionExtractor(const std::string& weights, const c10::Device& device)
      : device_(device), model_(load_inception_fid(weights, device)) {}
  std::string name() const override { return "inception"; }
  int64_t dim() const override { return 2048; }
  int64_t channels() const override { return 3; }
  at::Tensor features(const at::Tensor& images01) override {
    if (images01.dim() != 4 || (images01.size(1) != 1 && images01.size(1) != 3))
      throw std::runtime_error("the inception extractor takes images [N,1|3,H,W], got " + c10::str(images01.sizes()));
    torch::NoGradGuard no_grad;
    auto x = images01.to(device_, at::kFloat);
    if (x.size(1) == 1) x = x.repeat({1, 3, 1, 1});  // grey -> RGB, [N,3,H,W]
    return model_->forward(x).to(at::kCPU, at::kFloat);  // [N,2048]
  }

 private:
  c10::Device device_;
  InceptionV3Fid model_;
};

}  // namespace

std::unique_ptr<FeatureExtractor> make_inception_extractor(const std::string& weights, const c10::Device& device) {
  return std::make_unique<InceptionExtractor>(weights, device);
}

}  // namespace nt
