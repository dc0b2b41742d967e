// Gathering block units before use and releasing them after (see dist/reshard.h).
#include "dist/reshard.h"

#include <torch/torch.h>

#include "dist/communicator.h"
#include "dist/storage.h"
#include "dist/unit_collectives.h"
#include "models/dit.h"

namespace nt {

Resharder::Resharder(Communicator& comm, std::vector<at::Tensor>& full, const std::vector<at::Tensor>& shards,
                     std::vector<at::Tensor>& full_grads, std::vector<at::Tensor>& grad_shards,
                     at::ScalarType reduce_dtype)
    : comm_(comm),
      full_(full),
      shards_(shards),
      full_grads_(full_grads),
      grad_shards_(grad_shards),
      reduce_dtype_(reduce_dtype) {}

void Resharder::begin_step(bool accumulate) {
  accumulate_ = accumulate;
  torch::NoGradGuard no_grad;
  full_grads_[0].zero_();
}

void Resharder::begin_block_backward(size_t u) {
  gather(u);
  torch::NoGradGuard no_grad;
  restore_storage(full_grads_[u]);
  full_grads_[u].zero_();
}

void Resharder::end_block_backward(size_t u) {
  if (storage_released(full_grads_[u]) || reducing_ == u) return;
  finish_reduce();  // the block after this one: at most one reduce in flight
  reduce_work_ = reduce_unit_async(&comm_, grad_shards_[u], full_grads_[u], reduce_dtype_, accumulate_);
  reducing_ = u;
  release(u);
}

void Resharder::finish_reduce() {
  if (!reducing_) return;
  reduce_work_.wait();
  release_storage(full_grads_[*reducing_]);
  reducing_.reset();
}

void Resharder::end_backward() {
  if (full_.size() > 1) end_block_backward(1);
  CommWork root = reduce_unit_async(&comm_, grad_shards_[0], full_grads_[0], reduce_dtype_, accumulate_);
  finish_reduce();
  root.wait();
  release_blocks();
}

void Resharder::gather(size_t u) {
  auto it = pending_.find(u);
  if (it != pending_.end()) {
    it->second.wait();
    pending_.erase(it);
    return;
  }
  torch::NoGradGuard no_grad;
  restore_storage(full_[u]);
  gather_unit_async(&comm_, full_[u], shards_[u]).wait();
}

void Resharder::prefetch(size_t u) {
  if (u == 0 || u >= full_.size() || pending_.count(u) || !storage_released(full_[u])) return;
  restore_storage(full_[u]);
  pending_.emplace(u, gather_unit_async(&comm_, full_[u], shards_[u]));
}

void Resharder::release(size_t u) {
  auto it = pending_.find(u);
  if (it != pending_.end()) {  // never free memory a collective is writing
    it->second.wait();
    pending_.erase(it);
  }
  if (u == 0 || storage_released(full_[u])) return;
  release_storage(full_[u]);
}

void Resharder::release_blocks() {
  finish_reduce();
  for (size_t u = 1; u < full_.size(); ++u) {
    release(u);
    if (!storage_released(full_grads_[u])) release_storage(full_grads_[u]);
  }
}

void Resharder::install(ForwardOptions& opt) {
  opt.before_block = [this](int i) {
    gather(static_cast<size_t>(i) + 1);
    prefetch(static_cast<size_t>(i) + 2);  // the next block's gather overlaps this one's compute
  };
  opt.after_block = [this](int i, const at::Tensor& out) {
    const size_t u = static_cast<size_t>(i) + 1;
    release(u);
    if (!out.requires_grad()) return;
    // The gradient of the block's output arrives just before the block's own backward: the
    // blocks after it are done by then.
    out.register_hook([this, u](const at::Tensor& grad) {
      if (u + 1 < full_.size()) end_block_backward(u + 1);
      begin_block_backward(u);
      if (u > 1) prefetch(u - 1);  // the previous block's backward comes next
      return grad;
    });
  };
}

int64_t Resharder::resident_block_bytes() const {
  int64_t bytes = 0;
  for (size_t u = 1; u < full_.size(); ++u) bytes += static_cast<int64_t>(full_[u].storage().nbytes());
  return bytes;
}

}  // namespace nt
