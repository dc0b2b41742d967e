// Host allocator tuning for training loops. glibc returns large freed blocks (>= 128 KiB by
// default) to the kernel with munmap and trims the heap top, so every step maps and zero-fills
// the same activation memory again: measured on the quickstart model, 0.86 s of 11.6 s was
// kernel time from those page faults. Keeping freed memory for reuse removes it.
#pragma once

namespace nt {

// Serves allocations up to 32 MiB from the heap and stops trimming it (mallopt); call once at
// the start of a process, before large allocations.
void tune_host_allocator();

}  // namespace nt
