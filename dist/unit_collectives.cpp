// Gathering a unit in its compute dtype and reducing its gradients in reduce_dtype (see
// dist/unit_collectives.h).
#include "dist/unit_collectives.h"

#include <torch/torch.h>

#include <memory>

#include "dist/storage.h"

namespace nt {
namespace {
bool same_memory(const at::Tensor& a, const at::Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.numel() == b.numel() && a.scalar_type() == b.scalar_type();
}
}  // namespace

CommWork gather_unit_async(Communicator* comm, const at::Tensor& full, const at::Tensor& shard) {
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  comm_check::flat_and_shard("gather_unit", full, shard, world);
  const int64_t n = shard.numel();
  at::Tensor own = full.narrow(0, rank * n, n);  // [padded / W] in the compute dtype
  if (!same_memory(own, shard)) {
    torch::NoGradGuard no_grad;
    own.copy_(shard);  // the cast (round to nearest even for bf16)
  }
  if (!comm) return CommWork();
  return comm->all_gather_into_async(full, own);
}

CommWork reduce_unit_async(Communicator* comm, const at::Tensor& grad_shard, const at::Tensor& full_grad,
                           at::ScalarType reduce_dtype, bool accumulate) {
  const int world = comm ? comm->size() : 1;
  comm_check::flat_and_shard("reduce_unit", full_grad, grad_shard, world);
  if (same_memory(grad_shard, full_grad)) return CommWork();  // W = 1, fp32 throughout: the gradient is the shard
  TORCH_CHECK(!accumulate || !storage_released(grad_shard),
              "reduce_unit: accumulating into a gradient shard that holds nothing (released since the last backward)");
  restore_storage(grad_shard);
  torch::NoGradGuard no_grad;
  const bool same = full_grad.scalar_type() == reduce_dtype;
  if (!comm) {  // into the fp32 shard in one pass where the cast to reduce_dtype is exact (fp32)
    const at::Tensor src = same || reduce_dtype == at::kFloat ? full_grad : full_grad.to(reduce_dtype);  // [padded]
    if (accumulate) grad_shard.add_(src);
    else grad_shard.copy_(src);
    return CommWork();
  }
  const at::Tensor src = same ? full_grad : full_grad.to(reduce_dtype);  // [padded]
  const bool in_place = grad_shard.scalar_type() == reduce_dtype && !accumulate;
  const at::Tensor dst = in_place ? grad_shard : torch::empty({grad_shard.numel()}, src.options());
  auto work = std::make_shared<CommWork>(comm->reduce_scatter_avg_async(dst, src));  // [padded / W]
  if (in_place) return std::move(*work);
  return CommWork([work, dst, grad_shard, accumulate]() {
    work->wait();
    torch::NoGradGuard no_grad;
    if (accumulate) grad_shard.add_(dst);  // fp32 += the reduce dtype
    else grad_shard.copy_(dst);            // fp32 from the reduce dtype
  });
}

void reduce_unit(Communicator* comm, const at::Tensor& grad_shard, const at::Tensor& full_grad,
                 at::ScalarType reduce_dtype, bool accumulate) {
  reduce_unit_async(comm, grad_shard, full_grad, reduce_dtype, accumulate).wait();
}

}  // namespace nt
