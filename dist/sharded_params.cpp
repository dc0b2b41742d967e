// A model's parameters as FSDP-style sharded flat units in mixed precision (see
// dist/sharded_params.h).
#include "dist/sharded_params.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "dist/communicator.h"
#include "dist/reshard.h"
#include "dist/unit_collectives.h"
#include "models/dit.h"

namespace nt {
namespace {

at::Tensor own_slice(const at::Tensor& flat, int rank, int world) {
  const int64_t n = flat.numel() / world;
  return flat.narrow(0, rank * n, n);
}

double mb(const at::Tensor& t) { return static_cast<double>(t.numel()) * t.element_size() / 1e6; }

double mb(const std::vector<at::Tensor>& ts) {
  double sum = 0;
  for (const auto& t : ts) sum += mb(t);
  return sum;
}

bool shares_memory(const at::Tensor& a, const at::Tensor& b) {
  return a.storage().unsafeGetStorageImpl() == b.storage().unsafeGetStorageImpl();
}

std::string fmt_mb(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", v);
  return buf;
}

}  // namespace

ShardedParams::ShardedParams(torch::nn::Module& model, Communicator* comm, const ShardingOptions& opt)
    : comm_(comm), rank_(comm ? comm->rank() : 0), world_(comm ? comm->size() : 1), reduce_dtype_(opt.reduce_dtype) {
  layout_ = make_layout(model, world_);
  const size_t units = layout_.units.size();
  if (!opt.param_dtypes.empty() && opt.param_dtypes.size() != units)
    throw std::runtime_error("ShardedParams: " + std::to_string(opt.param_dtypes.size()) +
                             " parameter dtypes given for the model's " + std::to_string(units) + " units");
  auto dtype = [&](size_t u) { return opt.param_dtypes.empty() ? at::kFloat : opt.param_dtypes[u]; };
  const bool reshard = comm && opt.reshard_after_forward;
  const auto master = gather_params(model, layout_);  // fp32 [padded] per unit: the current values
  torch::NoGradGuard no_grad;
  for (size_t u = 0; u < units; ++u) full_.push_back(dtype(u) == at::kFloat ? master[u] : master[u].to(dtype(u)));
  bind_params(model, layout_, full_);
  full_grads_ = bind_grads(model, layout_);
  for (size_t u = 0; u < units; ++u) {
    // The shard needs memory of its own when the full buffer is in another dtype or released.
    const bool own_memory = reshard || dtype(u) != at::kFloat;
    shards_.push_back(own_memory ? own_slice(master[u], rank_, world_).clone() : own_slice(full_[u], rank_, world_));
    const bool grad_is_full =
        world_ == 1 && !reshard && full_grads_[u].scalar_type() == at::kFloat && reduce_dtype_ == at::kFloat;
    grad_shards_.push_back(grad_is_full ? full_grads_[u] : torch::zeros_like(shards_[u]));
  }
  if (reshard) {
    resharder_ = std::make_unique<Resharder>(*comm, full_, shards_, full_grads_, grad_shards_, reduce_dtype_);
    resharder_->release_blocks();  // gathered again by the first forward
  }
  release_grad_shards();  // they get memory when backward reduces into them
}

void ShardedParams::release_grad_shards() {
  for (size_t u = 0; u < grad_shards_.size(); ++u)
    if (!shares_memory(grad_shards_[u], full_grads_[u])) release_storage(grad_shards_[u]);
}

ShardedParams::~ShardedParams() = default;

void ShardedParams::begin_step(ForwardOptions& hooks, bool accumulate) {
  accumulate_ = accumulate;
  if (resharder_) {
    resharder_->begin_step(accumulate);  // block gradient buffers get memory when backward reaches them
    resharder_->install(hooks);
    return;
  }
  torch::NoGradGuard no_grad;
  for (size_t u = 0; u < full_grads_.size(); ++u) {
    // A full gradient that is its own shard accumulates in place: autograd adds to it.
    if (accumulate && shares_memory(grad_shards_[u], full_grads_[u])) continue;
    full_grads_[u].zero_();
  }
}

void ShardedParams::end_backward() {
  if (resharder_) {  // the blocks' gradients were reduce-scattered during backward
    resharder_->end_backward();
    return;
  }
  // The mean over the global batch = the average of the ranks' means.
  for (size_t u = 0; u < full_grads_.size(); ++u)
    reduce_unit(comm_, grad_shards_[u], full_grads_[u], reduce_dtype_, accumulate_);
}

void ShardedParams::refresh() {
  release_grad_shards();  // the update that used them is done
  if (resharder_) {
    resharder_->gather(0);
    return;
  }
  std::vector<CommWork> works;  // every unit's gather in flight at once
  for (size_t u = 0; u < full_.size(); ++u) works.push_back(gather_unit_async(comm_, full_[u], shards_[u]));
  for (auto& w : works) w.wait();
}

bool ShardedParams::updates_in_place() const {
  if (world_ != 1 || resharder_) return false;  // a communicator of one rank: its collectives are identities
  for (const auto& g : full_grads_)
    if (g.scalar_type() != reduce_dtype_ && reduce_dtype_ != at::kFloat) return false;  // a rounding to keep
  return true;
}

std::vector<at::Tensor> ShardedParams::compute_copies() const {
  std::vector<at::Tensor> copies(full_.size());
  for (size_t u = 0; u < full_.size(); ++u)
    if (!shares_memory(full_[u], shards_[u])) copies[u] = full_[u];
  return copies;
}

void ShardedParams::updated_in_place() {
  TORCH_CHECK(updates_in_place(), "ShardedParams::updated_in_place: only for W = 1 (see updates_in_place)");
  release_grad_shards();  // as refresh(); the compute copies were written by the update
}

std::string ShardedParams::memory_summary() const {
  double shard = 0, grad_shard = 0;  // memory of their own only
  for (size_t u = 0; u < shards_.size(); ++u) {
    if (!shares_memory(shards_[u], full_[u])) shard += mb(shards_[u]);
    if (!shares_memory(grad_shards_[u], full_grads_[u])) grad_shard += mb(grad_shards_[u]);
  }
  if (!resharder_)
    return "parameters " + fmt_mb(mb(full_) + shard) + ", gradients " + fmt_mb(mb(full_grads_) + grad_shard);
  double block = 0, grad_block = 0;
  for (size_t u = 1; u < full_.size(); ++u) {
    block = std::max(block, mb(full_[u]));
    grad_block = std::max(grad_block, mb(full_grads_[u]));
  }
  const double root = mb(full_[0]), grad_root = mb(full_grads_[0]);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f + root %.1f + two blocks %.1f", shard, root, 2 * block);
  return "parameters " + fmt_mb(shard + root + 2 * block) + " at most (shard " + buf +
         "; reshard_after_forward), gradients " + fmt_mb(grad_shard + grad_root + 2 * grad_block) + " at most";
}

}  // namespace nt
