// pytorch-fid's FID Inception-v3 (see models/inception.h): torchvision's Inception3 blocks
// with pytorch-fid's FID patches, the pool3 forward, and strict loading of its weights.
#include "models/inception.h"

#include <torch/torch.h>

#include <set>
#include <sstream>
#include <stdexcept>

#include "core/safetensors.h"

namespace nt {
namespace {

// The 3x3 stride-1 pools at the end of the Inception blocks. pytorch-fid patches them to
// TensorFlow's behaviour: the average does not count the zero padding.
at::Tensor avg_pool_3x3_excluding_pad(const at::Tensor& x) {
  return at::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}, /*ceil_mode=*/false,
                        /*count_include_pad=*/false);
}

at::Tensor max_pool_3x3_stride2(const at::Tensor& x) {  // [N,C,H,W] -> [N,C,(H-3)/2+1,...]
  return at::max_pool2d(x, {3, 3}, {2, 2});
}

// A kernel size or padding (h, w) for BasicConv2d's forwarding constructor.
torch::ExpandingArray<2> K(int64_t h, int64_t w) { return torch::ExpandingArray<2>({h, w}); }

}  // namespace

// ---------------------------------------------------------------------------------------
// Blocks

BasicConv2dImpl::BasicConv2dImpl(int64_t in, int64_t out, torch::ExpandingArray<2> kernel,
                                 torch::ExpandingArray<2> stride,
                                 torch::ExpandingArray<2> padding) {
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                       .stride(stride)
                                                       .padding(padding)
                                                       .bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(0.001)));
}

at::Tensor BasicConv2dImpl::forward(const at::Tensor& x) {
  return at::relu(bn->forward(conv->forward(x)));
}

FidInceptionAImpl::FidInceptionAImpl(int64_t in, int64_t pool_features) {
  branch1x1 = register_module("branch1x1", BasicConv2d(in, 64, 1));
  branch5x5_1 = register_module("branch5x5_1", BasicConv2d(in, 48, 1));
  branch5x5_2 = register_module("branch5x5_2", BasicConv2d(48, 64, 5, 1, 2));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", BasicConv2d(in, 64, 1));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", BasicConv2d(64, 96, 3, 1, 1));
  branch3x3dbl_3 = register_module("branch3x3dbl_3", BasicConv2d(96, 96, 3, 1, 1));
  branch_pool = register_module("branch_pool", BasicConv2d(in, pool_features, 1));
}

at::Tensor FidInceptionAImpl::forward(const at::Tensor& x) {  // [N,in,H,W]
  auto b1 = branch1x1->forward(x);                                     // [N,64,H,W]
  auto b5 = branch5x5_2->forward(branch5x5_1->forward(x));             // [N,64,H,W]
  auto b3 = branch3x3dbl_3->forward(
      branch3x3dbl_2->forward(branch3x3dbl_1->forward(x)));            // [N,96,H,W]
  auto bp = branch_pool->forward(avg_pool_3x3_excluding_pad(x));       // [N,pool,H,W]
  return at::cat({b1, b5, b3, bp}, 1);                                 // [N,224+pool,H,W]
}

InceptionBImpl::InceptionBImpl(int64_t in) {
  branch3x3 = register_module("branch3x3", BasicConv2d(in, 384, 3, 2));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", BasicConv2d(in, 64, 1));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", BasicConv2d(64, 96, 3, 1, 1));
  branch3x3dbl_3 = register_module("branch3x3dbl_3", BasicConv2d(96, 96, 3, 2));
}

at::Tensor InceptionBImpl::forward(const at::Tensor& x) {  // [N,in,H,W], H' = (H-3)/2+1
  auto b3 = branch3x3->forward(x);                                     // [N,384,H',W']
  auto bd = branch3x3dbl_3->forward(
      branch3x3dbl_2->forward(branch3x3dbl_1->forward(x)));            // [N,96,H',W']
  auto bp = max_pool_3x3_stride2(x);                                   // [N,in,H',W']
  return at::cat({b3, bd, bp}, 1);                                     // [N,480+in,H',W']
}

