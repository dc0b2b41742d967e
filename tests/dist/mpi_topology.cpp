// Multi-rank tests of dist/topology: ranks, local ranks, roles with 0 and 1 evaluation ranks,
// the trainers' communicator, GPUs from a device count, the launcher, errors naming the rank.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/log.h"
#include "dist/mpi_check.h"
#include "dist/topology.h"

namespace {

int world_rank() {
  int r = 0;
  NT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  return r;
}

int world_size() {
  int s = 1;
  NT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &s));
  return s;
}

// Sum over `comm` of one int from each rank.
int sum_over(MPI_Comm comm, int x) {
  int total = 0;
  NT_MPI_CHECK(MPI_Allreduce(&x, &total, 1, MPI_INT, MPI_SUM, comm));
  return total;
}

TEST(Topology, WorldAndLocalRanks) {
  nt::Topology t = nt::make_topology(0, 0);
  EXPECT_EQ(t.world_rank, world_rank());
  EXPECT_EQ(t.world_size, world_size());
  // Every rank of these tests runs on this machine: the node holds the whole world.
  EXPECT_EQ(t.local_size, t.world_size);
  EXPECT_EQ(t.local_rank, t.world_rank);
  // Local ranks are distinct: their sum is 0 + 1 + ... + (W-1).
  EXPECT_EQ(sum_over(MPI_COMM_WORLD, t.local_rank), t.world_size * (t.world_size - 1) / 2);
  EXPECT_EQ(nt::log_rank(), t.world_rank);
  nt::free_topology(t);
  EXPECT_EQ(t.trainers, MPI_COMM_NULL);
}

TEST(Topology, NoEvaluationRanksAllTrain) {
  nt::Topology t = nt::make_topology(0, 0);
  EXPECT_EQ(t.num_eval_ranks, 0);
  EXPECT_FALSE(t.is_evaluator);
  EXPECT_EQ(t.num_trainers, t.world_size);
  EXPECT_EQ(t.trainer_rank, t.world_rank);
  ASSERT_NE(t.trainers, MPI_COMM_NULL);
  int n = 0;
  NT_MPI_CHECK(MPI_Comm_size(t.trainers, &n));
  EXPECT_EQ(n, t.world_size);
  EXPECT_EQ(sum_over(t.trainers, 1), t.world_size);
  nt::free_topology(t);
}

TEST(Topology, LastRankEvaluates) {
  const int W = world_size();
  if (W < 2) {
    // One rank cannot also evaluate: the error names both counts.
    try {
      nt::make_topology(1, 0);
      FAIL() << "eval_ranks = 1 on 1 rank was accepted";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("eval.ranks = 1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("has 1 rank(s)"), std::string::npos) << msg;
      EXPECT_NE(msg.find("(rank 0)"), std::string::npos) << msg;
    }
    return;
  }
  nt::Topology t = nt::make_topology(1, 0);
  EXPECT_EQ(t.num_eval_ranks, 1);
  EXPECT_EQ(t.num_trainers, W - 1);
  EXPECT_EQ(t.is_evaluator, t.world_rank == W - 1);
  if (t.is_evaluator) {
    EXPECT_EQ(t.trainers, MPI_COMM_NULL);
    EXPECT_EQ(t.trainer_rank, -1);
  } else {
    ASSERT_NE(t.trainers, MPI_COMM_NULL);
    EXPECT_EQ(t.trainer_rank, t.world_rank);
    int n = 0;
    NT_MPI_CHECK(MPI_Comm_size(t.trainers, &n));
    EXPECT_EQ(n, W - 1);
    EXPECT_EQ(sum_over(t.trainers, 1), W - 1);
  }
  // Exactly one evaluator in the world.
  EXPECT_EQ(sum_over(MPI_COMM_WORLD, t.is_evaluator ? 1 : 0), 1);
  nt::free_topology(t);
}

TEST(Topology, EvalRanksOutOfRangeAreRefused) {
  const int W = world_size();
  for (int eval : {W, W + 2, -1}) {
    try {
      nt::make_topology(eval, 0);
      ADD_FAILURE() << "eval_ranks = " << eval << " on " << W << " rank(s) was accepted";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("eval.ranks = " + std::to_string(eval)), std::string::npos) << msg;
      EXPECT_NE(msg.find("has " + std::to_string(W) + " rank(s)"), std::string::npos) << msg;
    }
  }
}

