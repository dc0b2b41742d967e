#include "core/blas_advice.h"

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace nt {

std::string openblas_core() {
  using CoreName = char* (*)();
  // Looked up at run time: LibTorch links the system's BLAS, which need not be OpenBLAS.
  const auto corename = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = corename ? corename() : nullptr;
  return name ? name : "";
}

std::string blas_kernel_advice() {
  std::string core = openblas_core();
  std::transform(core.begin(), core.end(), core.begin(), [](unsigned char c) { return std::tolower(c); });
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  if (core != "prescott" || (set && *set)) return "";
  __builtin_cpu_init();
  // The flags scripts/quickstart tests for the same choice (SkylakeX's kernels use all four).
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const char* better = avx512                                                              ? "SkylakeX"
                       : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "Haswell"
                                                                                         : nullptr;
  if (!better) return "";
  return std::string("OpenBLAS did not recognise this CPU and runs its Prescott (SSE3) kernels, which make CPU "
                     "products several times slower here: start with OPENBLAS_CORETYPE=") +
         better + " (scripts/quickstart does so)";
}

}  // namespace nt