FidInceptionCImpl::FidInceptionCImpl(int64_t in, int64_t c7) {
  branch1x1 = register_module("branch1x1", BasicConv2d(in, 192, 1));
  branch7x7_1 = register_module("branch7x7_1", BasicConv2d(in, c7, 1));
  branch7x7_2 = register_module("branch7x7_2", BasicConv2d(c7, c7, K(1, 7), 1, K(0, 3)));
  branch7x7_3 = register_module("branch7x7_3", BasicConv2d(c7, 192, K(7, 1), 1, K(3, 0)));
  branch7x7dbl_1 = register_module("branch7x7dbl_1", BasicConv2d(in, c7, 1));
  branch7x7dbl_2 = register_module("branch7x7dbl_2", BasicConv2d(c7, c7, K(7, 1), 1, K(3, 0)));
  branch7x7dbl_3 = register_module("branch7x7dbl_3", BasicConv2d(c7, c7, K(1, 7), 1, K(0, 3)));
  branch7x7dbl_4 = register_module("branch7x7dbl_4", BasicConv2d(c7, c7, K(7, 1), 1, K(3, 0)));
  branch7x7dbl_5 = register_module("branch7x7dbl_5", BasicConv2d(c7, 192, K(1, 7), 1, K(0, 3)));
  branch_pool = register_module("branch_pool", BasicConv2d(in, 192, 1));
}

at::Tensor FidInceptionCImpl::forward(const at::Tensor& x) {  // [N,in,H,W]
  auto b1 = branch1x1->forward(x);                                     // [N,192,H,W]
  auto b7 = branch7x7_3->forward(branch7x7_2->forward(branch7x7_1->forward(x)));  // [N,192,H,W]
  auto bd = branch7x7dbl_1->forward(x);                                // [N,c7,H,W]
  bd = branch7x7dbl_3->forward(branch7x7dbl_2->forward(bd));           // [N,c7,H,W]
  bd = branch7x7dbl_5->forward(branch7x7dbl_4->forward(bd));           // [N,192,H,W]
  auto bp = branch_pool->forward(avg_pool_3x3_excluding_pad(x));       // [N,192,H,W]
  return at::cat({b1, b7, bd, bp}, 1);                                 // [N,768,H,W]
}

InceptionDImpl::InceptionDImpl(int64_t in) {
  branch3x3_1 = register_module("branch3x3_1", BasicConv2d(in, 192, 1));
  branch3x3_2 = register_module("branch3x3_2", BasicConv2d(192, 320, 3, 2));
  branch7x7x3_1 = register_module("branch7x7x3_1", BasicConv2d(in, 192, 1));
  branch7x7x3_2 = register_module("branch7x7x3_2", BasicConv2d(192, 192, K(1, 7), 1, K(0, 3)));
  branch7x7x3_3 = register_module("branch7x7x3_3", BasicConv2d(192, 192, K(7, 1), 1, K(3, 0)));
  branch7x7x3_4 = register_module("branch7x7x3_4", BasicConv2d(192, 192, 3, 2));
}

at::Tensor InceptionDImpl::forward(const at::Tensor& x) {  // [N,in,H,W], H' = (H-3)/2+1
  auto b3 = branch3x3_2->forward(branch3x3_1->forward(x));             // [N,320,H',W']
  auto b7 = branch7x7x3_2->forward(branch7x7x3_1->forward(x));         // [N,192,H,W]
  b7 = branch7x7x3_4->forward(branch7x7x3_3->forward(b7));             // [N,192,H',W']
  auto bp = max_pool_3x3_stride2(x);                                   // [N,in,H',W']
  return at::cat({b3, b7, bp}, 1);                                     // [N,512+in,H',W']
}

FidInceptionEImpl::FidInceptionEImpl(int64_t in, Pool pool) : pool(pool) {
  branch1x1 = register_module("branch1x1", BasicConv2d(in, 320, 1));
  branch3x3_1 = register_module("branch3x3_1", BasicConv2d(in, 384, 1));
  branch3x3_2a = register_module("branch3x3_2a", BasicConv2d(384, 384, K(1, 3), 1, K(0, 1)));
  branch3x3_2b = register_module("branch3x3_2b", BasicConv2d(384, 384, K(3, 1), 1, K(1, 0)));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", BasicConv2d(in, 448, 1));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", BasicConv2d(448, 384, 3, 1, 1));
  branch3x3dbl_3a = register_module("branch3x3dbl_3a", BasicConv2d(384, 384, K(1, 3), 1, K(0, 1)));
  branch3x3dbl_3b = register_module("branch3x3dbl_3b", BasicConv2d(384, 384, K(3, 1), 1, K(1, 0)));
  branch_pool = register_module("branch_pool", BasicConv2d(in, 192, 1));
}