TEST(Topology, GpuIsLocalRankWhenDevicesExist) {
  nt::Topology none = nt::make_topology(0, 0);
  EXPECT_EQ(none.num_gpus, 0);
  EXPECT_EQ(none.gpu, -1);
  nt::free_topology(none);
  nt::Topology all = nt::make_topology(0, 8);
  EXPECT_EQ(all.gpu, all.local_rank);
  nt::free_topology(all);
  nt::Topology one = nt::make_topology(0, 1);  // more ranks than GPUs: the others run on CPU
  EXPECT_EQ(one.gpu, one.local_rank == 0 ? 0 : -1);
  nt::free_topology(one);
}

// Slurm's per-task binding (--gpus-per-task=1): every rank sees one device, numbered 0, and they
// are different GPUs (PCI bus ids); then each takes its device 0. The same single GPU seen by all,
// or ids unknown (no CUDA runtime): only local rank 0 takes it, as before.
TEST(Topology, RanksThatEachSeeAnotherSingleGpuTakeIt) {
  nt::Topology probe = nt::make_topology(0, 0);
  const int local = probe.local_rank, size = probe.local_size;
  nt::free_topology(probe);
  nt::Topology own = nt::make_topology(0, 1, "0000:" + std::to_string(16 + local) + ":00.0");
  EXPECT_EQ(own.gpu, 0);
  nt::free_topology(own);
  nt::Topology same = nt::make_topology(0, 1, "0000:10:00.0");
  EXPECT_EQ(same.gpu, local == 0 ? 0 : -1);
  nt::free_topology(same);
  nt::Topology unknown = nt::make_topology(0, 1, "");
  EXPECT_EQ(unknown.gpu, local == 0 ? 0 : -1);
  nt::free_topology(unknown);
  // Two ranks (of three or more) share one GPU: those beyond local rank 0 get none.
  const std::string id = "0000:" + std::to_string(local == 2 ? 16 + 1 : 16 + local) + ":00.0";
  nt::Topology clash = nt::make_topology(0, 1, id);
  EXPECT_EQ(clash.gpu, local == 0 || size < 3 ? 0 : -1);
  nt::free_topology(clash);
}

TEST(Topology, LauncherIsDetected) {
  nt::Topology t = nt::make_topology(0, 0);
  // ctest starts these programs with mpiexec (which sets OMPI_COMM_WORLD_RANK) or alone.
  const bool under_mpiexec = std::getenv("OMPI_COMM_WORLD_RANK") != nullptr;
  EXPECT_EQ(t.launcher, under_mpiexec ? "mpirun" : "single");
  const std::string line = nt::describe(t);
  EXPECT_NE(line.find("rank " + std::to_string(t.world_rank) + "/" + std::to_string(t.world_size)),
            std::string::npos) << line;
  nt::free_topology(t);
}

TEST(Topology, MpiErrorsThrowNamingCallAndRank) {
  const int W = world_size();
  int x = 0;
  try {
    NT_MPI_CHECK(MPI_Bcast(&x, 1, MPI_INT, W + 5, MPI_COMM_WORLD));  // no such root
    FAIL() << "MPI_Bcast with root " << W + 5 << " did not fail";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("MPI call MPI_Bcast(&x, 1, MPI_INT, W + 5, MPI_COMM_WORLD) failed: "), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("(rank " + std::to_string(world_rank()) + ")"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mpi_topology.cpp:"), std::string::npos) << msg;
  }
}

}  // namespace
