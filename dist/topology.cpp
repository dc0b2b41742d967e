// Process topology: MPI start-up, ranks and roles, launcher and Slurm detection, abort_job.
#include "dist/topology.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/log.h"
#include "dist/mpi_check.h"

namespace nt {
namespace {

bool g_started_mpi = false;  // this process called MPI_Init_thread (so it also finalises)

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// The launcher's variables as the process started with them, read before MPI_Init_thread (a
// singleton MPI sets PMIX_RANK itself). Read on first use when MPI was started elsewhere.
struct LauncherEnv {
  std::string slurm_procid, slurm_ntasks;
  bool mpirun_rank = false;  // OMPI_COMM_WORLD_RANK, PMI_RANK or PMIX_RANK
};

const LauncherEnv& launcher_env() {
  static const LauncherEnv env = [] {
    LauncherEnv e;
    e.slurm_procid = env_or_empty("SLURM_PROCID");
    e.slurm_ntasks = env_or_empty("SLURM_NTASKS");
    e.mpirun_rank = std::getenv("OMPI_COMM_WORLD_RANK") || std::getenv("PMI_RANK") || std::getenv("PMIX_RANK");
    return e;
  }();
  return env;
}

bool is_int(const std::string& v, int expected) {
  if (v.empty()) return false;
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  return *end == '\0' && x == expected;
}

// srun sets SLURM_PROCID to the world rank (and SLURM_NTASKS to the world size) on every rank;
// mpirun inside a Slurm allocation inherits one SLURM_PROCID per node, which does not match.
// The ranks agree on the answer so that every rank logs the same launcher.
std::string detect_launcher(int world_rank, int world_size) {
  const LauncherEnv& env = launcher_env();
  int slurm_here = is_int(env.slurm_procid, world_rank) &&
                   (env.slurm_ntasks.empty() || is_int(env.slurm_ntasks, world_size));
  int slurm_all = 0;
  NT_MPI_CHECK(MPI_Allreduce(&slurm_here, &slurm_all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD));
  if (slurm_all) return "srun";
  int mpirun_here = env.mpirun_rank;
  int mpirun_any = 0;
  NT_MPI_CHECK(MPI_Allreduce(&mpirun_here, &mpirun_any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD));
  if (mpirun_any) return "mpirun";
  return "single";
}

// `views[r]`: "<devices seen>|<id of device 0>" of the node's local rank r (see make_topology).
int choose_gpu(int local_rank, int num_gpus, const std::vector<std::string>& views) {
  if (local_rank < num_gpus) return local_rank;
  if (num_gpus != 1) return -1;
  std::set<std::string> distinct;
  for (const auto& v : views) {
    if (v.rfind("1|", 0) != 0 || v.size() == 2) return -1;  // another count, or an unknown device
    distinct.insert(v);
  }
  return distinct.size() == views.size() ? 0 : -1;
}

}  // namespace

Topology make_topology(int eval_ranks, int num_cuda_devices, const std::string& gpu_id) {
  int initialized = 0;
  NT_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized)
    throw std::runtime_error(where(__FILE__, __LINE__, "make_topology: MPI is not started; call init_topology"));

