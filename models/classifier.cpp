#include "models/classifier.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "core/rng.h"
#include "core/safetensors.h"

namespace nt {

namespace {

const char* kFormat = "nt-classifier";

void check_config(const ClassifierConfig& c) {
  if (c.input_size < 4 || c.input_size % 4 != 0)
    throw std::invalid_argument("classifier input_size must be a positive multiple of 4, got " +
                                std::to_string(c.input_size));
  if (c.in_channels < 1 || c.num_classes < 1 || c.feature_dim < 1 || c.width < 1)
    throw std::invalid_argument("classifier in_channels, num_classes, feature_dim and width must be >= 1");
}

// An integer metadata entry of a classifier file; errors name the file and the key.
int metadata_int(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end())
    throw SafetensorsError("'" + path + "' lacks the metadata key '" + key +
                           "' (not a classifier written by tread_data train-classifier?)");
  try {
    size_t used = 0;
    const int v = std::stoi(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    throw SafetensorsError("'" + path + "': metadata '" + key + "' must be an integer, got '" + it->second + "'");
  }
}

}  // namespace

ClassifierImpl::ClassifierImpl(const ClassifierConfig& c) : cfg(c) {
  check_config(c);
  namespace nn = torch::nn;
  conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(c.in_channels, c.width, 3).padding(1)));
  conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(c.width, 2 * c.width, 3).padding(1)));
  const int64_t s = c.input_size / 4;
  fc1 = register_module("fc1", nn::Linear(2 * c.width * s * s, c.feature_dim));
  fc2 = register_module("fc2", nn::Linear(c.feature_dim, c.num_classes));
}

at::Tensor ClassifierImpl::features(const at::Tensor& x01) {
  TORCH_CHECK(x01.dim() == 4 && x01.size(1) == cfg.in_channels && x01.size(2) == cfg.input_size &&
                  x01.size(3) == cfg.input_size,
              "the classifier takes images [N, ", cfg.in_channels, ", ", cfg.input_size, ", ", cfg.input_size,
              "], got ", x01.sizes());
  auto x = x01 * 2 - 1;                                              // [N,C,S,S] in [-1,1]
  x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);          // [N,w,S/2,S/2]
  x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);          // [N,2w,S/4,S/4]
  return torch::relu(fc1->forward(x.flatten(1)));                    // [N,D]
}

at::Tensor ClassifierImpl::forward(const at::Tensor& x01) {
  return fc2->forward(features(x01));  // [N,K]
}

std::vector<double> train_classifier(Classifier& model, const at::Tensor& images01, const at::Tensor& labels,
                                     const ClassifierTraining& t, const std::function<void(int, double)>& on_epoch) {
  if (images01.dim() != 4 || labels.dim() != 1 || images01.size(0) != labels.size(0) || images01.size(0) == 0)
    throw std::invalid_argument("train_classifier needs images [N,C,S,S] and labels [N] with the same N > 0, got " +
                                c10::str(images01.sizes()) + " and " + c10::str(labels.sizes()));
  if (t.epochs < 1 || t.batch_size < 1 || !(t.lr > 0))
    throw std::invalid_argument("train_classifier needs epochs >= 1, batch_size >= 1 and lr > 0");
  const c10::Device device = model->fc2->weight.device();
  const int64_t n = images01.size(0);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(t.lr));
  std::vector<double> losses;
  const int64_t total_steps = t.epochs * ((n + t.batch_size - 1) / t.batch_size);
  int64_t step = 0;
  model->train();
  for (int epoch = 0; epoch < t.epochs; ++epoch) {
    at::Generator gen = make_generator(c10::Device(c10::kCPU), mix_seed(t.seed, static_cast<uint64_t>(epoch)));
    const at::Tensor order = torch::randperm(n, gen, torch::TensorOptions().dtype(at::kLong));  // [N]
    double loss_sum = 0;
    int64_t batches = 0;
    for (int64_t b0 = 0; b0 < n; b0 += t.batch_size) {
      const auto idx = order.narrow(0, b0, std::min<int64_t>(t.batch_size, n - b0));
      const auto x = images01.index_select(0, idx).to(device, at::kFloat);  // [B,C,S,S]
      const auto y = labels.index_select(0, idx).to(device, at::kLong);     // [B]
      const auto loss = torch::cross_entropy_loss(model->forward(x), y);
      const double progress = static_cast<double>(step++) / static_cast<double>(total_steps);
      for (auto& group : opt.param_groups())  // cosine decay to 0 over the whole run
        static_cast<torch::optim::AdamOptions&>(group.options()).lr(t.lr * 0.5 * (1 + std::cos(M_PI * progress)));
      opt.zero_grad();
      loss.backward();
      opt.step();
      loss_sum += loss.item<double>();
      ++batches;
    }
    losses.push_back(loss_sum / static_cast<double>(batches));
    if (on_epoch) on_epoch(epoch, losses.back());
  }
  model->eval();
  return losses;
}

