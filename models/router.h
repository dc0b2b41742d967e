// TREAD router: which tokens a route keeps, and how set-aside tokens rejoin.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <vector>

#include "models/dit.h"

namespace nt {

// ids_keep [N, T - floor(T*ratio)] int64: per sample, the first entries of argsort(rand(T)).
// With `sample_gens` (one per sample) each row's noise comes from its own generator;
// otherwise `gen` draws rand(N, T) for the batch (gen may be null: the default generator).
// With `slice`, the batch noise is drawn for the global batch and this batch's rows are kept.
at::Tensor route_keep_ids(const at::Tensor& x, double selection_ratio, at::Generator* gen,
                          std::vector<at::Generator>* sample_gens = nullptr, const BatchSlice& slice = {});
// x [N,T,D] -> the kept tokens [N,K,D].
at::Tensor route_start(const at::Tensor& x, const at::Tensor& ids_keep);
// Scatters the kept tokens [N,K,D] back into `original` [N,T,D] (out of place).
at::Tensor route_end(const at::Tensor& kept, const at::Tensor& ids_keep, const at::Tensor& original);

}  // namespace nt
