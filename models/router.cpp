#include "models/router.h"

#include <torch/torch.h>

#include "core/rng.h"

namespace nt {

at::Tensor route_keep_ids(const at::Tensor& x, double selection_ratio, at::Generator* gen,
                          std::vector<at::Generator>* sample_gens, const BatchSlice& slice) {
  const int64_t N = x.size(0), T = x.size(1);
  const int64_t num_mask = static_cast<int64_t>(T * selection_ratio);  // floor, as int() does
  const int64_t num_keep = T - num_mask;
  // Each draw is made on its generator's device (a CPU generator drives a CUDA model the same
  // way it drives a CPU one), then moved to the tokens' device.
  auto on = [](const at::Generator& g) { return at::TensorOptions().dtype(at::kFloat).device(g.device()); };
  at::Tensor noise;  // [N, T]
  if (sample_gens && !sample_gens->empty()) {
    TORCH_CHECK(static_cast<int64_t>(sample_gens->size()) == N, "router: ", sample_gens->size(),
                " sample generators for a batch of ", N);
    std::vector<at::Tensor> rows;
    rows.reserve(N);
    for (auto& g : *sample_gens) rows.push_back(to_device_async(at::rand({T}, g, on(g)), x.device()));
    noise = at::stack(rows);
  } else {
    const int64_t rows = slice.rows(N);
    noise = slice.take(gen ? to_device_async(at::rand({rows, T}, *gen, on(*gen)), x.device())
                           : at::rand({rows, T}, x.options().dtype(at::kFloat)),
                       N);
  }
  at::Tensor ids_shuffle = at::argsort(noise, /*dim=*/1, /*descending=*/false);       // [N, T]
  return ids_shuffle.narrow(1, 0, num_keep).contiguous();  // [N, K]
}

at::Tensor route_start(const at::Tensor& x, const at::Tensor& ids_keep) {
  auto idx = ids_keep.unsqueeze(-1).expand({-1, -1, x.size(2)});  // [N, K, D]
  return x.gather(1, idx);
}

at::Tensor route_end(const at::Tensor& kept, const at::Tensor& ids_keep, const at::Tensor& original) {
  auto idx = ids_keep.unsqueeze(-1).expand({-1, -1, original.size(2)});  // [N, K, D]
  return original.scatter(1, idx, kept.to(original.scalar_type()));
}

}  // namespace nt
