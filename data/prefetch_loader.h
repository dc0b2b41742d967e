// PrefetchLoader: reader threads that read the batches of a GlobalSampler ahead of the trainer
// into a bounded queue, delivered strictly in order (docs/data-format.md, "Prefetch loader").
//   - `threads` readers take the next batches in sequence; at most `depth` batches are read
//     ahead of the consumer (in progress or ready). Batch g+1 never overtakes g, and the data
//     of every batch depends only on (dataset, sampler, start state, noise seeds): never on the
//     thread count, the depth or timing.
//   - next() returns the batch and the loader state AFTER it (save that in checkpoints; a
//     loader started from it continues with the identical batches, on any rank count).
//   - An error in a reader (damaged file, bad label) is rethrown by next() as DataError, in
//     order (after the batches before it), with the reader's message naming the file, dataset
//     and sample index. The loader is then finished: later next() calls throw it again.
//   - The destructor stops and joins the readers promptly, whether the queue is full, a reader
//     failed, or next() was never called.
//   - With pin_memory and CUDA available, x and y are allocated in pinned (page-locked) host
//     memory so the trainer can copy them with non_blocking=true; otherwise ordinary memory.
#pragma once
#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/global_sampler.h"
#include "data/latent_dataset.h"

namespace nt {

struct Batch {
  at::Tensor x;        // [b,C,H,W] float32, b = global_batch / world (this rank's part)
  at::Tensor y;        // [b] int64
  LoaderState state;   // the position after this batch: save it in checkpoints
  int64_t epoch = 0;   // of this batch
  int64_t batch = 0;   // g: its global batch index within the epoch
  double wait_seconds = 0;  // how long next() blocked waiting for it
};

class PrefetchLoader {
 public:
  // Reads the batches of `sampler` (copied; its rank and world decide the part) from `start`
  // on. noise_seed(epoch) gives the moments noise seed of the batches of an epoch (called by
  // the readers under the loader's lock, so it need not be thread-safe). `dataset` must
  // outlive the loader. Throws std::invalid_argument for threads < 1 or depth < 1.
  PrefetchLoader(const LatentDataset& dataset, const GlobalSampler& sampler, LoaderState start,
                 int threads, int depth, std::function<uint64_t(int64_t epoch)> noise_seed,
                 bool pin_memory);
  ~PrefetchLoader();
  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  // The next batch in order; blocks until it is read. Throws DataError if reading it failed.
  Batch next();

  // Whether x and y are allocated in pinned memory.
  bool pinned() const { return pinned_; }

 private:
  struct Slot {
    int64_t ticket = -1;  // the sequence number it holds; -1: empty
    bool ready = false;
    Batch batch;
    std::exception_ptr error;
  };
  void reader_loop();

  const LatentDataset& dataset_;
  GlobalSampler sampler_;  // used under mutex_ only (its permutation cache is not thread-safe)
  std::function<uint64_t(int64_t)> noise_seed_;
  const int depth_;
  bool pinned_ = false;

  std::mutex mutex_;
  std::condition_variable produced_, consumed_cv_;
  std::vector<Slot> slots_;       // ticket t lives in slots_[t % depth]
  int64_t next_ticket_ = 0;       // the next sequence number a reader takes
  LoaderState next_state_;        // the sampler state of ticket next_ticket_
  int64_t consumed_ = 0;          // tickets handed to the consumer so far
  bool stop_ = false;             // the destructor runs
  bool failed_ = false;           // a reader failed: no new tickets
  std::exception_ptr final_error_;  // what next() rethrows once the failure was delivered
  std::vector<std::thread> threads_;
};

}  // namespace nt
