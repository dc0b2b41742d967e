// Random generators: one per purpose, seeded explicitly, their states saved in checkpoints.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace nt {

// A fresh generator on `device` (CPU or CUDA) seeded with `seed`, as
// torch.Generator(device).manual_seed(seed) does.
at::Generator make_generator(const c10::Device& device, uint64_t seed);
// splitmix64 of (a, b): derives independent seeds, e.g. (run seed, rank).
uint64_t mix_seed(uint64_t a, uint64_t b);
// The full state of a generator as a uint8 CPU tensor, and back.
at::Tensor generator_state(at::Generator& gen);
void set_generator_state(at::Generator& gen, const at::Tensor& state);

// A draw made on the CPU (a CPU generator drives a CUDA run as it drives a CPU one) moved to
// `device`: for a CUDA device through pinned memory and an asynchronous copy, so the host does
// not wait for the work already queued on the GPU (a plain .to(device) from pageable memory
// synchronises the stream: once per draw, the GPU idled while the host prepared the next step).
// Other cases: t.to(device).
at::Tensor to_device_async(const at::Tensor& t, const c10::Device& device);

}  // namespace nt
