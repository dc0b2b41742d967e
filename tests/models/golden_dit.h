// The small TREAD model of the DiT golden files (tests/golden/dit_small_*, README.md): 8x8x4
// input, patch 2, width 64, depth 4, 4 heads, 10 classes, route 0.5 over blocks 1..2. Shared by
// the models tests (test_dit, test_edm, test_recompute, test_weight_grads_in_place).
#pragma once
#include "models/dit.h"

namespace nt::test {

DiTConfig golden_dit_config();

// Adds small noise (seeded) to every parameter: the adaLN-Zero layers non-zero, so that every path
// carries gradient.
void perturb(torch::nn::Module& m);

}  // namespace nt::test
