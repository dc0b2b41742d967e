// The two collectives of a flat unit in mixed precision (FSDP's MixedPrecisionPolicy): the
// all-gather of a unit's parameters from the ranks' fp32 shards into its full buffer in the
// unit's compute dtype, and the reduce-scatter (average) of its full gradient buffer into the
// rank's fp32 gradient shard through `reduce_dtype`. `comm` null means one process (W = 1):
// the same casts without a collective, so one rank computes what W ranks compute. A
// communicator of one rank still runs its collectives (so they can be tested on one GPU).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "dist/communicator.h"

namespace nt {

// full [padded] (its dtype: the compute dtype) = concatenation over ranks of shard [padded / W]
// (fp32) cast to full's dtype: this rank's shard is cast into its own slice of full, then the
// slice is all-gathered in place. A shard that already is that slice is used as it is.
// Asynchronous: wait() before full is read.
CommWork gather_unit_async(Communicator* comm, const at::Tensor& full, const at::Tensor& shard);

// grad_shard [padded / W] (fp32) = (average over ranks of full_grad [padded], reduced in
// reduce_dtype)[this rank's slice]: full_grad is cast to reduce_dtype, reduce-scattered, and the
// result cast into grad_shard (each cast only where the dtypes differ; nothing at all when
// grad_shard is full_grad itself). A grad_shard whose storage was released (dist/storage.h) is
// given memory first. Asynchronous: wait() completes the collective and then the
// cast into grad_shard (on NCCL both are ordered on the compute stream); until then full_grad
// must stay allocated and unchanged, and grad_shard unread.
// `accumulate` (gradient accumulation over micro-batches): grad_shard += that slice instead of
// grad_shard = it. Where grad_shard is full_grad itself nothing is done either way: the caller
// then leaves full_grad unzeroed between the backwards, and autograd accumulates in place.
CommWork reduce_unit_async(Communicator* comm, const at::Tensor& grad_shard, const at::Tensor& full_grad,
                           at::ScalarType reduce_dtype, bool accumulate = false);
// The same, complete on return.
void reduce_unit(Communicator* comm, const at::Tensor& grad_shard, const at::Tensor& full_grad,
                 at::ScalarType reduce_dtype, bool accumulate = false);

}  // namespace nt
