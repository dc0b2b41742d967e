// Bytes the C heap has handed out and not had back (small blocks and mmapped ones): the CPU
// tensors alive, for tests that check what a forward keeps for backward.
#pragma once
#include <malloc.h>

#include <cstddef>

namespace nt::test {

inline size_t heap_in_use() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

}  // namespace nt::test
