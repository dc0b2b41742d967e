// Which of LibTorch's scaled_dot_product_attention kernels DiT's attention may use on CUDA
// (train.attention). LibTorch picks, among the kernels enabled that serve the inputs, in its own
// order of priority (on Hopper with LibTorch 2.11: cuDNN, then flash, then memory-efficient, then
// the math reference). A choice enables that kernel and disables the faster-ranked others; the
// memory-efficient kernel and math stay enabled behind it, since neither cuDNN's nor flash's serve
// fp32 inputs (TREAD's block after a route runs outside autocast, in fp32, as the reference's).
//   "auto"       every kernel (LibTorch's choice)
//   "cudnn"      cuDNN's, flash off
//   "flash"      FlashAttention-2, cuDNN's off
//   "efficient"  the memory-efficient kernel, cuDNN's and flash off
//   "math"       the reference composite only
//   "fused"      the project's own kernel (fused_attention, models/fused_kernels.h) where it
//                applies (bf16 on CUDA, T <= 256, the head widths it has), LibTorch's choice as
//                with "auto" elsewhere (fp32 inputs, longer sequences); any LibTorch version
#pragma once
#include <string>

namespace nt {

// Sets the process-wide choice; false where it cannot apply (LibTorch before 2.4 has no
// per-kernel switches: its DiT attention is the explicit softmax, i.e. "math"; there only "auto"
// and "math" apply; "fused" applies to any). Throws std::invalid_argument for another name.
bool set_attention_backend(const std::string& name);

// Whether the last set_attention_backend chose "fused".
bool fused_attention_chosen();

}  // namespace nt
