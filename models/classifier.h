// A small CNN digit classifier: the FID feature extractor of the MNIST quickstart, where no
// Inception weights can be had. Trained on the same data (`tread_data train-classifier`); its
// penultimate activations are the features of the Fréchet distance.
//
//   x [N,C,S,S] in [0,1] -> 2x - 1 -> conv1 3x3 (C -> w) -> ReLU -> max-pool 2   (w = 16)
//                        -> conv2 3x3 (w -> 2w) -> ReLU -> max-pool 2 -> flatten [N, 2w·(S/4)²]
//                        -> fc1 (-> D) -> ReLU = features [N,D] -> fc2 (-> K) = logits [N,K]
//
// Files are safetensors with the architecture in the metadata (format "nt-classifier",
// in_channels, input_size, num_classes, feature_dim, width), so loading needs nothing else.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nt {

struct ClassifierConfig {
  int in_channels = 1;
  int input_size = 16;  // S: H = W, a multiple of 4
  int num_classes = 10;
  int feature_dim = 128;  // D
  int width = 16;         // w: channels of conv1 (conv2 has 2w)
};

struct ClassifierImpl : torch::nn::Module {
  // Throws std::invalid_argument for sizes out of range (input_size not a positive multiple
  // of 4, non-positive channels, classes, feature_dim or width).
  explicit ClassifierImpl(const ClassifierConfig& c);
  at::Tensor features(const at::Tensor& x01);  // [N,C,S,S] in [0,1] -> [N,D] (after the ReLU)
  at::Tensor forward(const at::Tensor& x01);   // [N,C,S,S] in [0,1] -> logits [N,K]

  ClassifierConfig cfg;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Classifier);

// Training with Adam and cross-entropy. The initial weights come from the caller (LibTorch's
// global generator when the model is made: seed it with torch::manual_seed first); each epoch's
// order is randperm(N) from a generator seeded with mix_seed(seed, epoch). The learning rate
// decays from lr to 0 along a cosine over all steps. On the CPU with a
// fixed number of threads the result is the same every time.
struct ClassifierTraining {
  int epochs = 10;
  int batch_size = 32;
  double lr = 1e-3;
  uint64_t seed = 0;
};
// images01 [N,C,S,S] float in [0,1] and labels [N] int64 in [0, num_classes), on the CPU (batches
// move to the model's device). Calls on_epoch(epoch, mean loss) after each epoch; returns the
// mean training loss of every epoch. Leaves the model in eval mode.
std::vector<double> train_classifier(Classifier& model, const at::Tensor& images01, const at::Tensor& labels,
                                     const ClassifierTraining& t,
                                     const std::function<void(int epoch, double loss)>& on_epoch = {});
// The share of images whose arg-max logit is their label.
double classifier_accuracy(Classifier& model, const at::Tensor& images01, const at::Tensor& labels,
                           int batch_size = 512);

// Writes every parameter (names conv1.weight, ..., fc2.bias) with the architecture and `extra`
// metadata (e.g. the data set, the validation accuracy) to `path`, through `path`.tmp and a
// rename. Throws SafetensorsError naming the file when it cannot be written.
void save_classifier(Classifier& model, const std::string& path,
                     const std::map<std::string, std::string>& extra = {});

// Reads a classifier file strictly: the architecture from its metadata, every parameter present
// with its shape, no unknown tensors. Returns the model in eval mode on `device`. Throws
// SafetensorsError naming the file and the metadata key or tensor at fault.
Classifier load_classifier(const std::string& path, const c10::Device& device);

}  // namespace nt
