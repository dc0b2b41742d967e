// Feature extractors for FID: images in [0,1] -> one feature vector each. "inception" is the
// Inception-v3 of pytorch-fid (pool3, 2048 features); "classifier" is the small MNIST CNN of
// models/classifier.h (its penultimate layer), for the quickstart. The name is recorded with
// every FID it produces: numbers from different extractors are not comparable.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace nt {

class FeatureExtractor {
 public:
  virtual ~FeatureExtractor() = default;
  virtual std::string name() const = 0;  // "inception" | "classifier"
  virtual int64_t dim() const = 0;       // D
  // The channels of the images it was made for: 3 for Inception (which also takes grey images,
  // replicated), the classifier's in_channels.
  virtual int64_t channels() const = 0;
  // images01: [N,C,H,W] float in [0,1], any device -> [N, dim()] float32 on the CPU.
  // Throws std::runtime_error when the images do not fit (channels, size), naming both.
  virtual at::Tensor features(const at::Tensor& images01) = 0;
};

// kind "inception" | "classifier"; weights: the extractor's .safetensors file. Throws
// std::runtime_error naming the kind or the file: unknown kind, no weights given, a missing or
// invalid weights file.
std::unique_ptr<FeatureExtractor> make_feature_extractor(const std::string& kind, const std::string& weights,
                                                         const c10::Device& device);

}  // namespace nt
