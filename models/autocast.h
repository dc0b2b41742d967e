// CUDA autocast (bf16) switches, written once for LibTorch 1.13 and 2.x (2.4 renamed the API).
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace nt {

inline bool cuda_autocast_enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

// Only the on/off flag (e.g. a block that must run in fp32 inside an autocast region).
inline void set_cuda_autocast_flag(bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
#else
  at::autocast::set_enabled(enabled);
#endif
}

// Turns CUDA autocast on (bf16) or off for a region; turning it off clears the cast cache.
inline void set_cuda_autocast(bool enabled) {
  set_cuda_autocast_flag(enabled);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  if (enabled) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
  if (enabled) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
  if (!enabled) at::autocast::clear_cache();
}

// Sets CUDA autocast on or off for a scope and restores the previous state on leaving it (also
// by an exception). Backward runs on the engine's threads, which do not carry the forward's
// autocast state: ops that run the forward's computation again there use this.
class AutocastAs {
 public:
  explicit AutocastAs(bool on) : was_(cuda_autocast_enabled()), on_(on) {
    if (on_ != was_) set_cuda_autocast(on_);
  }
  ~AutocastAs() {
    if (on_ != was_) set_cuda_autocast(was_);
  }
  AutocastAs(const AutocastAs&) = delete;
  AutocastAs& operator=(const AutocastAs&) = delete;

 private:
  bool was_, on_;
};

}  // namespace nt
