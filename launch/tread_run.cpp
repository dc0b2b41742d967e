// tread_run: train a DiT/TREAD model from a TOML config (resumes automatically).
//   tread_run --config configs/quickstart.toml [--set train.steps=100]... [--print-config] [--dry-run]
//   tread_run --config F --benchmark [--bench-steps 10]
#include <boost/program_options.hpp>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "core/config.h"
#include "core/host_memory.h"
#include "core/log.h"
#include "dist/mpi_communicator.h"
#ifdef NT_HAVE_NCCL
#include "dist/cuda_device.h"
#include "dist/nccl_communicator.h"
#endif
#include "dist/topology.h"
#include "eval/eval_rank.h"
#include "launch/cli.h"
#include "launch/stop_signal.h"
#include "launch/trainer.h"

#include <memory>

namespace po = boost::program_options;

namespace {
// "{slurm_job_id}" in run.name becomes the Slurm job id ("local" outside Slurm). A requeued job
// keeps its id, so it resumes its own run folder; every rank sees the same value.
std::string expand_run_name(std::string name) {
  const std::string key = "{slurm_job_id}";
  const char* job = std::getenv("SLURM_JOB_ID");
  const std::string id = job && *job ? job : "local";
  for (size_t at = name.find(key); at != std::string::npos; at = name.find(key, at + id.size()))
    name.replace(at, key.size(), id);
  return name;
}
}  // namespace

int main(int argc, char** argv) {
  nt::tune_host_allocator();
  po::options_description opts("tread_run: train a DiT/TREAD diffusion model with EDM\n\nOptions");
  opts.add_options()
      ("help,h", "show this help")
      ("config", po::value<std::string>(), "TOML config file (see docs/config.md)")
      ("set", po::value<std::vector<std::string>>()->composing(), "override a key: --set train.steps=100 (repeatable)")
      ("print-config", "print the resolved config and exit")
      ("dry-run", "validate the config and data, build the model, print parameters and FLOPs, exit")
      ("benchmark", "time full training steps on random inputs and print img/s")
      ("bench-steps", po::value<int>()->default_value(10), "timed steps of --benchmark")
      ("bench-warmup", po::value<int>()->default_value(2), "untimed warm-up steps of --benchmark");
  try {
    po::variables_map vm;
    if (!nt::parse_command_line(argc, argv, opts, vm)) return 0;  // --help
    nt::Config cfg = nt::config_from_command_line(vm);
    cfg.run.name = expand_run_name(cfg.run.name);
    const std::string resolved = nt::to_toml(cfg);
    if (vm.count("print-config")) {
      std::cout << resolved;
      return 0;
    }
    if (vm.count("dry-run")) {
      nt::dry_run(cfg);
      return 0;
    }
    if (vm.count("benchmark")) {
      nt::benchmark(cfg, vm["bench-warmup"].as<int>(), vm["bench-steps"].as<int>());
      return 0;
    }
    // Training: one process, or every rank of srun/mpirun. The last eval.ranks ranks evaluate.
    std::string gpu_id;  // tells apart the GPUs of ranks that each see one (Slurm's per-task binding)
#ifdef NT_HAVE_NCCL
    gpu_id = nt::cuda_device_pci_bus_id(0);
#endif
    nt::Topology topo = nt::init_topology(&argc, &argv, cfg.eval.ranks, /*num_cuda_devices=*/-1,
                                          /*lone_process_trains=*/true, gpu_id);
    if (topo.world_rank == 0) std::cout << resolved << std::flush;
    nt::log_info(nt::describe(topo));
    nt::install_stop_handlers();
    try {
      if (topo.is_evaluator) {
        nt::run_evaluator(cfg, topo, [] { return nt::stop_requested() != 0; });
      } else {
        // The trainers' communicators: MPI for the small CPU-side agreements, and on GPUs NCCL for
        // the parameters and gradients (a build without NCCL refuses several CUDA trainers).
        std::unique_ptr<nt::MpiCommunicator> comm;
        std::unique_ptr<nt::Communicator> device_comm;
        if (topo.num_trainers > 1) {
          comm = std::make_unique<nt::MpiCommunicator>(topo.trainers);
#ifdef NT_HAVE_NCCL
          if (nt::trains_on_cuda(cfg)) {
            if (topo.gpu < 0)
              throw std::runtime_error("trainer rank " + std::to_string(topo.trainer_rank) + " (local rank " +
                                       std::to_string(topo.local_rank) + ") has no GPU of its own: " +
                                       std::to_string(topo.num_gpus) +
                                       " visible; start one rank per GPU (every rank of a node sees all its GPUs, "
                                       "e.g. srun --gpu-bind=none, or each sees another single one)");
            device_comm = std::make_unique<nt::NcclCommunicator>(topo.trainers, topo.gpu);
          }
#endif
        }
        std::unique_ptr<nt::EvalPublisher> publisher;  // trainer rank 0 tells the evaluators
        if (topo.num_eval_ranks > 0 && topo.trainer_rank == 0) publisher = std::make_unique<nt::EvalPublisher>(topo);
        nt::train(cfg, resolved, comm.get(), topo.gpu, publisher.get(), device_comm.get());
      }
    } catch (const std::exception& e) {
      if (topo.world_size > 1) nt::abort_job(e.what());  // the other ranks must not hang
      throw;
    }
    nt::finalize_topology(topo);
    return 0;
  } catch (const std::exception& e) {
    nt::log_error(e.what());
    return 1;
  }
}
