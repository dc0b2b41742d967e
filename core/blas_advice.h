// Which kernels the CPU BLAS runs. Debian's OpenBLAS (0.3.21) does not recognise some CPUs (e.g.
// virtual machines whose processor names no model) and falls back to its Prescott (SSE3) kernels,
// about 5x slower than the AVX-512 ones on such a machine (docs/performance.md). It reads
// OPENBLAS_CORETYPE when the library loads, before main, so a program can only advise.
#pragma once
#include <string>

namespace nt {

// The name of the core OpenBLAS chose ("" where the BLAS is not OpenBLAS, or is one built for a
// single core type without openblas_get_corename).
std::string openblas_core();

// A line advising OPENBLAS_CORETYPE where OpenBLAS runs its Prescott kernels on a CPU with AVX2 and
// FMA (Haswell's) or AVX-512 F, BW, VL and DQ (SkylakeX's) and OPENBLAS_CORETYPE is not set; "" otherwise.
std::string blas_kernel_advice();

}  // namespace nt
