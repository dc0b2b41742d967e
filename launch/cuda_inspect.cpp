// CUDA device name, peak memory and Kineto traces (see launch/cuda_inspect.h).
#include "launch/cuda_inspect.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#ifdef NT_CUDA_EXTRAS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>
#endif

namespace nt {

#ifdef NT_CUDA_EXTRAS

bool cuda_inspect_available() { return torch::cuda::is_available(); }

std::string cuda_device_name(int device) {
  if (!cuda_inspect_available()) return "";
  return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(device))->name;
}

void cuda_reset_peak_memory(int device) {
  if (!cuda_inspect_available()) return;
  // The caching allocator is set up lazily, by the first CUDA tensor: make one first.
  at::empty({1}, at::TensorOptions().device(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device))));
  c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
}

double cuda_peak_memory_gb(int device) {
  if (!cuda_inspect_available()) return -1;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return static_cast<double>(stats.allocated_bytes[0].peak) / 1e9;  // [0]: the aggregate of all pools
}

bool cuda_profile(const std::string& path, const std::function<void()>& fn) {
  if (!cuda_inspect_available()) return false;
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<ActivityType> activities{ActivityType::CPU, ActivityType::CUDA};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  fn();
  auto result = prof::disableProfiler();
  result->save(path);
  return true;
}

#else

bool cuda_inspect_available() { return false; }
std::string cuda_device_name(int) { return ""; }
void cuda_reset_peak_memory(int) {}
double cuda_peak_memory_gb(int) { return -1; }
bool cuda_profile(const std::string&, const std::function<void()>&) { return false; }

#endif

}  // namespace nt