at::Tensor FidInceptionEImpl::forward(const at::Tensor& x) {  // [N,in,H,W]
  auto b1 = branch1x1->forward(x);                                     // [N,320,H,W]
  auto b3 = branch3x3_1->forward(x);                                   // [N,384,H,W]
  b3 = at::cat({branch3x3_2a->forward(b3), branch3x3_2b->forward(b3)}, 1);  // [N,768,H,W]
  auto bd = branch3x3dbl_2->forward(branch3x3dbl_1->forward(x));       // [N,384,H,W]
  bd = at::cat({branch3x3dbl_3a->forward(bd), branch3x3dbl_3b->forward(bd)}, 1);  // [N,768,H,W]
  // FIDInceptionE_2 max-pools here (an artefact of the TensorFlow graph pytorch-fid ports).
  auto pooled = pool == Pool::kMax ? at::max_pool2d(x, {3, 3}, {1, 1}, {1, 1})
                                   : avg_pool_3x3_excluding_pad(x);    // [N,in,H,W]
  auto bp = branch_pool->forward(pooled);                              // [N,192,H,W]
  return at::cat({b1, b3, bd, bp}, 1);                                 // [N,2048,H,W]
}

// ---------------------------------------------------------------------------------------
// The network

InceptionV3FidImpl::InceptionV3FidImpl() {
  Conv2d_1a_3x3 = register_module("Conv2d_1a_3x3", BasicConv2d(3, 32, 3, 2));
  Conv2d_2a_3x3 = register_module("Conv2d_2a_3x3", BasicConv2d(32, 32, 3));
  Conv2d_2b_3x3 = register_module("Conv2d_2b_3x3", BasicConv2d(32, 64, 3, 1, 1));
  Conv2d_3b_1x1 = register_module("Conv2d_3b_1x1", BasicConv2d(64, 80, 1));
  Conv2d_4a_3x3 = register_module("Conv2d_4a_3x3", BasicConv2d(80, 192, 3));
  Mixed_5b = register_module("Mixed_5b", FidInceptionA(192, 32));
  Mixed_5c = register_module("Mixed_5c", FidInceptionA(256, 64));
  Mixed_5d = register_module("Mixed_5d", FidInceptionA(288, 64));
  Mixed_6a = register_module("Mixed_6a", InceptionB(288));
  Mixed_6b = register_module("Mixed_6b", FidInceptionC(768, 128));
  Mixed_6c = register_module("Mixed_6c", FidInceptionC(768, 160));
  Mixed_6d = register_module("Mixed_6d", FidInceptionC(768, 160));
  Mixed_6e = register_module("Mixed_6e", FidInceptionC(768, 192));
  Mixed_7a = register_module("Mixed_7a", InceptionD(768));
  Mixed_7b = register_module("Mixed_7b", FidInceptionE(1280, FidInceptionEImpl::Pool::kAverage));
  Mixed_7c = register_module("Mixed_7c", FidInceptionE(2048, FidInceptionEImpl::Pool::kMax));
  // Channels-last convolution weights (and activations, see forward): oneDNN and cuDNN run
  // NHWC convolutions without layout conversions (measured ~1.3x more images per CPU-second on
  // the 2-core machine; features move by ~3e-7 relative). Loading copies into this layout.
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
  eval();
}

