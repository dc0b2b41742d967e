// The fused optimizer step's CUDA kernel (dist/adamw_device.h) run on the CPU through
// tests/models/cuda_emulation.h, against adamw_ema_fused's CPU form (the same per-element
// arithmetic, dist/adamw_math.h), bit for bit: the 4-wide groups, the tail past them, the
// grid-stride loop (a grid smaller than the groups), fp32 and bf16 gradients, with and without
// the bf16 copy, and the 1-wide kernel for buffers that are not aligned.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "dist/adamw.h"
#include "models/cuda_emulation.h"
#include "dist/adamw_device.h"

namespace {

namespace dev = nt::cuda::device;

std::vector<at::Tensor> copies_of(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.clone());
  return out;
}

template <int V, typename G>
void run_kernel(std::vector<at::Tensor>& b, const at::Tensor& grad, const at::Tensor& copy, int64_t offset, int64_t n,
                const nt::AdamWEmaConsts& c, int blocks) {
  auto f = [&](const at::Tensor& t) { return t.data_ptr<float>() + offset; };
  auto* cp = copy.defined() ? reinterpret_cast<__nv_bfloat16*>(copy.data_ptr()) + offset : nullptr;
  const G* g = reinterpret_cast<const G*>(grad.data_ptr()) + offset;
  NT_LAUNCH((dev::adamw_ema_kernel<V, G>), dim3(blocks), dim3(dev::kAdamThreads), nullptr, f(b[0]), g, f(b[1]), f(b[2]),
            f(b[3]), cp, n, c);
}

// Buffers theta, m, v, ema of `total` elements; the kernel updates [offset, offset + n).
void check(int64_t total, int64_t offset, int blocks, bool bf16_grad, bool with_copy, bool vec) {
  const std::string what = "n " + std::to_string(total - offset) + " offset " + std::to_string(offset) + " blocks " +
                           std::to_string(blocks) + (bf16_grad ? " bf16" : " fp32") + (with_copy ? " copy" : "");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(total * 7 + offset));
  std::vector<at::Tensor> b = {at::randn({total}, gen), at::randn({total}, gen) * 0.1, at::rand({total}, gen) * 0.01,
                               at::randn({total}, gen)};  // theta, m, v (>= 0), ema
  at::Tensor grad = at::randn({total}, gen);
  if (bf16_grad) grad = grad.to(at::kBFloat16);
  const auto nan_copy = [&] { return at::full({total}, NAN, at::TensorOptions().dtype(at::kBFloat16)); };
  at::Tensor copy = with_copy ? nan_copy() : at::Tensor();
  const int64_t n = total - offset;
  const nt::AdamWEmaConsts c = nt::adamw_ema_consts(3e-3, 0.9, 0.95, 1e-6, 0.1, 3, 0.6, 0.99);

  auto want = copies_of(b);  // the CPU form over the same range
  std::vector<at::Tensor> ps = {want[0].narrow(0, offset, n)}, gs = {grad.narrow(0, offset, n)},
                          es = {want[3].narrow(0, offset, n)};
  nt::AdamWState st;
  st.exp_avg = {want[1].narrow(0, offset, n)};
  st.exp_avg_sq = {want[2].narrow(0, offset, n)};
  st.step = 2;  // the update is the third, as c's
  at::Tensor want_copy = with_copy ? nan_copy() : at::Tensor();
  nt::adamw_ema_fused(ps, gs, st, nt::AdamWParams{3e-3, 0.9, 0.95, 1e-6, 0.1}, es, 0.99, 0.6,
                      with_copy ? std::vector<at::Tensor>{want_copy.narrow(0, offset, n)} : std::vector<at::Tensor>{});

  if (vec) {
    if (bf16_grad) run_kernel<4, __nv_bfloat16>(b, grad, copy, offset, n, c, blocks);
    else run_kernel<4, float>(b, grad, copy, offset, n, c, blocks);
  } else {
    if (bf16_grad) run_kernel<1, __nv_bfloat16>(b, grad, copy, offset, n, c, blocks);
    else run_kernel<1, float>(b, grad, copy, offset, n, c, blocks);
  }
  const char* names[] = {"theta", "m", "v", "ema"};
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(torch::equal(b[i], want[i])) << names[i] << ": " << what;
  if (with_copy) {
    // Updated elements equal the CPU form's copy; the others stay NaN (nothing written outside).
    EXPECT_TRUE(torch::equal(copy.narrow(0, offset, n), want_copy.narrow(0, offset, n))) << "copy: " << what;
    EXPECT_TRUE(copy.narrow(0, 0, offset).isnan().all().item<bool>()) << "copy before the range: " << what;
  }
  EXPECT_FALSE(torch::equal(b[0].narrow(0, offset, n), copies_of({b[0]})[0].narrow(0, offset, n).zero_()))
      << "the kernel should have computed something: " << what;
}

TEST(EmulatedAdamW, KernelEqualsCpuForm) {
  const int64_t threads = nt::cuda::device::kAdamThreads;
  for (const bool bf16 : {false, true})
    for (const bool with_copy : {false, true}) {
      check(7, 0, 1, bf16, with_copy, /*vec=*/true);                         // a tail only
      check(2 * threads * 4 * 3 + 5, 0, 2, bf16, with_copy, /*vec=*/true);  // 3 rounds of the grid, a tail
      check(1000, 1, 1, bf16, with_copy, /*vec=*/false);                    // not aligned: 1-wide
    }
}

TEST(EmulatedAdamW, GridSizes) {
  EXPECT_EQ(dev::adamw_ema_blocks(1), 1);
  EXPECT_EQ(dev::adamw_ema_blocks(4 * dev::kAdamThreads), 1);
  EXPECT_EQ(dev::adamw_ema_blocks(4 * dev::kAdamThreads + 1), 2);
  EXPECT_EQ(dev::adamw_ema_blocks(int64_t(1) << 40), dev::kAdamMaxBlocks);
}

}  // namespace
