#include "core/host_memory.h"

#include <malloc.h>

namespace nt {

void tune_host_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // glibc's maximum for this setting
  mallopt(M_TRIM_THRESHOLD, 1 << 30);           // keep up to 1 GiB of free heap for reuse
  mallopt(M_TOP_PAD, 256 * 1024 * 1024);        // grow the heap in large steps
}

}  // namespace nt
