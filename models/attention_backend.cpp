#include "models/attention_backend.h"

#include <ATen/Context.h>
#include <torch/version.h>

#include <stdexcept>

namespace nt {
namespace {
bool fused_chosen = false;
}

bool fused_attention_chosen() { return fused_chosen; }

bool set_attention_backend(const std::string& name) {
  if (name != "auto" && name != "cudnn" && name != "flash" && name != "efficient" && name != "math" &&
      name != "fused")
    throw std::invalid_argument("attention backend \"" + name +
                                "\": expected \"auto\", \"cudnn\", \"flash\", \"efficient\", \"math\" or "
                                "\"fused\"");
  fused_chosen = name == "fused";
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::Context& ctx = at::globalContext();
  ctx.setSDPUseMath(true);
  ctx.setSDPUseMemEfficient(name != "math");
  const bool all = name == "auto" || name == "fused";
  ctx.setSDPUseFlash(all || name == "flash");
  ctx.setSDPUseCuDNN(all || name == "cudnn");
  return true;
#else
  return name == "auto" || name == "math" || name == "fused";
#endif
}

}  // namespace nt
