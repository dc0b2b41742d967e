// FSDP's reshard_after_forward for the flat units: a block unit's full parameters exist only
// while the block runs. Before block i runs forward its unit is all-gathered from the ranks'
// shards; after the forward its memory is released (the parameters, and the tensors autograd
// saved from them, keep pointing at the emptied storage); when backward reaches block i (the
// gradient of its output arrives) the unit is gathered again, and the unit of block i + 1, whose
// backward is complete by then, is released. The root unit (embedders, final layer) stays
// gathered. Per rank, parameters then take one shard plus the root plus at most two blocks.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <vector>

namespace nt {

class Communicator;
struct ForwardOptions;

// Releases the memory of `t`'s storage (0 bytes) while every view of it stays a valid tensor,
// and gives it back (uninitialised, t's full size) — FSDP's storage resize.
void release_storage(const at::Tensor& t);
void restore_storage(const at::Tensor& t);
bool storage_released(const at::Tensor& t);

class Resharder {
 public:
  // full[u]: unit u's full buffer (the model's parameters are views of it), shards[u]: this
  // rank's shard with its own memory (not a view of full[u]); unit 0 is the root, unit i + 1 the
  // block i. Both vectors must outlive the Resharder.
  Resharder(Communicator& comm, std::vector<at::Tensor>& full, const std::vector<at::Tensor>& shards);

  void gather(size_t u);   // restores unit u's memory if released and all-gathers it
  void release(size_t u);  // releases a block unit's memory (never the root's)
  void release_blocks();   // every block unit (after backward, after an update)
  // Hooks for a training forward (ForwardOptions::before_block/after_block): gather before a
  // block, release after it and gather again for its backward.
  void install(ForwardOptions& opt);
  // Bytes of full block units currently held (for the memory report and tests).
  int64_t resident_block_bytes() const;

 private:
  Communicator& comm_;
  std::vector<at::Tensor>& full_;
  const std::vector<at::Tensor>& shards_;
};

}  // namespace nt
