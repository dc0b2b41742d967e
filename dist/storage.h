// FSDP's storage resize: the memory of a tensor's storage released (0 bytes) while every view of
// it stays a valid tensor (shape, strides and autograd links kept), and given back later
// (uninitialised, at least the tensor's extent). Sharding uses it for block units gathered only
// while they run and for gradient buffers that exist only from backward to the update.
#pragma once
#include <ATen/core/Tensor.h>

namespace nt {

void release_storage(const at::Tensor& t);  // the old allocation is freed here
void restore_storage(const at::Tensor& t);  // no-op when the storage already holds t
bool storage_released(const at::Tensor& t);

}  // namespace nt
