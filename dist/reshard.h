// FSDP's reshard_after_forward for the flat units: a block unit's full parameters exist only
// while the block runs. Before block i runs forward its unit is all-gathered from the ranks'
// shards (the gather of block i + 1 is issued then, to overlap with block i's compute, and the
// same for block i - 1 during block i's backward); after the forward its memory is released (the parameters, and the tensors autograd
// saved from them, keep pointing at the emptied storage); when backward reaches block i (the
// gradient of its output arrives) the unit is gathered again, and the unit of block i + 1, whose
// backward is complete by then, is released. The root unit (embedders, final layer) stays
// gathered. Per rank, parameters then take one shard plus the root plus at most two blocks.
// The order relies on autograd running a block's whole backward (its parameters' gradient
// accumulation included) before the gradient of the previous block's output is complete, which
// holds for a chain of blocks.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <map>
#include <optional>
#include <vector>

#include "dist/communicator.h"
#include "dist/storage.h"

namespace nt {

struct ForwardOptions;

// Gradients likewise: a block's full gradient buffer (the parameters' .grad are views of it) is
// given memory and zeroed when backward reaches the block, and once the block's backward is done
// its reduce-scatter (average) into this rank's gradient shard is issued, to run while the next
// block's backward computes; it is completed, and the buffer released, when that block's backward
// is done in turn (or at the end of backward). So per rank, gradients take one shard plus the
// root's full buffer plus at most two blocks (the one computing and the one being reduced).
class Resharder {
 public:
  // full[u]: unit u's full buffer (the model's parameters are views of it), shards[u]: this
  // rank's fp32 shard with its own memory (not a view of full[u]); full_grads[u] and
  // grad_shards[u] the same for gradients. full[u] and full_grads[u] are in the unit's compute
  // dtype: gathers cast into it, gradients are reduced in reduce_dtype (dist/unit_collectives.h).
  // Unit 0 is the root, unit i + 1 the block i. The vectors must outlive the Resharder.
  Resharder(Communicator& comm, std::vector<at::Tensor>& full, const std::vector<at::Tensor>& shards,
            std::vector<at::Tensor>& full_grads, std::vector<at::Tensor>& grad_shards,
            at::ScalarType reduce_dtype = at::kFloat);
  // Before a training forward: zeroes the root's gradient buffer (block buffers are released).
  // `accumulate`: this backward's reduced gradients are added to the shards' (micro-batches).
  void begin_step(bool accumulate = false);
  // After backward: finishes the first block's and the root's gradients (reduce-scatter, average)
  // and releases every block.
  void end_backward();

  void gather(size_t u);    // unit u's full parameters, ready (waits for its prefetch if issued)
  void prefetch(size_t u);  // issues the all-gather of a released block unit, not waiting
  void release(size_t u);   // releases a block unit's memory (never the root's)
  void release_blocks();   // every block unit (after backward, after an update)
  // Hooks for a training forward (ForwardOptions::before_block/after_block): gather before a
  // block, release after it and gather again for its backward.
  void install(ForwardOptions& opt);
  // Bytes of full block units currently held (for the memory report and tests).
  int64_t resident_block_bytes() const;

 private:
  void begin_block_backward(size_t u);  // gather parameters, zeroed gradient buffer
  void end_block_backward(size_t u);    // issue the gradient's reduce-scatter, release the parameters
  void finish_reduce();                 // complete the reduce in flight, release its gradient buffer
  Communicator& comm_;
  std::vector<at::Tensor>& full_;
  const std::vector<at::Tensor>& shards_;
  std::vector<at::Tensor>& full_grads_;
  std::vector<at::Tensor>& grad_shards_;
  at::ScalarType reduce_dtype_;
  bool accumulate_ = false;             // this backward adds to the gradient shards
  std::map<size_t, CommWork> pending_;  // prefetches in flight, by unit
  std::optional<size_t> reducing_;      // the block unit whose gradient reduce is in flight
  CommWork reduce_work_;
};

}  // namespace nt
