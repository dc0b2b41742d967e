// Inception-v3 exactly as pytorch-fid computes FID features (mseitzer/pytorch-fid
// `src/pytorch_fid/inception.py`: `InceptionV3(output_blocks=[3])` over `fid_inception_v3()`):
// bilinear resize to 299x299 (align_corners=False), scaling from [0,1] to [-1,1], torchvision's
// Inception3 stem and blocks with pytorch-fid's FID variants (average pools that exclude the
// padding, a max pool in the last block), then the 2048-d global average pool ("pool3").
// Parameter and buffer names are the state_dict names of pytorch-fid's FID Inception
// (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, ...), so its published
// weights file, converted to safetensors, loads as it is (see README.md).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <string>

namespace nt {

// torchvision's BasicConv2d: conv without bias, BatchNorm (eps 0.001, running statistics in
// eval mode), ReLU. Submodules `conv` and `bn`.
struct BasicConv2dImpl : torch::nn::Module {
  BasicConv2dImpl(int64_t in, int64_t out, torch::ExpandingArray<2> kernel,
                  torch::ExpandingArray<2> stride = 1, torch::ExpandingArray<2> padding = 0);
  at::Tensor forward(const at::Tensor& x);  // [N,in,H,W] -> [N,out,H',W']
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

// pytorch-fid's FIDInceptionA (Mixed_5b/c/d): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1,
// the 3x3 average pool excluding padding. Output channels 224 + pool_features.
struct FidInceptionAImpl : torch::nn::Module {
  FidInceptionAImpl(int64_t in, int64_t pool_features);
  at::Tensor forward(const at::Tensor& x);
  BasicConv2d branch1x1{nullptr}, branch5x5_1{nullptr}, branch5x5_2{nullptr},
      branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr},
      branch_pool{nullptr};
};
TORCH_MODULE(FidInceptionA);

// torchvision's InceptionB (Mixed_6a), a reduction: 3x3/2 | 1x1->3x3->3x3/2 | maxpool 3x3/2.
struct InceptionBImpl : torch::nn::Module {
  explicit InceptionBImpl(int64_t in);
  at::Tensor forward(const at::Tensor& x);  // [N,in,H,W] -> [N,480+in,(H-3)/2+1,(W-3)/2+1]
  BasicConv2d branch3x3{nullptr}, branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr},
      branch3x3dbl_3{nullptr};
};
TORCH_MODULE(InceptionB);

// pytorch-fid's FIDInceptionC (Mixed_6b..e): factorised 7x7 branches, average pool excluding
// padding. Output 768 channels.
struct FidInceptionCImpl : torch::nn::Module {
  FidInceptionCImpl(int64_t in, int64_t channels_7x7);
  at::Tensor forward(const at::Tensor& x);
  BasicConv2d branch1x1{nullptr}, branch7x7_1{nullptr}, branch7x7_2{nullptr},
      branch7x7_3{nullptr}, branch7x7dbl_1{nullptr}, branch7x7dbl_2{nullptr},
      branch7x7dbl_3{nullptr}, branch7x7dbl_4{nullptr}, branch7x7dbl_5{nullptr},
      branch_pool{nullptr};
};
TORCH_MODULE(FidInceptionC);

// torchvision's InceptionD (Mixed_7a), a reduction: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 |
// maxpool 3x3/2.
struct InceptionDImpl : torch::nn::Module {
  explicit InceptionDImpl(int64_t in);
  at::Tensor forward(const at::Tensor& x);  // [N,in,H,W] -> [N,512+in,(H-3)/2+1,(W-3)/2+1]
  BasicConv2d branch3x3_1{nullptr}, branch3x3_2{nullptr}, branch7x7x3_1{nullptr},
      branch7x7x3_2{nullptr}, branch7x7x3_3{nullptr}, branch7x7x3_4{nullptr};
};
TORCH_MODULE(InceptionD);

// pytorch-fid's FIDInceptionE_1 (Mixed_7b, average pool excluding padding) and FIDInceptionE_2
// (Mixed_7c, max pool instead), both 3x3 stride 1 padding 1. Output 2048 channels.
struct FidInceptionEImpl : torch::nn::Module {
  enum class Pool { kAverage, kMax };
  FidInceptionEImpl(int64_t in, Pool pool);
  at::Tensor forward(const at::Tensor& x);
  BasicConv2d branch1x1{nullptr}, branch3x3_1{nullptr}, branch3x3_2a{nullptr},
      branch3x3_2b{nullptr}, branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr},
      branch3x3dbl_3a{nullptr}, branch3x3dbl_3b{nullptr}, branch_pool{nullptr};
  Pool pool;
};
TORCH_MODULE(FidInceptionE);

// The FID feature network: torchvision's Inception3 module names, without AuxLogits and fc
// (which pool3 features do not use).
class InceptionV3FidImpl : public torch::nn::Module {
 public:
  InceptionV3FidImpl();
  // images: [N,3,H,W] floating point in [0,1] (any H,W; resized to 299x299 inside), moved to
  // the model's device -> [N,2048] pool3 features (float32), without autograd.
  at::Tensor forward(const at::Tensor& images);

  BasicConv2d Conv2d_1a_3x3{nullptr}, Conv2d_2a_3x3{nullptr}, Conv2d_2b_3x3{nullptr},
      Conv2d_3b_1x1{nullptr}, Conv2d_4a_3x3{nullptr};
  FidInceptionA Mixed_5b{nullptr}, Mixed_5c{nullptr}, Mixed_5d{nullptr};
  InceptionB Mixed_6a{nullptr};
  FidInceptionC Mixed_6b{nullptr}, Mixed_6c{nullptr}, Mixed_6d{nullptr}, Mixed_6e{nullptr};
  InceptionD Mixed_7a{nullptr};
  FidInceptionE Mixed_7b{nullptr}, Mixed_7c{nullptr};
};
TORCH_MODULE(InceptionV3Fid);

// Loads pytorch-fid-named weights from a safetensors file: every conv weight and BatchNorm
// weight, bias, running_mean and running_var must be there with its shape (any floating dtype,
// converted to float32); `fc.*` and `*.num_batches_tracked` entries are ignored; anything else
// is an error. Errors are std::runtime_error naming the file and the tensor. The model is
// returned in eval mode on `device`.
InceptionV3Fid load_inception_fid(const std::string& path, const c10::Device& device);

}  // namespace nt
