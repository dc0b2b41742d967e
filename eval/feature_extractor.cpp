#include "eval/feature_extractor.h"

#include <torch/torch.h>

#include <filesystem>
#include <stdexcept>

#include "models/classifier.h"

namespace nt {

namespace {

// The MNIST classifier's penultimate activations.
class ClassifierExtractor : public FeatureExtractor {
 public:
  ClassifierExtractor(const std::string& weights, const c10::Device& device)
      : weights_(weights), device_(device), model_(load_classifier(weights, device)) {}
  std::string name() const override { return "classifier"; }
  int64_t dim() const override { return model_->cfg.feature_dim; }
  int64_t channels() const override { return model_->cfg.in_channels; }
  at::Tensor features(const at::Tensor& images01) override {
    const auto& c = model_->cfg;
    if (images01.dim() != 4 || images01.size(1) != c.in_channels || images01.size(2) != c.input_size ||
        images01.size(3) != c.input_size)
      throw std::runtime_error("the classifier '" + weights_ + "' takes images [N, " + std::to_string(c.in_channels) +
                               ", " + std::to_string(c.input_size) + ", " + std::to_string(c.input_size) +
                               "], got " + c10::str(images01.sizes()) +
                               " (train a classifier on data of this size and channels)");
    torch::NoGradGuard no_grad;
    return model_->features(images01.to(device_, at::kFloat)).to(at::kCPU);  // [N,D]
  }

 private:
  std::string weights_;
  c10::Device device_;
  Classifier model_;
};

}  // namespace

// eval/inception_extractor.cpp: the Inception-v3 of models/inception.h.
std::unique_ptr<FeatureExtractor> make_inception_extractor(const std::string& weights, const c10::Device& device);

std::unique_ptr<FeatureExtractor> make_feature_extractor(const std::string& kind, const std::string& weights,
                                                         const c10::Device& device) {
  if (kind != "inception" && kind != "classifier")
    throw std::runtime_error("unknown feature extractor '" + kind + "': use \"inception\" or \"classifier\"");
  if (weights.empty())
    throw std::runtime_error("the " + kind + " feature extractor needs its weights: set eval.extractor_weights "
                             "(or --extractor-weights) to a .safetensors file" +
                             (kind == "classifier" ? std::string(" (make one with tread_data train-classifier)") : ""));
  if (!std::filesystem::exists(weights))
    throw std::runtime_error(kind + " extractor weights '" + weights + "' do not exist");
  if (kind == "classifier") return std::make_unique<ClassifierExtractor>(weights, device);
  return make_inception_extractor(weights, device);
}

}  // namespace nt
