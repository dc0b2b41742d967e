// train.blas (models/blas_backend.h): names checked; "auto" leaves LibTorch's choice; on a GPU with
// LibTorch 2.3 or later the switch takes effect (skipped elsewhere: LibTorch 1.13 has no switch).
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <stdexcept>

#include "models/blas_backend.h"

namespace {

TEST(BlasBackend, NamesAreCheckedAndAutoAlwaysApplies) {
  EXPECT_THROW(nt::set_blas_backend("cutlass"), std::invalid_argument);
  EXPECT_TRUE(nt::set_blas_backend("auto"));
#if !(TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3))
  EXPECT_FALSE(nt::set_blas_backend("cublaslt"));  // no switch in this LibTorch: the caller warns
#endif
}

TEST(BlasBackend, CudaSwitchTakesEffect) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  const at::BlasBackend before = at::globalContext().blasPreferredBackend();
  ASSERT_TRUE(nt::set_blas_backend("cublaslt"));
  EXPECT_EQ(at::globalContext().blasPreferredBackend(), at::BlasBackend::Cublaslt);
  ASSERT_TRUE(nt::set_blas_backend("cublas"));
  EXPECT_EQ(at::globalContext().blasPreferredBackend(), at::BlasBackend::Cublas);
  at::globalContext().setBlasPreferredBackend(before);
#else
  GTEST_SKIP() << "LibTorch before 2.3: no BLAS switch";
#endif
}

}  // namespace
