// ShardedParams: a model's trainable parameters sharded FSDP-style over the ranks of a
// communicator (W = 1 without one) — what a training step needs of dist/:
//  - each unit (root, blocks.{i}) is a flat buffer padded to a multiple of W; this rank owns an
//    fp32 master shard (params()) that the optimizer and EMA update, and an fp32 gradient shard
//    (grads());
//  - the model's parameters are views of a full buffer per unit in that unit's compute dtype
//    (ShardingOptions::param_dtypes, e.g. bf16: FSDP's param_dtype), all-gathered from the
//    shards by refresh() after every change of the shards;
//  - backward accumulates into full gradient buffers (the parameters' dtype), reduce-scattered
//    (averaged over ranks, in reduce_dtype) into the fp32 gradient shards by end_backward(); a
//    gradient shard with memory of its own holds it only from there to the next refresh() (not
//    while the activations peak);
//  - with reshard_after_forward (and a communicator) block units are gathered before use and
//    released after (dist/reshard.h).
// Where nothing needs a second copy it is not made: with W = 1 and fp32 the shard is the full
// buffer and the gradient shard the full gradient; with fp32 and no resharding the shard is a
// view of the full buffer.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "dist/flat_layout.h"

namespace torch::nn { class Module; }

namespace nt {

class Communicator;
class Resharder;
struct ForwardOptions;

struct ShardingOptions {
  // Per unit, root first (layout order): the dtype its parameters are gathered into and the
  // model computes with. Empty: fp32 everywhere.
  std::vector<at::ScalarType> param_dtypes;
  at::ScalarType reduce_dtype = at::kFloat;  // the dtype gradients are reduce-scattered in
  bool reshard_after_forward = false;        // used with a communicator (the trainer: W > 1)
};

class ShardedParams {
 public:
  // `model`'s trainable parameters become views of the full buffers (same values, rounded to
  // their unit's dtype); `comm` (null: one process) must outlive this object, and so must model.
  ShardedParams(torch::nn::Module& model, Communicator* comm, const ShardingOptions& opt);
  ~ShardedParams();
  ShardedParams(const ShardedParams&) = delete;
  ShardedParams& operator=(const ShardedParams&) = delete;

  const FlatLayout& layout() const { return layout_; }
  int rank() const { return rank_; }
  int world() const { return world_; }
  bool resharded() const { return resharder_ != nullptr; }
  std::vector<at::Tensor>& params() { return shards_; }      // fp32 [padded / W] per unit
  std::vector<at::Tensor>& grads() { return grad_shards_; }  // fp32 [padded / W] per unit
  const std::vector<at::Tensor>& full() const { return full_; }  // [padded] per unit, compute dtype

  // Before a training forward: zeroes the gradients and, when resharding, installs the hooks that
  // gather a block before it runs and release it after (hooks must be passed to the forward).
  // `accumulate` (the second and later micro-batches of a step): the coming backward's gradient is
  // added to grads() by end_backward(), which keep what the previous end_backward() left.
  void begin_step(ForwardOptions& hooks, bool accumulate = false);
  // After backward: grads() = this rank's slice of the ranks' average gradient (+= with
  // accumulate).
  void end_backward();
  // After params() changed (an update, a load): the model's parameters follow (with resharding:
  // the root now, each block when it next runs). grads() are released (until end_backward()).
  void refresh();

  // One rank (W = 1), gradients reduced in fp32 or in their own dtype: a step's
  // optimizer may, instead of end_backward() and refresh(), read each unit's gradient as backward
  // left it (backward_grads()), write the units' compute copies itself (compute_copies()) and
  // then call updated_in_place() — the values end_backward()'s cast and refresh()'s cast back
  // would give, without those two passes over the model (dist/adamw.h: adamw_ema_fused). Not
  // with accumulation over micro-batches (their sum is kept in fp32 by end_backward()).
  bool updates_in_place() const;
  // [padded] per unit in its compute dtype (fp32 units: grads() itself).
  const std::vector<at::Tensor>& backward_grads() const { return full_grads_; }
  // Per unit: full() where it is a copy of params() in another dtype, else undefined.
  std::vector<at::Tensor> compute_copies() const;
  void updated_in_place();

  // "parameters X MB, gradients Y MB" per rank (at most, with resharding), for the memory log.
  std::string memory_summary() const;

 private:
  void release_grad_shards();
  FlatLayout layout_;
  Communicator* comm_ = nullptr;
  int rank_ = 0, world_ = 1;
  at::ScalarType reduce_dtype_ = at::kFloat;
  bool accumulate_ = false;  // of the backward begin_step() began
  std::vector<at::Tensor> full_, full_grads_, shards_, grad_shards_;
  std::unique_ptr<Resharder> resharder_;
};

}  // namespace nt
