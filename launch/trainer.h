// The training loop of tread_run: EDM loss on HDF5 latents, AdamW with warm-up and global-norm
// clipping on flat fp32 buffers, EMA, metrics.jsonl, rolling checkpoints, automatic resume.
// With several trainer ranks the flat buffers are sharded over them (dist/sharded_params.h).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "core/config.h"

namespace nt {

class Communicator;
class EvalPublisher;

struct TrainSummary {
  int64_t start_step = 0;   // where this invocation began (after a resume)
  int64_t end_step = 0;     // steps completed
  double last_loss = 0;     // mean loss of the last log interval
  double img_per_s = 0;     // over this invocation
  std::string checkpoint;   // the last checkpoint written ("" if none)
  int stopped_by_signal = 0;  // the signal that stopped training early, 0 if it ran to the end
};

// Trains cfg (already validated); writes <run.dir>/<run.name>/. `config_toml` is saved as
// config.toml. `comm` is the trainer ranks' communicator (null: one process); every trainer
// rank calls train() and they train exactly what one rank would with the same global batch.
// Throws on errors (the caller prints them and exits 1, or aborts the job).
// `gpu`: the CUDA device of this rank when training on CUDA (its local rank). `publisher`
// (trainer rank 0, when there are evaluation ranks): told of every checkpoint and of the end.
// `device_comm`: the same ranks as `comm`, for the collectives on parameters and gradients
// (NCCL when they are CUDA tensors); null: `comm` serves them too. `comm` always carries the
// small CPU-side agreements (resume choice, stop signal, loss, gradient norm).
TrainSummary train(const Config& cfg, const std::string& config_toml, Communicator* comm = nullptr, int gpu = 0,
                   EvalPublisher* publisher = nullptr, Communicator* device_comm = nullptr);

// Whether train() computes on CUDA (train.device "cuda", or "auto" with a CUDA device): its
// trainer ranks then need an NCCL communicator for the parameters.
bool trains_on_cuda(const Config& cfg);

// `--dry-run`: validates what training would open, builds the model, prints parameter count
// and FLOPs per image.
void dry_run(const Config& cfg);

struct BenchResult {
  std::string device;         // "cpu", "cuda:0"
  int64_t batch = 0;          // images per step (train.global_batch)
  int64_t params = 0;         // trainable parameters
  double train_flop = 0;      // FLOP per training image (forward + backward, routes applied)
  double step_s = 0;          // mean time of a timed step
  double img_per_s = 0;
  double tflops = 0;          // img_per_s * train_flop / 1e12
  double first_loss = 0, last_loss = 0;  // of the timed steps (a sanity check, not a metric)
};

// `--benchmark`: timed full training steps (forward, backward, AdamW, EMA) on random inputs
// of the model's shape, one process; prints and returns the timings. `after`, when given, is
// called once after the timed steps with a function that runs n more steps back to back, as the
// timed ones run, and then waits for the device (e.g. under a profiler).
BenchResult benchmark(const Config& cfg, int warmup_steps, int timed_steps,
                      const std::function<void(const std::function<void(int)>&)>& after = {});

}  // namespace nt
