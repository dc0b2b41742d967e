// GlobalSampler (docs/data-format.md, "Sampler"). The permutation of epoch e is, exactly,
//   perm_e = torch::randperm(N, CPU generator seeded with nt::mix_seed(seed, e))   (int64)
// with mix_seed the splitmix64 mix of core/rng.h. Global batch g of epoch e is
// perm_e[g*B, (g+1)*B); rank r of W takes perm_e[g*B + r*B/W, g*B + (r+1)*B/W). The
// N - (N/B)*B samples at the end of each permutation are not used in that epoch.
#include "data/global_sampler.h"

#include <torch/torch.h>

#include <stdexcept>
#include <string>

#include "core/rng.h"

namespace nt {

GlobalSampler::GlobalSampler(int64_t num_samples, int64_t global_batch, uint64_t seed, int rank,
                             int world)
    : num_samples_(num_samples), global_batch_(global_batch), seed_(seed), rank_(rank),
      world_(world) {
  if (global_batch <= 0)
    throw std::invalid_argument("global batch must be positive (got " +
                                std::to_string(global_batch) + ")");
  if (world <= 0 || rank < 0 || rank >= world)
    throw std::invalid_argument("trainer rank " + std::to_string(rank) +
                                " is outside [0, world=" + std::to_string(world) + ")");
  if (num_samples < global_batch)
    throw std::invalid_argument("the dataset has " + std::to_string(num_samples) +
                                " samples, fewer than one global batch of " +
                                std::to_string(global_batch) +
                                "; lower train.global_batch or add data");
  if (global_batch % world != 0)
    throw std::invalid_argument("global batch " + std::to_string(global_batch) +
                                " is not divisible by the " + std::to_string(world) +
                                " trainer ranks; choose a multiple of the rank count");
}

const std::vector<int64_t>& GlobalSampler::permutation(int64_t epoch) const {
  if (epoch < 0)
    throw std::invalid_argument("epoch " + std::to_string(epoch) + " is negative");
  if (epoch != cached_epoch_) {
    at::Generator gen = make_generator(c10::Device(c10::kCPU), mix_seed(seed_, epoch));
    at::Tensor perm = at::randperm(num_samples_, gen, at::kLong);  // [N]
    const int64_t* p = perm.data_ptr<int64_t>();
    cached_perm_.assign(p, p + num_samples_);
    cached_epoch_ = epoch;
  }
  return cached_perm_;
}

std::vector<int64_t> GlobalSampler::indices(const LoaderState& state) const {
  if (state.batch < 0 || state.batch >= batches_per_epoch())
    throw std::invalid_argument("loader batch " + std::to_string(state.batch) +
                                " is outside [0, " + std::to_string(batches_per_epoch()) +
                                ") batches per epoch");
  const std::vector<int64_t>& perm = permutation(state.epoch);
  const int64_t part = global_batch_ / world_;
  const int64_t begin = state.batch * global_batch_ + rank_ * part;
  return std::vector<int64_t>(perm.begin() + begin, perm.begin() + begin + part);
}

LoaderState GlobalSampler::next(const LoaderState& state) const {
  LoaderState out = state;
  if (state.batch + 1 >= batches_per_epoch()) {
    out.batch = 0;
    out.epoch = state.epoch + 1;
  } else {
    out.batch = state.batch + 1;
  }
  return out;
}

}  // namespace nt
