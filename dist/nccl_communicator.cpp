// NcclCommunicator: CUDA collectives over NCCL on a communication stream ordered with events
// (see nccl_communicator.h). Uses only cuda_runtime.h, nccl.h and at::Tensor's data accessors.
#include "dist/nccl_communicator.h"

#include "core/log.h"
#include "dist/cuda_check.h"
#include "dist/mpi_check.h"

namespace nt {
namespace {

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::runtime_error(where(__FILE__, __LINE__, std::string(op) + ": " + what));
}

void check_cuda(const char* op, const char* arg, const at::Tensor& t, int gpu) {
  comm_check::contiguous(op, arg, t);
  if (!t.is_cuda() || t.get_device() != gpu)
    fail(op, std::string(arg) + " is on " + t.device().str() + "; the NCCL communicator of this rank takes tensors on cuda:" +
                 std::to_string(gpu) + " (use the MPI communicator for CPU tensors)");
}

ncclDataType_t nccl_type(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    default:
      fail(op, std::string("dtype ") + c10::toString(t) +
                   " is not supported; use float32, float64, bfloat16, float16, int32, int64 or uint8");
  }
}

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm, int gpu, cudaStream_t compute_stream)
    : gpu_(gpu), compute_(compute_stream) {
  if (comm == MPI_COMM_NULL)
    throw std::runtime_error(where(__FILE__, __LINE__,
                                   "NcclCommunicator: got MPI_COMM_NULL (an evaluator rank has no trainers' "
                                   "communicator); build it on trainer ranks only"));
  if (gpu < 0)
    throw std::runtime_error(where(__FILE__, __LINE__,
                                   "NcclCommunicator: this rank has no GPU (gpu = " + std::to_string(gpu) +
                                       "); give every trainer rank of a node its own GPU or use the MPI backend"));
  NT_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  NT_MPI_CHECK(MPI_Comm_size(comm, &size_));
  NT_CUDA_CHECK(cudaSetDevice(gpu_));

  // Bootstrap: rank 0 makes the unique id, MPI carries it to the others.
  ncclUniqueId id;
  if (rank_ == 0) NT_NCCL_CHECK(ncclGetUniqueId(&id));
  NT_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
  NT_NCCL_CHECK(ncclCommInitRank(&nccl_, size_, id, rank_));

  NT_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  NT_CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
  NT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&barrier_buf_), sizeof(float)));
  NT_CUDA_CHECK(cudaMemset(barrier_buf_, 0, sizeof(float)));
}

NcclCommunicator::~NcclCommunicator() {
  // No throwing here: report and go on releasing the rest.
  if (nccl_ && ncclCommDestroy(nccl_) != ncclSuccess) log_error("NcclCommunicator: ncclCommDestroy failed");
  if (barrier_buf_ && cudaFree(barrier_buf_) != cudaSuccess) log_error("NcclCommunicator: cudaFree failed");
  if (compute_ready_ && cudaEventDestroy(compute_ready_) != cudaSuccess)
    log_error("NcclCommunicator: cudaEventDestroy failed");
  if (comm_stream_ && cudaStreamDestroy(comm_stream_) != cudaSuccess)
    log_error("NcclCommunicator: cudaStreamDestroy failed");
}

void NcclCommunicator::comm_after_compute() {
  NT_CUDA_CHECK(cudaEventRecord(compute_ready_, compute_));
  NT_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, compute_ready_, 0));
}

CommWork NcclCommunicator::finish_on_compute(std::vector<at::Tensor> keep) {
  cudaEvent_t done = nullptr;
  NT_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  NT_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
  cudaStream_t compute = compute_;
  return CommWork([done, compute, keep]() {
    // The event is released even if the wait fails to be queued.
    const cudaError_t rc = cudaStreamWaitEvent(compute, done, 0);
    cudaEventDestroy(done);
    NT_CUDA_CHECK(rc);
  });
}

CommWork NcclCommunicator::all_gather_into_async(const at::Tensor& flat_out, const at::Tensor& shard_in) {
  const char* op = "all_gather_into";
  check_cuda(op, "flat_out", flat_out, gpu_);
  check_cuda(op, "shard_in", shard_in, gpu_);
  comm_check::same_dtype(op, flat_out, shard_in);
  comm_check::flat_and_shard(op, flat_out, shard_in, size_);
  comm_check::shard_is_own_slice(op, flat_out, shard_in, rank_);  // in place is NCCL's own layout
  const ncclDataType_t type = nccl_type(op, flat_out.scalar_type());
  comm_after_compute();
  NT_NCCL_CHECK(ncclAllGather(shard_in.data_ptr(), flat_out.data_ptr(), static_cast<size_t>(shard_in.numel()),
                              type, nccl_, comm_stream_));
  return finish_on_compute({flat_out, shard_in});
}

CommWork NcclCommunicator::reduce_scatter_avg_async(const at::Tensor& shard_out, const at::Tensor& flat_in) {
  const char* op = "reduce_scatter_avg";
  check_cuda(op, "shard_out", shard_out, gpu_);
  check_cuda(op, "flat_in", flat_in, gpu_);
  comm_check::same_dtype(op, shard_out, flat_in);
  comm_check::flat_and_shard(op, flat_in, shard_out, size_);
  comm_check::floating(op, flat_in);
  comm_check::shard_is_own_slice(op, flat_in, shard_out, rank_);  // in place is NCCL's own layout
  const ncclDataType_t type = nccl_type(op, flat_in.scalar_type());
  comm_after_compute();
  NT_NCCL_CHECK(ncclReduceScatter(flat_in.data_ptr(), shard_out.data_ptr(), static_cast<size_t>(shard_out.numel()),
                                  type, ncclAvg, nccl_, comm_stream_));
  return finish_on_compute({shard_out, flat_in});
}

CommWork NcclCommunicator::all_reduce_async(const at::Tensor& t, Op reduce_op) {
  const char* op = "all_reduce";
  check_cuda(op, "t", t, gpu_);
  const ncclDataType_t type = nccl_type(op, t.scalar_type());
  comm_after_compute();
  NT_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), type,
                              reduce_op == Op::max ? ncclMax : ncclSum, nccl_, comm_stream_));
  return finish_on_compute({t});
}

CommWork NcclCommunicator::broadcast_async(const at::Tensor& t, int root) {
  const char* op = "broadcast";
  check_cuda(op, "t", t, gpu_);
  comm_check::root(op, root, size_);
  const ncclDataType_t type = nccl_type(op, t.scalar_type());
  comm_after_compute();
  NT_NCCL_CHECK(
      ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), type, root, nccl_, comm_stream_));
  return finish_on_compute({t});
}

CommWork NcclCommunicator::barrier_async() {
  // A one-element all-reduce; wait() blocks the host until it completed, i.e. every rank reached it.
  comm_after_compute();
  NT_NCCL_CHECK(ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, nccl_, comm_stream_));
  cudaStream_t stream = comm_stream_;
  return CommWork([stream]() { NT_CUDA_CHECK(cudaStreamSynchronize(stream)); });
}

}  // namespace nt
