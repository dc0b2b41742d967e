#include "models/attention_backend.h"

#include <ATen/Context.h>
#include <torch/version.h>

#include <stdexcept>

namespace nt {

bool set_attention_backend(const std::string& name) {
  if (name != "auto" && name != "cudnn" && name != "flash" && name != "efficient" && name != "math")
    throw std::invalid_argument("attention backend \"" + name +
                                "\": expected \"auto\", \"cudnn\", \"flash\", \"efficient\" or \"math\"");
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::Context& ctx = at::globalContext();
  ctx.setSDPUseMath(true);
  ctx.setSDPUseMemEfficient(name != "math");
  ctx.setSDPUseFlash(name == "auto" || name == "flash");
  ctx.setSDPUseCuDNN(name == "auto" || name == "cudnn");
  return true;
#else
  return name == "auto" || name == "math";
#endif
}

}  // namespace nt
