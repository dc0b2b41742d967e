// Two tensors the same: both undefined (a gradient not asked for), or both defined and equal in
// shape and every bit (torch::equal). How the models tests compare a node's outputs and
// gradients with the plain ops' where they must agree bit for bit.
#pragma once
#include <ATen/ATen.h>

namespace nt::test {

inline bool equal_or_both_undefined(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() == b.defined() && (!a.defined() || at::equal(a, b));
}

}  // namespace nt::test
