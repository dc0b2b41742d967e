// Releasing and restoring a flat buffer's memory under live views (dist/reshard.h): the views
// stay valid, and a forward whose weights are released after it and refilled before backward
// gives the gradients of an ordinary one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "dist/reshard.h"

namespace {

TEST(Reshard, ReleaseAndRestoreKeepViewsValid) {
  auto flat = torch::arange(12, torch::kFloat);
  auto view = flat.narrow(0, 4, 6).view({2, 3});
  nt::release_storage(flat);
  EXPECT_TRUE(nt::storage_released(flat));
  EXPECT_EQ(flat.storage().nbytes(), 0u);
  EXPECT_EQ(view.sizes(), (std::vector<int64_t>{2, 3}));  // shapes survive
  nt::restore_storage(flat);
  EXPECT_FALSE(nt::storage_released(flat));
  EXPECT_EQ(flat.storage().nbytes(), 12 * sizeof(float));
  // Refilled through the raw pointer (as a collective does), the view sees the new values.
  std::vector<float> v(12);
  for (int i = 0; i < 12; ++i) v[i] = 100.0f + i;
  std::memcpy(flat.data_ptr<float>(), v.data(), sizeof(float) * 12);
  EXPECT_FLOAT_EQ(view[1][2].item<float>(), 109.0f);
}

TEST(Reshard, BackwardThroughReleasedAndRefilledWeights) {
  torch::manual_seed(3);
  auto w0 = torch::randn({4, 5});
  auto x = torch::randn({3, 5}, torch::requires_grad());
  // Reference: an ordinary leaf weight.
  auto w_ref = w0.clone().requires_grad_(true);
  auto y_ref = torch::tanh(torch::matmul(x, w_ref.t())).sum();
  y_ref.backward();
  const auto gx_ref = x.grad().clone(), gw_ref = w_ref.grad().clone();
  x.mutable_grad().reset();
  // The weight as a view of a flat buffer, released after forward and refilled before backward.
  auto flat = w0.reshape({-1}).clone();
  auto w = flat.view({4, 5}).detach().requires_grad_(true);  // shares flat's storage
  auto out = torch::matmul(x, w.t());
  nt::release_storage(flat);
  out.register_hook([&](const at::Tensor& g) {
    nt::restore_storage(flat);
    std::memcpy(flat.data_ptr<float>(), w0.contiguous().data_ptr<float>(), sizeof(float) * 20);
    return g;
  });
  torch::tanh(out).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), gx_ref));
  EXPECT_TRUE(torch::equal(w.grad(), gw_ref));
}

}  // namespace
