// The evaluation ranks and trainer rank 0's notifications to them (see eval/eval_rank.h).
#include "eval/eval_rank.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "dist/model_io.h"
#include "dist/mpi_check.h"
#include "dist/topology.h"
#include "eval/feature_extractor.h"
#include "eval/frechet.h"
#include "eval/scoring.h"

namespace fs = std::filesystem;

namespace nt {
namespace {

constexpr int kTag = 7301;                                 // trainer rank 0 -> first evaluator
constexpr int64_t kPublished = 1, kFinished = 2, kStopped = 3;  // message kinds
constexpr int64_t kStop = -1;                              // "no more checkpoints" among evaluators
constexpr auto kPoll = std::chrono::milliseconds(100);

// Waits for a non-blocking MPI operation without spinning a core.
void wait_politely(MPI_Request& req) {
  int done = 0;
  while (true) {
    NT_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(kPoll);
  }
}

// The first evaluator's view of the trainer's messages.
struct Inbox {
  int64_t newest = -1;     // newest published step
  int64_t final_step = -1; // step training ended at (valid once `ended`)
  bool ended = false;
  bool stopped = false;    // the trainers stopped by a signal
  std::vector<int64_t> published;  // every published step, in order

  void drain() {  // takes every message that has arrived, without blocking
    while (true) {
      int flag = 0;
      MPI_Status st;
      NT_MPI_CHECK(MPI_Iprobe(0, kTag, MPI_COMM_WORLD, &flag, &st));
      if (!flag) return;
      int64_t body[2];
      NT_MPI_CHECK(MPI_Recv(body, 2, MPI_INT64_T, 0, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
      if (body[0] == kPublished) {
        published.push_back(body[1]);
        newest = std::max(newest, body[1]);
      } else if (body[0] == kFinished || body[0] == kStopped) {
        ended = true;
        stopped = body[0] == kStopped;
        final_step = body[1];
      }
    }
  }
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

// Scores checkpoint `step` on every evaluator (collective over `comm`); the first evaluator
// writes the results. Returns false (logged) when any evaluator could not load or sample it.
struct EvaluationStopped : std::runtime_error {
  EvaluationStopped() : std::runtime_error("stopped by a signal") {}
};

bool score_step(const Config& cfg, const fs::path& run_dir, int64_t step, MPI_Comm comm, int rank, int world,
                FeatureExtractor& extractor, const FeatureStats& ref, std::unique_ptr<LatentDecoder>& vae,
                const c10::Device& device, MetricsSink& metrics, const ScoreProgress& progress) {
  const std::string dir = (run_dir / "ckpt" / checkpoint_name(step)).string();
  const auto t0 = std::chrono::steady_clock::now();
  ScoringModel m;
  const LatentDecoder* decoder = nullptr;
  std::string error;
  try {
    m = load_scoring_model(dir, device);
    decoder = decoder_for(m.info.latent_space, cfg.eval.vae_weights, device, vae);
  } catch (const std::exception& e) {
    error = e.what();
  }
  int ok = error.empty() ? 1 : 0, all_ok = 0;  // every evaluator goes on, or none
  NT_MPI_CHECK(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm));
  if (!all_ok) {
    log_warn("evaluator " + std::to_string(rank) + ": step " + std::to_string(step) + " not scored: " +
             (error.empty() ? std::string("another evaluator could not load it") : error));
    return false;
  }
  for (const double scale : cfg.eval.cfg_scales) {
    ScoreOptions opt = ScoreOptions::of(cfg.eval, scale);
    opt.eval_rank = rank;
    opt.eval_world = world;
    if (rank == 0) opt.grid_png = eval_grid_path(run_dir.string(), step, scale, cfg.eval.S_churn);
    FeatureAccumulator acc =
        sample_features(m.checkpoint.model, m.sigma_data, m.info, extractor, decoder, opt, device, progress);
    // Merge the evaluators' float64 sums: [count | sum (D) | outer (D*D)].
    const int64_t D = extractor.dim();
    auto packed = torch::zeros({1 + D + D * D}, torch::kDouble);
    packed[0].fill_(static_cast<double>(acc.count()));
    if (acc.count() > 0) {
      packed.narrow(0, 1, D).copy_(acc.sum());
      packed.narrow(0, 1 + D, D * D).copy_(acc.outer().reshape({-1}));
    }
    NT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, packed.data_ptr<double>(), static_cast<int>(packed.numel()), MPI_DOUBLE,
                               MPI_SUM, comm));
    if (rank != 0) continue;
    FeatureAccumulator all;
    all.add_sums(packed.narrow(0, 1, D), packed.narrow(0, 1 + D, D * D).reshape({D, D}),
                 static_cast<int64_t>(packed[0].item<double>()));
    EvalResult r;
    r.step = step;
    r.fid = frechet_distance(all.finalize(), ref);
    r.extractor = extractor.name();
    r.num_samples = all.count();
    r.cfg_scale = scale;
    r.S_churn = cfg.eval.S_churn;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics.write(r.to_json());
    log_info_here("eval step " + std::to_string(step) + " cfg_scale " + fmt("%g", scale) + ": fid " + fmt("%.4f", r.fid) +
             " (" + r.extractor + ", " + std::to_string(r.num_samples) + " samples, " + fmt("%.1f", r.seconds) +
             " s on " + std::to_string(world) + " evaluator(s))");
  }
  return true;
}

}  // namespace

// ---- trainer side -----------------------------------------------------------------------------

EvalPublisher::EvalPublisher(const Topology& topo) : dest_(topo.num_trainers) {}

EvalPublisher::~EvalPublisher() {
  for (auto& m : pending_)
    if (m.request != MPI_REQUEST_NULL) MPI_Wait(&m.request, MPI_STATUS_IGNORE);  // no throw in a destructor
}

void EvalPublisher::reap() {
  while (!pending_.empty()) {
    int done = 0;
    NT_MPI_CHECK(MPI_Test(&pending_.front().request, &done, MPI_STATUS_IGNORE));
    if (!done) return;
    pending_.pop_front();
  }
}

void EvalPublisher::send(int64_t kind, int64_t step) {
  reap();
  pending_.emplace_back();
  Message& m = pending_.back();
  m.body[0] = kind;
  m.body[1] = step;
  NT_MPI_CHECK(MPI_Isend(m.body, 2, MPI_INT64_T, dest_, kTag, MPI_COMM_WORLD, &m.request));
}

void EvalPublisher::published(int64_t step) { send(kPublished, step); }
void EvalPublisher::finished(int64_t step, bool stopped) { send(stopped ? kStopped : kFinished, step); }

// ---- evaluator side ---------------------------------------------------------------------------

void run_evaluator(const Config& cfg, const Topology& topo, const std::function<bool()>& stop_requested) {
  auto stopping = [&] { return stop_requested && stop_requested(); };
  const ScoreProgress progress = [&](int64_t, int64_t) {
    if (stopping()) throw EvaluationStopped();
  };
  if (cfg.train.threads > 0) at::set_num_threads(cfg.train.threads);
  const int rank = topo.evaluator_rank, world = topo.num_eval_ranks;
  const c10::Device device = topo.gpu >= 0 && cfg.train.device != "cpu"
                                 ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(topo.gpu))
                                 : c10::Device(c10::kCPU);
  const fs::path run_dir = fs::path(cfg.run.dir) / cfg.run.name;
  // Settings first: a missing reference or extractor is an error before any training is lost.
  const FeatureStats ref = load_reference_stats(cfg.eval.ref_stats);
  auto extractor = make_feature_extractor(cfg.eval.extractor, cfg.eval.extractor_weights, device);
  check_reference(ref, *extractor, cfg.eval.ref_stats);
  eval_seeds(cfg.eval.seeds, cfg.eval.num_samples, rank, world);  // enough seeds for num_samples
  std::unique_ptr<LatentDecoder> vae;
  MetricsSink metrics;
  if (rank == 0) {
    fs::create_directories(run_dir);
    metrics.open((run_dir / "metrics.jsonl").string());
    log_info_here("evaluator ready: " + extractor->name() + " features, " + std::to_string(cfg.eval.num_samples) +
             " samples (" + cfg.eval.seeds + "), " + std::to_string(cfg.eval.steps) + " steps, on " +
             std::to_string(world) + " evaluator(s), device " + device.str());
  }
  Inbox inbox;
  int64_t scored = -1;
  while (true) {
    int64_t target = kStop;
    if (rank == 0) {  // decide: the newest published checkpoint not yet scored
      while (true) {
        inbox.drain();
        if (inbox.stopped) break;  // the trainers stopped for a time limit: so do we
        if (inbox.newest > scored) {
          target = inbox.newest;
          break;
        }
        if (inbox.ended || stopping()) break;  // everything published is scored, or a time limit is near
        std::this_thread::sleep_for(kPoll);
      }
      if (target != kStop) {
        std::string skipped;
        for (const int64_t s : inbox.published)
          if (s > scored && s < target) skipped += (skipped.empty() ? "" : ", ") + std::to_string(s);
        if (!skipped.empty())
          log_info_here("evaluator skips step(s) " + skipped + " (fell behind; scoring the newest, " +
                   std::to_string(target) + ")");
      }
    }
    MPI_Request req;
    NT_MPI_CHECK(MPI_Ibcast(&target, 1, MPI_INT64_T, 0, topo.evaluators, &req));
    wait_politely(req);
    if (target == kStop) break;
    try {
      score_step(cfg, run_dir, target, topo.evaluators, rank, world, *extractor, ref, vae, device, metrics, progress);
    } catch (const EvaluationStopped&) {
      log_info_here("evaluator stopped by a signal while scoring step " + std::to_string(target) +
                    "; score it later with eval/fid_worker --run-dir " + run_dir.string());
      return;
    }
    scored = target;
  }
  if (rank != 0) return;
  if (inbox.stopped || stopping()) {
    log_info_here("evaluator stopped with the trainers (signal) at step " + std::to_string(inbox.final_step) +
                  "; unscored checkpoints can be scored with eval/fid_worker --run-dir " + run_dir.string());
    return;
  }
  log_info_here("evaluator done: training ended at step " + std::to_string(inbox.final_step) +
                (scored >= 0 ? ", last scored step " + std::to_string(scored) : ", no checkpoint was published"));
}

}  // namespace nt
