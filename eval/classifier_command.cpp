// `tread_data train-classifier`: trains the small CNN of models/classifier.h on a pixel-space data
// set, the FID feature extractor of the MNIST quickstart (eval.extractor = "classifier").
//   tread_data train-classifier --data data/generated/mnist16.h5 --out runs/mnist16_classifier.safetensors
// The last 10% of the samples are held out; the last line is the validation accuracy.
#include <boost/program_options.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "data/latent_dataset.h"
#include "data/tool_commands.h"
#include "eval/scoring.h"
#include "models/classifier.h"

namespace po = boost::program_options;

namespace {

int train_classifier_command(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data train-classifier --data X.h5... --out W.safetensors [--epochs E] [--batch B]\n"
      "                                   [--seed S] [--threads T] [--lr LR] [--width W]\n\n"
      "Trains the FID feature classifier (models/classifier.h) on a pixel-space data set\n"
      "(latent_space \"pixels\", values in [-1, 1]): the first 90% of the samples train it, the\n"
      "last 10% measure it. Deterministic for a seed and a thread count. The last line is\n"
      "`accuracy: X`, the validation accuracy.\n\n"
      "options");
  std::vector<std::string> data;
  std::string out;
  int epochs = 10, batch = 32, threads = 1, width = 16, feature_dim = 128;
  uint64_t seed = 0;
  double lr = 1e-3;
  desc.add_options()("help,h", "show this help")(
      "data", po::value(&data)->multitoken(), "HDF5 data set(s), concatenated in order")(
      "out", po::value(&out), "output weights (.safetensors)")(
      "epochs", po::value(&epochs)->default_value(10), "passes over the training part")(
      "batch", po::value(&batch)->default_value(32), "batch size")(
      "seed", po::value(&seed)->default_value(0), "initial weights and shuffling")(
      "threads", po::value(&threads)->default_value(1), "CPU threads (0 = LibTorch's default; these small layers run best on 1)")(
      "lr", po::value(&lr)->default_value(1e-3), "Adam learning rate")(
      "width", po::value(&width)->default_value(16), "channels of the first convolution (the second has twice)")(
      "feature-dim", po::value(&feature_dim)->default_value(128), "size of the feature layer (D of the FID)");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  if (data.empty() || out.empty()) throw po::error("train-classifier needs --data and --out");
  if (epochs < 1 || batch < 1 || !(lr > 0)) throw po::error("--epochs and --batch must be >= 1 and --lr > 0");
  if (threads < 0) throw po::error("--threads must be >= 0");
  if (width < 1 || feature_dim < 1) throw po::error("--width and --feature-dim must be >= 1");
  if (threads > 0) torch::set_num_threads(threads);

  const auto t0 = std::chrono::steady_clock::now();
  nt::LatentDataset ds(data);
  const nt::DatasetInfo& info = ds.info();
  if (info.latent_space != "pixels")
    throw std::runtime_error("'" + data[0] + "' holds latent space '" + info.latent_space +
                             "', but the classifier trains on pixels (latent_space \"pixels\"); for latent data "
                             "use the inception extractor");
  if (info.height != info.width || info.height % 4 != 0)
    throw std::runtime_error("'" + data[0] + "': the classifier needs square images with a side that is a multiple "
                             "of 4, got " + std::to_string(info.height) + "x" + std::to_string(info.width));
  if (info.size < 2) throw std::runtime_error("'" + data[0] + "' holds fewer than 2 samples");

  // All samples as images in [0,1] (a pixel data set fits in memory: 60k 32x32 digits are 245 MB).
  std::vector<at::Tensor> xs, ys;
  const nt::DecodeInfo decode = nt::decode_info_of(info);
  for (int64_t b0 = 0; b0 < info.size; b0 += 4096) {
    std::vector<int64_t> idx;
    for (int64_t i = b0; i < std::min<int64_t>(info.size, b0 + 4096); ++i) idx.push_back(i);
    at::Tensor x, y;
    ds.read(idx, seed, &x, &y);
    xs.push_back(nt::samples_to_images01(x, decode, nullptr));  // [B,C,S,S] in [0,1]
    ys.push_back(y);
  }
  const at::Tensor images = at::cat(xs), labels = at::cat(ys);  // [N,C,S,S], [N]
  const int64_t n_val = std::max<int64_t>(1, info.size / 10), n_train = info.size - n_val;

  nt::ClassifierConfig cfg;
  cfg.in_channels = info.channels;
  cfg.input_size = info.height;
  cfg.num_classes = info.num_classes;
  cfg.width = width;
  cfg.feature_dim = feature_dim;
  torch::manual_seed(seed);
  nt::Classifier model(cfg);
  nt::ClassifierTraining t;
  t.epochs = epochs;
  t.batch_size = batch;
  t.lr = lr;
  t.seed = seed;
  std::cout << "train-classifier: " << n_train << " training and " << n_val << " validation samples, "
            << info.channels << "x" << info.height << "x" << info.width << ", " << info.num_classes << " classes\n";
  nt::train_classifier(model, images.narrow(0, 0, n_train), labels.narrow(0, 0, n_train), t, [&](int e, double loss) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("epoch %d/%d: loss %.4f (%.1f s)\n", e + 1, epochs, loss, s);
    std::fflush(stdout);
  });
  const int64_t n_check = std::min<int64_t>(n_train, n_val);
  std::printf("training accuracy: %.4f (on the first %lld training samples)\n",
              nt::classifier_accuracy(model, images.narrow(0, 0, n_check), labels.narrow(0, 0, n_check)),
              static_cast<long long>(n_check));
  const double acc = nt::classifier_accuracy(model, images.narrow(0, n_train, n_val), labels.narrow(0, n_train, n_val));
  char acc_text[32];
  std::snprintf(acc_text, sizeof(acc_text), "%.4f", acc);
  std::string sources;
  for (const auto& d : data) sources += (sources.empty() ? "" : ", ") + d;
  nt::save_classifier(model, out,
                      {{"data", sources},
                       {"data_source", info.source},
                       {"seed", std::to_string(seed)},
                       {"epochs", std::to_string(epochs)},
                       {"train_samples", std::to_string(n_train)},
                       {"val_samples", std::to_string(n_val)},
                       {"val_accuracy", acc_text}});
  std::cout << "wrote " << out << "\n";
  std::cout << "accuracy: " << acc_text << "\n";
  return 0;
}

const bool registered = nt::register_tool_command(
    {"train-classifier", "train the small CNN whose features score FID on pixel data (MNIST)",
     train_classifier_command});

}  // namespace
