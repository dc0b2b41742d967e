// Communicator: the collectives that sharding needs, on tensors, behind one interface with two
// backends (mpi_communicator.h: CPU tensors over MPI; nccl_communicator.h: CUDA tensors over
// NCCL). Every collective has an *_async form returning a CommWork whose wait() makes the result
// usable; the plain form is the async one followed by wait(). Every rank of the communicator
// must issue the same collectives in the same order with matching sizes and dtypes.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <utility>

namespace nt {

// A collective in flight. wait() blocks (MPI) or orders the caller's stream (NCCL) until the
// output may be read and the inputs reused; it is idempotent. Destroying a pending CommWork
// waits for it (errors are then logged, not thrown): a tensor it uses is never freed early.
class CommWork {
 public:
  CommWork() = default;  // already complete
  explicit CommWork(std::function<void()> finish) : finish_(std::move(finish)) {}
  CommWork(CommWork&& o) noexcept : finish_(std::move(o.finish_)) { o.finish_ = nullptr; }
  CommWork& operator=(CommWork&& o) noexcept;
  CommWork(const CommWork&) = delete;
  CommWork& operator=(const CommWork&) = delete;
  ~CommWork();

  void wait();
  bool pending() const { return static_cast<bool>(finish_); }

 private:
  void wait_quietly() noexcept;
  std::function<void()> finish_;
};

class Communicator {
 public:
  enum class Op { sum, max };

  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" or "nccl"

  // flat_out [W*n] = concatenation over ranks r of rank r's shard_in [n]. shard_in may be the
  // rank's own slice flat_out[rank*n, (rank+1)*n) (in place, as FSDP gathers).
  virtual CommWork all_gather_into_async(const at::Tensor& flat_out, const at::Tensor& shard_in) = 0;
  // shard_out [n] = (sum over ranks of flat_in [W*n])[rank*n, (rank+1)*n) / W. Floating dtypes.
  virtual CommWork reduce_scatter_avg_async(const at::Tensor& shard_out, const at::Tensor& flat_in) = 0;
  // t = op over ranks of t, in place.
  virtual CommWork all_reduce_async(const at::Tensor& t, Op op) = 0;
  // t = root's t, in place.
  virtual CommWork broadcast_async(const at::Tensor& t, int root) = 0;
  virtual CommWork barrier_async() = 0;

  void all_gather_into(const at::Tensor& flat_out, const at::Tensor& shard_in) {
    all_gather_into_async(flat_out, shard_in).wait();
  }
  void reduce_scatter_avg(const at::Tensor& shard_out, const at::Tensor& flat_in) {
    reduce_scatter_avg_async(shard_out, flat_in).wait();
  }
  void all_reduce(const at::Tensor& t, Op op = Op::sum) { all_reduce_async(t, op).wait(); }
  void broadcast(const at::Tensor& t, int root = 0) { broadcast_async(t, root).wait(); }
  void barrier() { barrier_async().wait(); }
};

// Argument checks shared by the backends; each throws std::runtime_error saying what is wrong
// (collective, argument, sizes, dtypes) and what to do.
namespace comm_check {

void contiguous(const char* op, const char* arg, const at::Tensor& t);
void same_dtype(const char* op, const at::Tensor& a, const at::Tensor& b);
// flat.numel() == world * shard.numel().
void flat_and_shard(const char* op, const at::Tensor& flat, const at::Tensor& shard, int world);
void floating(const char* op, const at::Tensor& t);
void root(const char* op, int root, int world);
// Returns true when shard is exactly flat's slice [rank*n, (rank+1)*n); throws on any other overlap.
bool shard_is_own_slice(const char* op, const at::Tensor& flat, const at::Tensor& shard, int rank);

}  // namespace comm_check

}  // namespace nt