  Topology t;
  NT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &t.world_rank));
  NT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &t.world_size));
  {  // srun without its MPI plugin starts N lone processes that would all train into one run folder
    const char* ntasks = std::getenv("SLURM_STEP_NUM_TASKS") ? std::getenv("SLURM_STEP_NUM_TASKS") : nullptr;
    if (ntasks && std::atoi(ntasks) > 1 && t.world_size == 1)
      throw std::runtime_error(where(__FILE__, __LINE__,
                                     std::string("Slurm started ") + ntasks + " tasks but MPI sees a world of 1: "
                                     "srun needs its MPI plugin (e.g. srun --mpi=pmix), or use mpirun"));
  }
  if (eval_ranks < 0 || eval_ranks >= t.world_size)
    throw std::runtime_error(where(
        __FILE__, __LINE__,
        "eval.ranks = " + std::to_string(eval_ranks) + " but the job has " + std::to_string(t.world_size) +
            " rank(s): at least one rank must train, so eval.ranks must be in [0, " +
            std::to_string(t.world_size - 1) + "]; start more ranks or lower eval.ranks"));

  // Ranks on this node: a shared-memory communicator, for the local rank and the GPU choice.
  MPI_Comm local = MPI_COMM_NULL;
  NT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, t.world_rank, MPI_INFO_NULL, &local));
  NT_MPI_CHECK(MPI_Comm_rank(local, &t.local_rank));
  NT_MPI_CHECK(MPI_Comm_size(local, &t.local_size));
  t.num_gpus = num_cuda_devices >= 0 ? num_cuda_devices : static_cast<int>(torch::cuda::device_count());
  {  // each rank's view of the node's GPUs: how many it sees and which is its device 0
    constexpr int kIdLen = 64;
    char mine[kIdLen] = {0};
    std::snprintf(mine, kIdLen, "%d|%s", t.num_gpus, gpu_id.c_str());
    std::vector<char> all(static_cast<size_t>(kIdLen) * t.local_size);
    NT_MPI_CHECK(MPI_Allgather(mine, kIdLen, MPI_CHAR, all.data(), kIdLen, MPI_CHAR, local));
    std::vector<std::string> views;
    for (int r = 0; r < t.local_size; ++r) views.emplace_back(all.data() + static_cast<size_t>(r) * kIdLen);
    t.gpu = choose_gpu(t.local_rank, t.num_gpus, views);
  }
  NT_MPI_CHECK(MPI_Comm_free(&local));

  // Roles: the last eval_ranks ranks evaluate; the others get their own communicator.
  t.num_eval_ranks = eval_ranks;
  t.num_trainers = t.world_size - eval_ranks;
  t.is_evaluator = t.world_rank >= t.num_trainers;
  MPI_Comm role = MPI_COMM_NULL;  // trainers (color 0) and evaluators (color 1)
  NT_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, t.is_evaluator ? 1 : 0, t.world_rank, &role));
  (t.is_evaluator ? t.evaluators : t.trainers) = role;
  if (t.is_evaluator) {
    NT_MPI_CHECK(MPI_Comm_set_errhandler(t.evaluators, MPI_ERRORS_RETURN));
    NT_MPI_CHECK(MPI_Comm_rank(t.evaluators, &t.evaluator_rank));
  }
  if (!t.is_evaluator) {
    NT_MPI_CHECK(MPI_Comm_set_errhandler(t.trainers, MPI_ERRORS_RETURN));
    NT_MPI_CHECK(MPI_Comm_rank(t.trainers, &t.trainer_rank));
    int n = 0;
    NT_MPI_CHECK(MPI_Comm_size(t.trainers, &n));
    if (n != t.num_trainers)
      throw std::runtime_error(where(__FILE__, __LINE__,
                                     "trainers' communicator has " + std::to_string(n) + " ranks, expected " +
                                         std::to_string(t.num_trainers)));
  }

  t.launcher = detect_launcher(t.world_rank, t.world_size);
  t.slurm_job_id = env_or_empty("SLURM_JOB_ID");
  t.slurm_step_id = env_or_empty("SLURM_STEP_ID");
  if (t.slurm_step_id.empty()) t.slurm_step_id = env_or_empty("SLURM_STEPID");
  t.slurm_nodelist = env_or_empty("SLURM_JOB_NODELIST");

  return t;
}

Topology init_topology(int* argc, char*** argv, int eval_ranks, int num_cuda_devices, bool lone_process_trains,
                       const std::string& gpu_id) {
  int initialized = 0;
  NT_MPI_CHECK(MPI_Initialized(&initialized));
  launcher_env();  // read before MPI adds its own variables
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    NT_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    g_started_mpi = true;
    if (provided < MPI_THREAD_FUNNELED)
      throw std::runtime_error(where(__FILE__, __LINE__,
                                     "MPI_Init_thread gave thread level " + std::to_string(provided) +
                                         ", below MPI_THREAD_FUNNELED; use an MPI built with thread support"));
  }
  NT_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  int rank = 0;
  NT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  set_log_rank(rank);
  int size = 1;
  NT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  if (lone_process_trains && size == 1 && eval_ranks > 0) {  // checkpoints can be scored offline
    log_warn("eval.ranks = " + std::to_string(eval_ranks) + " needs more ranks than this single process: it trains "
             "and nothing evaluates during training (score checkpoints with eval/fid_worker --run-dir)");
    eval_ranks = 0;
  }
  return make_topology(eval_ranks, num_cuda_devices, gpu_id);
}

void free_topology(Topology& topo) {
  if (topo.trainers != MPI_COMM_NULL) NT_MPI_CHECK(MPI_Comm_free(&topo.trainers));
  if (topo.evaluators != MPI_COMM_NULL) NT_MPI_CHECK(MPI_Comm_free(&topo.evaluators));
  topo.trainers = topo.evaluators = MPI_COMM_NULL;
}

void finalize_topology(Topology& topo) {
  free_topology(topo);
  int finalized = 0;
  NT_MPI_CHECK(MPI_Finalized(&finalized));
  if (g_started_mpi && !finalized) NT_MPI_CHECK(MPI_Finalize());
}

std::string describe(const Topology& t) {
  std::string s = "rank " + std::to_string(t.world_rank) + "/" + std::to_string(t.world_size) + " (local " +
                  std::to_string(t.local_rank) + "/" + std::to_string(t.local_size) + ", ";
  s += t.is_evaluator ? "evaluator " + std::to_string(t.evaluator_rank) + "/" + std::to_string(t.num_eval_ranks)
                      : "trainer " + std::to_string(t.trainer_rank) + "/" + std::to_string(t.num_trainers);
  s += ", gpu " + std::to_string(t.gpu) + "), launcher " + t.launcher;
  if (!t.slurm_job_id.empty())
    s += ", slurm job " + t.slurm_job_id + " step " + (t.slurm_step_id.empty() ? "-" : t.slurm_step_id) +
         " nodes " + (t.slurm_nodelist.empty() ? "-" : t.slurm_nodelist);
  return s;
}

void abort_job(const std::string& reason, int code) {
  if (code == 0) code = 1;  // an abort is a failure
  std::fprintf(stderr, "[rank %d] fatal: %s -- ending the whole job\n", log_rank(), reason.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace nt
