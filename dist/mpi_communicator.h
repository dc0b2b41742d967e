// MpiCommunicator: the Communicator on CPU tensors over MPI non-blocking collectives
// (MPI_Iallgather, MPI_Ireduce_scatter_block, MPI_Iallreduce, MPI_Ibcast, MPI_Ibarrier).
// Dtypes: float32, float64, bfloat16, float16, int32, int64, uint8. bfloat16 and float16 are
// reduced in float32 (converted, reduced, converted back) and moved as raw bits otherwise.
// MPI progresses a collective inside MPI calls, at the latest in wait().
#pragma once
#include <mpi.h>

#include "dist/communicator.h"

namespace nt {

class MpiCommunicator : public Communicator {
 public:
  // Collective over `comm`: works on a duplicate of it (its own message space, errors returned).
  explicit MpiCommunicator(MPI_Comm comm);
  // Frees the duplicate; destroy the communicator before finalize_topology (MPI_Finalize).
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

  CommWork all_gather_into_async(const at::Tensor& flat_out, const at::Tensor& shard_in) override;
  CommWork reduce_scatter_avg_async(const at::Tensor& shard_out, const at::Tensor& flat_in) override;
  CommWork all_reduce_async(const at::Tensor& t, Op op) override;
  CommWork broadcast_async(const at::Tensor& t, int root) override;
  CommWork barrier_async() override;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace nt
