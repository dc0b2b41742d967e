// The largest |got - want| relative to the largest |want|, computed in double: how the models
// tests compare a kernel's results with LibTorch's.
#pragma once
#include <ATen/ATen.h>

namespace nt::test {

inline double max_rel_diff(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

}  // namespace nt::test
