// Bytes the C heap has handed out and not had back (small blocks and mmapped ones): the CPU
// tensors alive, for tests that check what a forward keeps for backward.
#pragma once
#include <ATen/core/Tensor.h>
#include <malloc.h>

#include <cstddef>

namespace nt::test {

inline size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

// The bytes `forward()` leaves held: its output and what the graph keeps for backward (measured
// before backward of the output's sum runs and frees them). Inputs made before the call do not count.
template <typename F>
double heap_kept_by_forward(F&& forward) {
  const size_t before = heap_in_use();
  at::Tensor y = forward();
  const size_t kept = heap_in_use() - before;
  y.sum().backward();
  return static_cast<double>(kept);
}

}  // namespace nt::test
