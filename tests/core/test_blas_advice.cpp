// core/blas_advice: the core OpenBLAS runs, found at run time as OpenBLAS itself reports it
// (OPENBLAS_VERBOSE=2 prints "Core: <name>" when the library loads), and the advice to set
// OPENBLAS_CORETYPE only where it runs its Prescott kernels on a CPU with better ones, unasked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include "core/blas_advice.h"
#include "test_util.h"

namespace {

TEST(BlasAdvice, NamesTheCoreOpenBlasReports) {
  const std::string core = nt::openblas_core();
  ASSERT_FALSE(core.empty()) << "LibTorch's BLAS is not OpenBLAS here (scripts/setup installs libopenblas0-pthread)";
  std::string out;
  nt::test::run_command("OPENBLAS_VERBOSE=2 " + nt::test::exe("launch/tread_run") + " --help", &out);
  EXPECT_CONTAINS(out, "Core: " + core);
}

TEST(BlasAdvice, OnlyForPrescottKernelsOnABetterCpuUnasked) {
  std::string core = nt::openblas_core();
  std::transform(core.begin(), core.end(), core.begin(), [](unsigned char c) { return std::tolower(c); });
  const char* before = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = before ? before : "";
  unsetenv("OPENBLAS_CORETYPE");
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool better = avx512 || (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  const std::string advice = nt::blas_kernel_advice();
  if (core == "prescott" && better) {
    EXPECT_CONTAINS(advice, avx512 ? "OPENBLAS_CORETYPE=SkylakeX" : "OPENBLAS_CORETYPE=Haswell");
  } else {
    EXPECT_EQ(advice, "") << "OpenBLAS runs its " << core << " kernels";
  }
  setenv("OPENBLAS_CORETYPE", "Haswell", 1);  // the user chose: no advice
  EXPECT_EQ(nt::blas_kernel_advice(), "");
  if (before) setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace
