// The evaluation ranks (the last eval.ranks world ranks). Trainer rank 0 tells the first
// evaluator, by non-blocking MPI messages on MPI_COMM_WORLD, "checkpoint S is published" and
// "training ended at step S"; training never waits for them. The first evaluator always takes
// the newest published checkpoint not yet scored (older ones are skipped, and the log says so),
// tells the other evaluators, and all of them score it together: each generates its share of the
// eval.num_samples seeds (eval.seeds, eval.steps Heun steps, every eval.cfg_scales), decodes
// latents with the VAE when the data need it, extracts features, and the float64 feature sums are
// all-reduced; the first evaluator writes the FID as a {"kind": "eval", ...} line to
// metrics.jsonl and a PNG grid to samples/. When training has ended and its final checkpoint is
// scored, every evaluator returns. While waiting they sleep (polling every 0.1 s), so an idle
// evaluator takes no CPU from the trainers.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <deque>
#include <functional>

namespace nt {

struct Config;
struct Topology;

// Trainer rank 0's side: every send is MPI_Isend; completed sends are reaped on the next call,
// and the destructor waits for those still pending (the evaluator receives them promptly).
class EvalPublisher {
 public:
  explicit EvalPublisher(const Topology& topo);  // the first evaluator: world rank num_trainers
  ~EvalPublisher();
  EvalPublisher(const EvalPublisher&) = delete;
  EvalPublisher& operator=(const EvalPublisher&) = delete;

  void published(int64_t step);  // checkpoint `step` is complete (after commit_checkpoint)
  // Training ended at `step` (after its last checkpoint); `stopped`: by a signal (time limit),
  // so the evaluators stop too instead of scoring what is left.
  void finished(int64_t step, bool stopped = false);

 private:
  struct Message {
    int64_t body[2];  // kind, step
    MPI_Request request = MPI_REQUEST_NULL;
  };
  void send(int64_t kind, int64_t step);
  void reap();
  int dest_ = -1;
  std::deque<Message> pending_;  // stable addresses while MPI reads them
};

// An evaluator rank's whole life (collective over topo.evaluators): validates the settings
// (reference statistics, extractor, VAE when needed) up front, then scores checkpoints until
// training ends. An evaluation that fails (e.g. a checkpoint removed meanwhile) is logged and
// skipped; a settings error throws (the caller ends the job). When `stop_requested` turns true
// (SIGUSR1/SIGTERM before a time limit) or the trainers stopped by a signal, the evaluator
// abandons the evaluation in progress at the next batch and returns; what is left unscored can
// be scored later with eval/fid_worker --run-dir.
void run_evaluator(const Config& cfg, const Topology& topo, const std::function<bool()>& stop_requested = {});

}  // namespace nt