at::Tensor InceptionV3FidImpl::forward(const at::Tensor& images) {
  if (images.dim() != 4 || images.size(1) != 3) {
    std::ostringstream msg;
    msg << "InceptionV3Fid: images must be [N,3,H,W] in [0,1], got " << images.sizes()
        << " (repeat a single channel to 3 before calling)";
    throw std::runtime_error(msg.str());
  }
  if (!at::isFloatingType(images.scalar_type())) {
    throw std::runtime_error(std::string("InceptionV3Fid: images must be floating point in [0,1], got ") +
                             c10::toString(images.scalar_type()));
  }
  torch::NoGradGuard no_grad;
  const auto device = Conv2d_1a_3x3->conv->weight.device();
  auto x = images.to(device, at::kFloat);                                  // [N,3,H,W]
  x = at::upsample_bilinear2d(x, {299, 299}, /*align_corners=*/false);     // [N,3,299,299]
  x = 2 * x - 1;                                                           // [0,1] -> [-1,1]
  x = x.contiguous(at::MemoryFormat::ChannelsLast);                        // NHWC in memory
  x = Conv2d_1a_3x3->forward(x);                                           // [N,32,149,149]
  x = Conv2d_2a_3x3->forward(x);                                           // [N,32,147,147]
  x = Conv2d_2b_3x3->forward(x);                                           // [N,64,147,147]
  x = max_pool_3x3_stride2(x);                                             // [N,64,73,73]
  x = Conv2d_3b_1x1->forward(x);                                           // [N,80,73,73]
  x = Conv2d_4a_3x3->forward(x);                                           // [N,192,71,71]
  x = max_pool_3x3_stride2(x);                                             // [N,192,35,35]
  x = Mixed_5b->forward(x);                                                // [N,256,35,35]
  x = Mixed_5c->forward(x);                                                // [N,288,35,35]
  x = Mixed_5d->forward(x);                                                // [N,288,35,35]
  x = Mixed_6a->forward(x);                                                // [N,768,17,17]
  x = Mixed_6b->forward(x);                                                // [N,768,17,17]
  x = Mixed_6c->forward(x);                                                // [N,768,17,17]
  x = Mixed_6d->forward(x);                                                // [N,768,17,17]
  x = Mixed_6e->forward(x);                                                // [N,768,17,17]
  x = Mixed_7a->forward(x);                                                // [N,1280,8,8]
  x = Mixed_7b->forward(x);                                                // [N,2048,8,8]
  x = Mixed_7c->forward(x);                                                // [N,2048,8,8]
  return at::adaptive_avg_pool2d(x, {1, 1}).flatten(1);                   // [N,2048]
}

// ---------------------------------------------------------------------------------------
// Loading

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Entries of pytorch-fid's state_dict that pool3 features do not use.
bool ignored_entry(const std::string& name) {
  return name.rfind("fc.", 0) == 0 || ends_with(name, ".num_batches_tracked");
}

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

InceptionV3Fid load_inception_fid(const std::string& path, const c10::Device& device) {
  const SafetensorsFile file = load_safetensors(path);  // throws naming the file
  InceptionV3Fid model;
  torch::NoGradGuard no_grad;

  // Every parameter and running statistic the FID network uses (not num_batches_tracked).
  std::vector<std::pair<std::string, at::Tensor>> wanted;
  for (const auto& p : model->named_parameters()) wanted.emplace_back(p.key(), p.value());
  for (const auto& b : model->named_buffers()) {
    if (!ignored_entry(b.key())) wanted.emplace_back(b.key(), b.value());
  }
  std::set<std::string> known;
  size_t missing = 0;
  const std::pair<std::string, at::Tensor>* first_missing = nullptr;
  for (const auto& w : wanted) {
    known.insert(w.first);
    if (!file.tensors.count(w.first) && missing++ == 0) first_missing = &w;
  }
  if (first_missing) {
    throw std::runtime_error(path + ": Inception weights lack tensor '" + first_missing->first +
                             "' " + shape_str(first_missing->second.sizes()) + " (" +
                             std::to_string(missing) + " of " + std::to_string(wanted.size()) +
                             " conv/BatchNorm tensors missing; expected pytorch-fid's FID "
                             "Inception state_dict names)");
  }
  for (const auto& [name, dst] : wanted) {
    const at::Tensor& src = file.tensors.at(name);
    if (src.sizes() != dst.sizes()) {
      throw std::runtime_error(path + ": Inception tensor '" + name + "' has shape " +
                               shape_str(src.sizes()) + ", expected " + shape_str(dst.sizes()));
    }
    if (!at::isFloatingType(src.scalar_type())) {
      throw std::runtime_error(path + ": Inception tensor '" + name + "' has dtype " +
                               c10::toString(src.scalar_type()) + ", expected floating point");
    }
    dst.copy_(src);
  }
  for (const auto& name : file.order) {
    if (!known.count(name) && !ignored_entry(name)) {
      const bool aux = name.rfind("AuxLogits.", 0) == 0;
      throw std::runtime_error(path + ": unexpected tensor '" + name +
                               "': not part of pytorch-fid's FID Inception" +
                               (aux ? " (this looks like torchvision's ImageNet Inception-v3, "
                                      "whose features give different FIDs)"
                                    : ""));
    }
  }
  model->to(device);
  model->eval();
  return model;
}

}  // namespace nt
