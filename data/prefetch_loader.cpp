// PrefetchLoader (prefetch_loader.h). Each batch to read is a ticket t = 0, 1, 2, ... counted
// from the start state; a reader takes the next ticket (with its sampler state, indices and
// noise seed) under the lock, only while t < consumed + depth, reads it outside the lock and
// puts it into slot t % depth. next() waits for the slot of ticket `consumed`. Tickets are
// handed out in order, so the batch of ticket t is the same whichever thread reads it.
#include "data/prefetch_loader.h"

#include <torch/torch.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace nt {

PrefetchLoader::PrefetchLoader(const LatentDataset& dataset, const GlobalSampler& sampler,
                               LoaderState start, int threads, int depth,
                               std::function<uint64_t(int64_t epoch)> noise_seed,
                               bool pin_memory)
    : dataset_(dataset), sampler_(sampler), noise_seed_(std::move(noise_seed)), depth_(depth),
      next_state_(start) {
  if (threads < 1)
    throw std::invalid_argument("prefetch loader: threads must be at least 1 (got " +
                                std::to_string(threads) + "; set data.prefetch_threads)");
  if (depth < 1)
    throw std::invalid_argument("prefetch loader: depth must be at least 1 (got " +
                                std::to_string(depth) + "; set data.prefetch_depth)");
  if (!noise_seed_) throw std::invalid_argument("prefetch loader: noise_seed is empty");
  sampler_.indices(start);  // checks the start state (throws std::invalid_argument)
  pinned_ = pin_memory && at::globalContext().hasCUDA();
  slots_.resize(static_cast<size_t>(depth));
  threads_.reserve(static_cast<size_t>(threads));
  try {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { reader_loop(); });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    consumed_cv_.notify_all();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

PrefetchLoader::~PrefetchLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  consumed_cv_.notify_all();
  for (std::thread& t : threads_) t.join();  // a reader finishes at most its current read
}

void PrefetchLoader::reader_loop() {
  for (;;) {
    int64_t ticket = 0;
    LoaderState state, after;
    std::vector<int64_t> indices;
    uint64_t seed = 0;
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      consumed_cv_.wait(lock, [&] {
        return stop_ || failed_ || next_ticket_ < consumed_ + depth_;
      });
      if (stop_ || failed_) return;
      ticket = next_ticket_++;
      state = next_state_;
      try {
        indices = sampler_.indices(state);
        seed = noise_seed_(state.epoch);
        after = sampler_.next(state);
        next_state_ = after;
      } catch (...) {
        error = std::current_exception();
        failed_ = true;
      }
      Slot& slot = slots_[static_cast<size_t>(ticket % depth_)];
      slot.ticket = ticket;
      slot.ready = false;
    }

    Batch batch;
    batch.state = after;
    batch.epoch = state.epoch;
    batch.batch = state.batch;
    if (!error) {
      try {
        const DatasetInfo& info = dataset_.info();
        const int64_t b = static_cast<int64_t>(indices.size());
        at::TensorOptions opt = at::TensorOptions().pinned_memory(pinned_);
        batch.x = at::empty({b, info.channels, info.height, info.width}, opt.dtype(at::kFloat));
        batch.y = at::empty({b}, opt.dtype(at::kLong));
        dataset_.read_into(indices, seed, batch.x, batch.y);
      } catch (const std::exception& e) {
        error = std::make_exception_ptr(
            DataError("data loader: reading global batch " + std::to_string(state.batch) +
                      " of epoch " + std::to_string(state.epoch) + " failed: " + e.what()));
      } catch (...) {
        error = std::make_exception_ptr(
            DataError("data loader: reading global batch " + std::to_string(state.batch) +
                      " of epoch " + std::to_string(state.epoch) + " failed (unknown error)"));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      Slot& slot = slots_[static_cast<size_t>(ticket % depth_)];
      slot.batch = std::move(batch);
      slot.error = error;
      slot.ready = true;
      if (error) failed_ = true;
    }
    produced_.notify_all();
  }
}

Batch PrefetchLoader::next() {
  const auto t0 = std::chrono::steady_clock::now();
  Batch batch;
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (final_error_) std::rethrow_exception(final_error_);
    Slot& slot = slots_[static_cast<size_t>(consumed_ % depth_)];
    produced_.wait(lock, [&] { return slot.ticket == consumed_ && slot.ready; });
    batch = std::move(slot.batch);
    error = slot.error;
    slot = Slot();
    ++consumed_;
    if (error) final_error_ = error;
  }
  consumed_cv_.notify_all();
  if (error) std::rethrow_exception(error);
  batch.wait_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return batch;
}

}  // namespace nt
