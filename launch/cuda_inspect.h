// Inspecting a CUDA run for tread_bench: the device's name, the caching allocator's peak memory
// and a Kineto trace of a few steps. They need LibTorch's CUDA headers, so they are compiled in
// only with NT_CUDA_EXTRAS (a CUDA LibTorch); without it they report "not available".
#pragma once
#include <functional>
#include <string>

namespace nt {

// True when this build has the CUDA extras and a CUDA device is visible.
bool cuda_inspect_available();
// The device's marketing name ("NVIDIA H200"); "" when unavailable.
std::string cuda_device_name(int device);
// Peak bytes allocated by tensors (torch.cuda.max_memory_allocated) since the last reset, in GB
// (1e9 bytes); -1 when unavailable.
void cuda_reset_peak_memory(int device);
double cuda_peak_memory_gb(int device);
// Runs `fn` under the Kineto profiler (CPU and CUDA activity) and writes a Chrome trace to
// `path`. Returns false (running nothing) when unavailable.
bool cuda_profile(const std::string& path, const std::function<void()>& fn);

}  // namespace nt
