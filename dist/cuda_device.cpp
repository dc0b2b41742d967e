// A CUDA device's PCI bus id through the CUDA runtime (see dist/cuda_device.h).
#include "dist/cuda_device.h"

#include <cuda_runtime.h>

namespace nt {

std::string cuda_device_pci_bus_id(int device) {
  // No device or no driver is an answer here ("" = unknown), not an error: the runtime's error
  // state is cleared and the caller falls back to numbering GPUs by local rank.
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count) {
    cudaGetLastError();
    return "";
  }
  char id[32] = {0};
  if (cudaDeviceGetPCIBusId(id, sizeof(id), device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return id;
}

}  // namespace nt
