// The public launchers of the attention kernels (attention_cuda.h): the widths nvcc instantiates,
// shape and alignment checks, the kernels' shared memory, error checks. The kernels are in
// attention_kernels_device.h (also run on the CPU by tests/models/test_fused_kernels_emulated.cpp).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "core/cuda_check.h"
#include "models/attention_cuda.h"
#include "models/attention_kernels_device.h"
#include "models/dtype_dispatch_cuda.h"

namespace nt::cuda {
namespace {

// The head widths nvcc instantiates the kernels for (the one list: dispatch and messages).
template <int... kWidths>
struct Widths {};
using Instantiated = Widths<16, 24, 32, 64, 72, 128>;

// Calls f(std::integral_constant<int, hd>{}) for an instantiated head width; false for another.
template <typename F, int... kWidths>
bool dispatch_in(Widths<kWidths...>, int64_t hd, F&& f) {
  return ((hd == kWidths ? (f(std::integral_constant<int, kWidths>{}), true) : false) || ...);
}
template <typename F>
bool dispatch_width(int64_t hd, F&& f) {
  return dispatch_in(Instantiated{}, hd, f);
}


template <int... kWidths>
std::string text_of(Widths<kWidths...>) {
  std::string s;
  const int widths[] = {kWidths...}, n = sizeof...(kWidths);
  for (int i = 0; i < n; ++i) s += (i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::to_string(widths[i]);
  return s;
}

// A pointer and strides (elements of `bytes` bytes) at multiples of 16 bytes.
bool aligned_16(const void* p, int64_t bytes, int64_t a, int64_t b, int64_t c) {
  return p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 == 0 && a * bytes % 16 == 0 && b * bytes % 16 == 0 &&
         c * bytes % 16 == 0;
}

void check(const AttentionTensors& a, const char* op) {
  if (!attention_supports(a))
    throw std::runtime_error(std::string(op) + " (CUDA): unsupported shape or layout: N " + std::to_string(a.N) +
                             ", heads " + std::to_string(a.H) + ", T " + std::to_string(a.T) + ", head width " +
                             std::to_string(a.hd) + " (" + attention_limits() + "; strides multiples of 16 bytes)");
}

// A launcher for attention_*_launches: lets a kernel take `bytes` of dynamic shared memory (above
// the default 48 KB), then launches it on `s` with `args`.
template <typename E>
auto launcher(cudaStream_t s, const device::AttnArgs<E>& args) {
  return [s, &args](auto kernel, dim3 grid, int threads, int64_t bytes) {
    NT_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    NT_LAUNCH_SHARED(kernel, grid, dim3(threads), static_cast<size_t>(bytes), s, args);
    NT_CUDA_CHECK(cudaGetLastError());
  };
}

template <typename E>
device::AttnArgs<E> args_of(const AttentionTensors& a, float scale) {
  device::AttnArgs<E> r{};
  r.q = static_cast<const E*>(a.q);
  r.k = static_cast<const E*>(a.k);
  r.v = static_cast<const E*>(a.v);
  r.s_n = a.s_n;
  r.s_h = a.s_h;
  r.s_t = a.s_t;
  r.o = static_cast<E*>(a.o);
  r.lse = a.lse;
  r.H = static_cast<int>(a.H);
  r.T = static_cast<int>(a.T);
  r.scale = scale;
  return r;
}

}  // namespace

int attention_max_tokens() { return device::kAttnMaxT; }

std::string attention_limits() {
  return "at most " + std::to_string(device::kAttnMaxT) + " tokens, head widths " + text_of(Instantiated{});
}

bool attention_shape_supported(int64_t T, int64_t hd) {
  return T > 0 && T <= device::kAttnMaxT && dispatch_width(hd, [](auto) {});
}

bool attention_supports(const AttentionTensors& a) {
  // the grids' blocks (the dk/dv kernel's, of 64 rows, are the most) within a 1-D grid's 2^31 - 1
  const int64_t e = element_bytes(a.dtype);
  const int key_rows = a.dtype == Dtype::bf16 ? device::kAttnKeyRows<__nv_bfloat16> : device::kAttnKeyRows<float>;
  return attention_shape_supported(a.T, a.hd) && a.N > 0 && a.H > 0 &&
         a.N * a.H * device::attn_tiles(static_cast<int>(a.T), key_rows) <= 2147483647LL &&
         aligned_16(a.q, e, a.s_n, a.s_h, a.s_t) && aligned_16(a.k, e, a.s_n, a.s_h, a.s_t) &&
         aligned_16(a.v, e, a.s_n, a.s_h, a.s_t);
}

void attention_forward(const AttentionTensors& a, float scale, int device, void* stream) {
  check(a, "fused attention");
  CudaDeviceScope scope(device);
  dispatch(a.dtype, [&](auto type) {
    using E = typename decltype(type)::type;
    const device::AttnArgs<E> args = args_of<E>(a, scale);
    dispatch_width(a.hd, [&](auto hd) {
      device::attention_forward_launches<E, decltype(hd)::value>(
          a.N * a.H, static_cast<int>(a.T), launcher(static_cast<cudaStream_t>(stream), args));
    });
  });
}

void attention_backward(const AttentionTensors& a, float scale, const void* dout, int64_t d_n, int64_t d_h,
                        int64_t d_t, float* delta, void* dq, void* dk, void* dv, int device, void* stream) {
  check(a, "fused attention backward");
  const int64_t e = element_bytes(a.dtype);
  if (!aligned_16(dout, e, d_n, d_h, d_t) || !aligned_16(dq, e, a.s_n, a.s_h, a.s_t) ||
      !aligned_16(dk, e, a.s_n, a.s_h, a.s_t) || !aligned_16(dv, e, a.s_n, a.s_h, a.s_t))
    throw std::runtime_error("fused attention backward (CUDA): the gradients' pointers and strides must be multiples "
                             "of 16 bytes");
  CudaDeviceScope scope(device);
  dispatch(a.dtype, [&](auto type) {
    using E = typename decltype(type)::type;
    device::AttnArgs<E> args = args_of<E>(a, scale);
    args.dout = static_cast<const E*>(dout);
    args.d_n = d_n;
    args.d_h = d_h;
    args.d_t = d_t;
    args.delta = delta;
    args.dq = static_cast<E*>(dq);
    args.dk = static_cast<E*>(dk);
    args.dv = static_cast<E*>(dv);
    dispatch_width(a.hd, [&](auto hd) {
      device::attention_backward_launches<E, decltype(hd)::value>(
          a.N * a.H, static_cast<int>(a.T), launcher(static_cast<cudaStream_t>(stream), args));
    });
  });
}

}  // namespace nt::cuda
