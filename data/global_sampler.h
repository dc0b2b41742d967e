// Global-position sampler: the permutation of an epoch comes from (seed, epoch); global batch
// g of the epoch is its slice [g*B, (g+1)*B); trainer rank r of W takes the part
// [r*B/W, (r+1)*B/W) of that slice. The last partial batch of an epoch is dropped. The loader
// state is (epoch, g), so a run may resume on any number of ranks.
#pragma once
#include <cstdint>
#include <vector>

namespace nt {

struct LoaderState {
  int64_t epoch = 0;
  int64_t batch = 0;  // g: the next global batch to take within the epoch
};

class GlobalSampler {
 public:
  // Throws std::invalid_argument when N < B or B % W != 0.
  GlobalSampler(int64_t num_samples, int64_t global_batch, uint64_t seed, int rank = 0,
                int world = 1);
  int64_t batches_per_epoch() const { return num_samples_ / global_batch_; }
  // The sample indices of this rank's part of global batch `state.batch` of `state.epoch`.
  std::vector<int64_t> indices(const LoaderState& state) const;
  // The state after taking `state`'s batch (wraps into the next epoch).
  LoaderState next(const LoaderState& state) const;
  // The permutation of an epoch (cached for the last epoch asked).
  const std::vector<int64_t>& permutation(int64_t epoch) const;

 private:
  int64_t num_samples_, global_batch_;
  uint64_t seed_;
  int rank_, world_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_perm_;
};

}  // namespace nt
