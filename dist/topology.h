// Process topology: MPI start-up and shut-down, world/local ranks, roles (the last eval_ranks
// ranks evaluate, the others train in their own communicator), the launcher (srun, mpirun or a
// single process without one), Slurm's job variables, and the GPU of each rank.
#pragma once
#include <mpi.h>

#include <string>

namespace nt {

struct Topology {
  int world_rank = 0, world_size = 1;  // MPI_COMM_WORLD
  int local_rank = 0, local_size = 1;  // ranks sharing this node (MPI_COMM_TYPE_SHARED)
  int num_eval_ranks = 0;              // the last num_eval_ranks world ranks evaluate
  bool is_evaluator = false;
  int trainer_rank = -1;               // rank in `trainers`; -1 on evaluators
  int num_trainers = 1;                // world_size - num_eval_ranks (same on every rank)
  MPI_Comm trainers = MPI_COMM_NULL;   // the trainers' communicator; MPI_COMM_NULL on evaluators
  int evaluator_rank = -1;             // rank in `evaluators`; -1 on trainers
  MPI_Comm evaluators = MPI_COMM_NULL; // the evaluators' communicator; MPI_COMM_NULL on trainers
  std::string launcher;                // "srun", "mpirun" or "single"
  std::string slurm_job_id, slurm_step_id, slurm_nodelist;  // empty outside Slurm
  int num_gpus = 0;                    // CUDA devices visible to this rank
  int gpu = -1;                        // this rank's device (see make_topology), -1: none (CPU)
};

// Starts MPI (MPI_Init_thread, at least MPI_THREAD_FUNNELED; reuses MPI if already started),
// sets MPI_ERRORS_RETURN on MPI_COMM_WORLD so NT_MPI_CHECK sees errors, calls
// nt::set_log_rank(world_rank) and returns make_topology(eval_ranks, num_cuda_devices).
// Collective over MPI_COMM_WORLD. Works under srun, mpirun/mpiexec and as one process.
// num_cuda_devices < 0: ask LibTorch (torch::cuda::device_count()).
// Throws std::runtime_error (naming the rank and the counts) on a bad eval_ranks, except that with
// `lone_process_trains` a job of one process ignores eval_ranks > 0 (with a warning) and trains.
// Under srun, a world of 1 where Slurm started several tasks (no MPI plugin) is an error.
Topology init_topology(int* argc, char*** argv, int eval_ranks, int num_cuda_devices = -1,
                       bool lone_process_trains = false, const std::string& gpu_id = "");

// The topology of an MPI that is already started (collective over MPI_COMM_WORLD): local ranks,
// roles with `eval_ranks` evaluators (0 <= eval_ranks < world size), a new trainers' communicator.
// The GPU of a rank: device `local_rank` when the rank sees that many devices (every rank sees
// all the node's GPUs); device 0 when every rank of the node sees exactly one device and they are
// all different ones (Slurm's per-task binding, --gpus-per-task=1: each sees its own GPU as
// device 0); otherwise none (-1). `gpu_id` names this rank's device 0 (its PCI bus id,
// dist/cuda_device.h), "" when unknown: then ranks that see one device are not told apart and
// only local rank 0 takes it.
Topology make_topology(int eval_ranks, int num_cuda_devices = -1, const std::string& gpu_id = "");

// Frees the communicators a Topology owns (collective over the world); leaves MPI running.
void free_topology(Topology& topo);

// free_topology, then MPI_Finalize (if this process started MPI and it is not finalised yet).
// Destroy every communicator object built on topo.trainers before calling it.
void finalize_topology(Topology& topo);

// One line for the log: "rank 0/4 (local 0/4, trainer 0/3, gpu -1) launcher mpirun, slurm job ...".
std::string describe(const Topology& topo);

// Prints "[rank R] fatal: <reason>" on stderr, then ends the whole job: MPI_Abort(MPI_COMM_WORLD,
// code) when MPI is running, else exits with `code`. Use it where a rank catches an error it
// cannot recover from, so the other ranks do not hang in a collective.
[[noreturn]] void abort_job(const std::string& reason, int code = 1);

}  // namespace nt
