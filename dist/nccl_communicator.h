// NcclCommunicator: the Communicator on CUDA tensors over NCCL, bootstrapped over MPI (rank 0
// makes the unique id, MPI_Bcast, ncclCommInitRank on this rank's GPU). Collectives run on a
// dedicated communication stream: each first waits on an event recorded on the caller's compute
// stream (so it sees the kernels that produced its input), and CommWork::wait() makes the compute
// stream wait on an event recorded after the collective (no host blocking). Tensors stay
// referenced by the CommWork until wait(). Needs only cuda_runtime.h and nccl.h: a GPU caller
// passes its stream, e.g. c10::cuda::getCurrentCUDAStream().stream().
#pragma once
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <vector>

#include "dist/communicator.h"

namespace nt {

class NcclCommunicator : public Communicator {
 public:
  // Collective over `comm` (every member calls it); `gpu` is this rank's CUDA device (it becomes
  // the current device); `compute_stream` is the stream the caller's kernels run on
  // (nullptr: the legacy default stream).
  NcclCommunicator(MPI_Comm comm, int gpu, cudaStream_t compute_stream = nullptr);
  ~NcclCommunicator() override;  // destroys the NCCL communicator, stream and events
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  int gpu() const { return gpu_; }

  // The stream later collectives are ordered after (and that CommWork::wait() orders).
  void set_compute_stream(cudaStream_t s) { compute_ = s; }
  cudaStream_t compute_stream() const { return compute_; }
  cudaStream_t comm_stream() const { return comm_stream_; }

  CommWork all_gather_into_async(const at::Tensor& flat_out, const at::Tensor& shard_in) override;
  CommWork reduce_scatter_avg_async(const at::Tensor& shard_out, const at::Tensor& flat_in) override;
  CommWork all_reduce_async(const at::Tensor& t, Op op) override;
  CommWork broadcast_async(const at::Tensor& t, int root) override;
  CommWork barrier_async() override;

 private:
  // Orders the comm stream after the compute stream's work so far.
  void comm_after_compute();
  // A CommWork that, on wait(), orders the compute stream after the comm stream's work so far;
  // `keep` holds the tensors the collective uses until then.
  CommWork finish_on_compute(std::vector<at::Tensor> keep);

  ncclComm_t nccl_ = nullptr;
  int rank_ = 0, size_ = 1, gpu_ = -1;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr;  // recorded on the compute stream before each collective
  float* barrier_buf_ = nullptr;         // [1] on the GPU, all-reduced by barrier()
};

}  // namespace nt
