// CommWork (pending collectives) and the argument checks shared by the communicator backends.
#include "dist/communicator.h"

#include <torch/torch.h>

#include "core/log.h"

namespace nt {

CommWork& CommWork::operator=(CommWork&& o) noexcept {
  if (this != &o) {
    wait_quietly();
    finish_ = std::move(o.finish_);
    o.finish_ = nullptr;
  }
  return *this;
}

CommWork::~CommWork() { wait_quietly(); }

void CommWork::wait() {
  if (!finish_) return;
  auto finish = std::move(finish_);
  finish_ = nullptr;
  finish();
}

void CommWork::wait_quietly() noexcept {
  try {
    wait();
  } catch (const std::exception& e) {
    log_error(std::string("a collective dropped without wait() failed: ") + e.what());
  }
}

namespace comm_check {
namespace {
[[noreturn]] void fail(const char* op, const std::string& what) {
  throw std::runtime_error(where(__FILE__, __LINE__, std::string(op) + ": " + what));
}
}  // namespace

void contiguous(const char* op, const char* arg, const at::Tensor& t) {
  if (!t.defined()) fail(op, std::string(arg) + " is an undefined tensor");
  if (!t.is_contiguous())
    fail(op, std::string(arg) + " is not contiguous; pass a contiguous tensor (e.g. .contiguous())");
}

void same_dtype(const char* op, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    fail(op, std::string("output dtype ") + c10::toString(a.scalar_type()) + " differs from input dtype " +
                 c10::toString(b.scalar_type()) + "; cast one of them first");
}

void flat_and_shard(const char* op, const at::Tensor& flat, const at::Tensor& shard, int world) {
  if (flat.numel() % world != 0)
    fail(op, "flat buffer has " + std::to_string(flat.numel()) + " elements, not a multiple of the world size " +
                 std::to_string(world) + "; pad it to a multiple of W (FlatLayout does)");
  if (flat.numel() != static_cast<int64_t>(world) * shard.numel())
    fail(op, "flat buffer has " + std::to_string(flat.numel()) + " elements but the shard has " +
                 std::to_string(shard.numel()) + " and the world size is " + std::to_string(world) +
                 "; the flat buffer must hold W * shard elements");
}

void floating(const char* op, const at::Tensor& t) {
  if (!at::isFloatingType(t.scalar_type()))
    fail(op, std::string("an average needs a floating dtype, got ") + c10::toString(t.scalar_type()) +
                 "; use float32, float64 or bfloat16 (or all_reduce with Op::sum)");
}

void root(const char* op, int root, int world) {
  if (root < 0 || root >= world)
    fail(op, "root rank " + std::to_string(root) + " is outside [0, " + std::to_string(world - 1) + "]");
}

bool shard_is_own_slice(const char* op, const at::Tensor& flat, const at::Tensor& shard, int rank) {
  const auto* f = static_cast<const char*>(flat.data_ptr());
  const auto* s = static_cast<const char*>(shard.data_ptr());
  const int64_t esize = flat.element_size();
  const int64_t shard_bytes = shard.numel() * esize;
  if (shard_bytes == 0) return false;
  if (s == f + rank * shard_bytes) return true;
  if (s < f + flat.numel() * esize && f < s + shard_bytes)
    fail(op, "the shard overlaps the flat buffer but is not this rank's slice [rank*n, (rank+1)*n) with rank " +
                 std::to_string(rank) + "; use separate buffers or exactly that slice");
  return false;
}

}  // namespace comm_check
}  // namespace nt
