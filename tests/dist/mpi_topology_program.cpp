// Helper program for test_topology: `mpi_topology_program EVAL_RANKS [abort=R]` starts the
// topology, prints describe() on every rank and finalises; with abort=R, rank R calls abort_job
// while the other ranks wait in a barrier that R never joins (they would hang without it).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "dist/mpi_check.h"
#include "dist/topology.h"

int main(int argc, char** argv) {
  const int eval_ranks = argc > 1 ? std::atoi(argv[1]) : 0;
  const std::string mode = argc > 2 ? argv[2] : "";
  const int abort_rank = mode.rfind("abort=", 0) == 0 ? std::atoi(mode.c_str() + 6) : -1;
  try {
    nt::Topology topo = nt::init_topology(&argc, &argv, eval_ranks, /*num_cuda_devices=*/0);
    std::printf("%s\n", nt::describe(topo).c_str());
    std::fflush(stdout);
    if (topo.world_rank == abort_rank)
      nt::abort_job("rank " + std::to_string(abort_rank) + " fails on purpose");
    if (abort_rank >= 0) NT_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    nt::finalize_topology(topo);
  } catch (const std::exception& e) {
    nt::abort_job(e.what());
  }
  return 0;
}
