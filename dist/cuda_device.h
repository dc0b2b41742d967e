// The identity of a CUDA device as the driver names it, for telling apart the GPUs that the
// ranks of one node see (Slurm's per-task GPU binding shows each rank one device, all numbered 0).
// Needs only cuda_runtime.h and libcudart: built into nt_nccl, with the NCCL backend.
#pragma once
#include <string>

namespace nt {

// The PCI bus id of visible device `device` (e.g. "0000:1B:00.0"); "" when there is no such
// device or no driver.
std::string cuda_device_pci_bus_id(int device);

}  // namespace nt