double classifier_accuracy(Classifier& model, const at::Tensor& images01, const at::Tensor& labels, int batch_size) {
  if (images01.size(0) != labels.size(0) || images01.size(0) == 0)
    throw std::invalid_argument("classifier_accuracy needs as many labels as images, at least one");
  const c10::Device device = model->fc2->weight.device();
  torch::NoGradGuard no_grad;
  model->eval();
  int64_t correct = 0;
  const int64_t n = images01.size(0);
  for (int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const int64_t b = std::min<int64_t>(batch_size, n - b0);
    const auto pred = model->forward(images01.narrow(0, b0, b).to(device, at::kFloat)).argmax(1).to(at::kCPU);  // [B]
    correct += pred.eq(labels.narrow(0, b0, b).to(at::kLong)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

void save_classifier(Classifier& model, const std::string& path, const std::map<std::string, std::string>& extra) {
  const ClassifierConfig& c = model->cfg;
  std::map<std::string, std::string> meta = extra;
  meta["format"] = kFormat;
  meta["in_channels"] = std::to_string(c.in_channels);
  meta["input_size"] = std::to_string(c.input_size);
  meta["num_classes"] = std::to_string(c.num_classes);
  meta["feature_dim"] = std::to_string(c.feature_dim);
  meta["width"] = std::to_string(c.width);
  std::vector<NamedTensor> tensors;
  for (const auto& item : model->named_parameters()) tensors.push_back({item.key(), item.value().detach().to(at::kCPU)});
  const std::string tmp = path + ".tmp";
  save_safetensors(tmp, tensors, meta);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw SafetensorsError("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
}

Classifier load_classifier(const std::string& path, const c10::Device& device) {
  if (!std::filesystem::exists(path)) throw SafetensorsError("classifier weights '" + path + "' do not exist");
  SafetensorsFile file = load_safetensors(path);
  auto fmt = file.metadata.find("format");
  if (fmt == file.metadata.end() || fmt->second != kFormat)
    throw SafetensorsError("'" + path + "' is not a classifier file: its metadata 'format' is " +
                           (fmt == file.metadata.end() ? std::string("missing") : "'" + fmt->second + "'") +
                           ", expected '" + kFormat + "' (make one with tread_data train-classifier)");
  ClassifierConfig c;
  c.in_channels = metadata_int(file.metadata, "in_channels", path);
  c.input_size = metadata_int(file.metadata, "input_size", path);
  c.num_classes = metadata_int(file.metadata, "num_classes", path);
  c.feature_dim = metadata_int(file.metadata, "feature_dim", path);
  c.width = metadata_int(file.metadata, "width", path);
  Classifier model{nullptr};
  try {
    model = Classifier(c);
  } catch (const std::invalid_argument& e) {
    throw SafetensorsError("'" + path + "': bad architecture metadata: " + e.what());
  }
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    auto it = file.tensors.find(item.key());
    if (it == file.tensors.end()) throw SafetensorsError("'" + path + "' lacks the tensor '" + item.key() + "'");
    if (it->second.sizes() != item.value().sizes())
      throw SafetensorsError("'" + path + "': tensor '" + item.key() + "' has shape " + c10::str(it->second.sizes()) +
                             ", the architecture in its metadata needs " + c10::str(item.value().sizes()));
    if (!it->second.is_floating_point())
      throw SafetensorsError("'" + path + "': tensor '" + item.key() + "' is not floating point");
    item.value().copy_(it->second);
    used.insert(item.key());
  }
  for (const auto& name : file.order)
    if (!used.count(name)) throw SafetensorsError("'" + path + "' holds the unknown tensor '" + name + "'");
  model->to(device);
  model->eval();
  return model;
}

}  // namespace nt
