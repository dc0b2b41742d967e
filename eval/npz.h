// FID reference statistics as .npz files (ADM/EDM style): arrays `mu` [D] and `sigma` [D, D].
// Reads archives written by np.savez (stored) or np.savez_compressed (deflated) through libzip,
// float32 or float64 (either byte order), returned as float64; writes a stored archive with
// float64 `mu` and `sigma` that numpy's np.load reads.
#pragma once
#include <string>

#include "eval/frechet.h"

namespace nt {

// Throws std::runtime_error naming the file and the problem: not a zip archive, `mu` or
// `sigma` missing, an unsupported dtype, wrong shapes (mu [D], sigma [D, D]), truncated or
// damaged members. The returned n is 0 (an .npz does not record it).
FeatureStats read_stats_npz(const std::string& path);

// Writes mu [D] and sigma [D, D] (converted to float64) to `path` (replaced atomically).
// Throws std::invalid_argument for wrong shapes and std::runtime_error when writing fails.
void write_stats_npz(const std::string& path, const FeatureStats& stats);

}  // namespace nt
