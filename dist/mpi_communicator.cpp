// MpiCommunicator: CPU collectives over MPI's non-blocking calls (see mpi_communicator.h).
#include "dist/mpi_communicator.h"

#include <torch/torch.h>

#include <climits>

#include "core/log.h"
#include "dist/mpi_check.h"

namespace nt {
namespace {

[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::runtime_error(where(__FILE__, __LINE__, std::string(op) + ": " + what));
}

void check_cpu(const char* op, const char* arg, const at::Tensor& t) {
  comm_check::contiguous(op, arg, t);
  if (!t.is_cpu())
    fail(op, std::string(arg) + " is on " + t.device().str() +
                 "; the MPI communicator takes CPU tensors (use the NCCL communicator for CUDA)");
}

int mpi_count(const char* op, int64_t numel) {
  if (numel > INT_MAX)
    fail(op, std::to_string(numel) + " elements exceed MPI's int count; split the buffer");
  return static_cast<int>(numel);
}

bool reduced_in_float(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// The MPI type that moves elements of `t` unchanged (16-bit floats as their bits).
MPI_Datatype bits_type(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kBFloat16:
    case at::kHalf: return MPI_UINT16_T;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kByte: return MPI_UINT8_T;
    default:
      fail(op, std::string("dtype ") + c10::toString(t) +
                   " is not supported; use float32, float64, bfloat16, float16, int32, int64 or uint8");
  }
}

// The MPI type that reduces elements of `t` (16-bit floats are reduced as float32 copies).
MPI_Datatype reduce_type(const char* op, at::ScalarType t) {
  return reduced_in_float(t) ? MPI_FLOAT : bits_type(op, t);
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  if (comm == MPI_COMM_NULL)
    throw std::runtime_error(where(__FILE__, __LINE__,
                                   "MpiCommunicator: got MPI_COMM_NULL (an evaluator rank has no trainers' "
                                   "communicator); build it on trainer ranks only"));
  NT_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  NT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  NT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  NT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized && MPI_Comm_free(&comm_) != MPI_SUCCESS)
    log_error("MpiCommunicator: MPI_Comm_free failed");
}

CommWork MpiCommunicator::all_gather_into_async(const at::Tensor& flat_out, const at::Tensor& shard_in) {
  const char* op = "all_gather_into";
  check_cpu(op, "flat_out", flat_out);
  check_cpu(op, "shard_in", shard_in);
  comm_check::same_dtype(op, flat_out, shard_in);
  comm_check::flat_and_shard(op, flat_out, shard_in, size_);
  const bool in_place = comm_check::shard_is_own_slice(op, flat_out, shard_in, rank_);
  const MPI_Datatype type = bits_type(op, flat_out.scalar_type());
  const int n = mpi_count(op, shard_in.numel());
  mpi_count(op, flat_out.numel());
  MPI_Request req;
  NT_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : shard_in.data_ptr(), n, type, flat_out.data_ptr(), n,
                              type, comm_, &req));
  return CommWork([req, flat_out, shard_in]() mutable { NT_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE)); });
}

CommWork MpiCommunicator::reduce_scatter_avg_async(const at::Tensor& shard_out, const at::Tensor& flat_in) {
  const char* op = "reduce_scatter_avg";
  check_cpu(op, "shard_out", shard_out);
  check_cpu(op, "flat_in", flat_in);
  comm_check::same_dtype(op, shard_out, flat_in);
  comm_check::flat_and_shard(op, flat_in, shard_out, size_);
  comm_check::floating(op, flat_in);
  const MPI_Datatype type = reduce_type(op, flat_in.scalar_type());
  const int n = mpi_count(op, shard_out.numel());
  mpi_count(op, flat_in.numel());
  // in: [W*n] (a float32 copy for 16-bit floats); out: [n], apart from flat_in (MPI forbids aliasing).
  const bool to_float = reduced_in_float(flat_in.scalar_type());
  at::Tensor in = to_float ? flat_in.to(at::kFloat) : flat_in;
  const bool overlaps = comm_check::shard_is_own_slice(op, flat_in, shard_out, rank_);
  at::Tensor out = (to_float || overlaps) ? torch::empty({shard_out.numel()}, in.options()) : shard_out;
  MPI_Request req;
  NT_MPI_CHECK(MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), n, type, MPI_SUM, comm_, &req));
  const double world = size_;
  return CommWork([req, in, out, shard_out, world]() mutable {
    NT_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    out.div_(world);
    if (!out.is_same(shard_out)) shard_out.view({-1}).copy_(out);
  });
}

CommWork MpiCommunicator::all_reduce_async(const at::Tensor& t, Op reduce_op) {
  const char* op = "all_reduce";
  check_cpu(op, "t", t);
  const MPI_Datatype type = reduce_type(op, t.scalar_type());
  const int n = mpi_count(op, t.numel());
  const MPI_Op mop = reduce_op == Op::max ? MPI_MAX : MPI_SUM;
  at::Tensor buf = reduced_in_float(t.scalar_type()) ? t.to(at::kFloat) : t;
  MPI_Request req;
  NT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf.data_ptr(), n, type, mop, comm_, &req));
  return CommWork([req, buf, t]() mutable {
    NT_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    if (!buf.is_same(t)) t.copy_(buf);
  });
}

CommWork MpiCommunicator::broadcast_async(const at::Tensor& t, int root) {
  const char* op = "broadcast";
  check_cpu(op, "t", t);
  comm_check::root(op, root, size_);
  const MPI_Datatype type = bits_type(op, t.scalar_type());
  const int n = mpi_count(op, t.numel());
  MPI_Request req;
  NT_MPI_CHECK(MPI_Ibcast(t.data_ptr(), n, type, root, comm_, &req));
  return CommWork([req, t]() mutable { NT_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE)); });
}

CommWork MpiCommunicator::barrier_async() {
  MPI_Request req;
  NT_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  return CommWork([req]() mutable { NT_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE)); });
}

}  // namespace nt
