// LibTorch's choice of BLAS library for CUDA products (see models/blas_backend.h).
#include "models/blas_backend.h"

#include <ATen/Context.h>
#include <torch/version.h>

#include <stdexcept>

namespace nt {

bool set_blas_backend(const std::string& name) {
  if (name != "auto" && name != "cublas" && name != "cublaslt")
    throw std::invalid_argument("BLAS backend \"" + name + "\": expected \"auto\", \"cublas\" or \"cublaslt\"");
  if (name == "auto") return true;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  at::globalContext().setBlasPreferredBackend(name == "cublaslt" ? at::BlasBackend::Cublaslt : at::BlasBackend::Cublas);
  return true;
#else
  return false;
#endif
}

}  // namespace nt
