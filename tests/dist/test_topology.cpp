// dist/topology as the launchers see it: runs mpi_topology_program without a launcher (singleton
// MPI), with Slurm's variables as srun sets them, under mpiexec with 2-3 ranks and an evaluation
// rank, with too many evaluation ranks, and with one rank calling abort_job while the others wait.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "test_util.h"

namespace {

const std::string kMpiexec = std::string("env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ") + NT_MPIEXEC +
                             " --oversubscribe";

std::string program() { return nt::test::exe("tests/mpi_topology_program"); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(Topology, SingleProcessWithoutLauncher) {
  std::string out;
  int rc = nt::test::run_command("env -u SLURM_PROCID -u SLURM_JOB_ID " + program() + " 0", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "rank 0/1 (local 0/1, trainer 0/1, gpu -1), launcher single")) << out;
  EXPECT_FALSE(contains(out, "slurm job")) << out;
}

TEST(Topology, SlurmVariablesAsSrunSetsThem) {
  std::string out;
  int rc = nt::test::run_command("SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_JOB_ID=4242 SLURM_STEP_ID=7 "
                                 "SLURM_JOB_NODELIST='node[01-02]' " + program() + " 0",
                                 &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "launcher srun, slurm job 4242 step 7 nodes node[01-02]")) << out;
}

TEST(Topology, MpiexecThreeRanksWithOneEvaluator) {
  std::string out;
  int rc = nt::test::run_command(kMpiexec + " -n 3 " + program() + " 1", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "rank 0/3 (local 0/3, trainer 0/2, gpu -1), launcher mpirun")) << out;
  EXPECT_TRUE(contains(out, "rank 1/3 (local 1/3, trainer 1/2, gpu -1), launcher mpirun")) << out;
  EXPECT_TRUE(contains(out, "rank 2/3 (local 2/3, evaluator 0/1, gpu -1), launcher mpirun")) << out;
}

TEST(Topology, MpirunInsideASlurmAllocationIsNotSrun) {
  // mpirun's ranks inherit the batch script's SLURM_PROCID=0: only rank 0 matches it.
  std::string out;
  int rc = nt::test::run_command("SLURM_PROCID=0 SLURM_JOB_ID=99 " + kMpiexec + " -n 2 " + program() + " 0", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "rank 0/2 (local 0/2, trainer 0/2, gpu -1), launcher mpirun, slurm job 99")) << out;
  EXPECT_TRUE(contains(out, "rank 1/2 (local 1/2, trainer 1/2, gpu -1), launcher mpirun, slurm job 99")) << out;
}

TEST(Topology, AsManyEvaluationRanksAsRanksIsRefused) {
  std::string out;
  int rc = nt::test::run_command(kMpiexec + " -n 2 " + program() + " 2", &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_TRUE(contains(out, "eval.ranks = 2 but the job has 2 rank(s)")) << out;
  EXPECT_TRUE(contains(out, "fatal:")) << out;
}

TEST(Topology, AbortJobEndsEveryRankPromptly) {
  // Ranks 0 and 2 wait in a barrier that rank 1 never joins; abort_job on rank 1 must end them.
  // stdout goes to /dev/null so that `err` is stderr alone.
  std::string err;
  const auto start = std::chrono::steady_clock::now();
  int rc = nt::test::run_command("(timeout 100 " + kMpiexec + " -n 3 " + program() + " 0 abort=1 > /dev/null)", &err);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(rc, 0) << err;
  EXPECT_NE(rc, 124) << "the job hung until `timeout` killed it:\n" << err;
  EXPECT_LT(seconds, 30.0) << err;
  EXPECT_TRUE(contains(err, "[rank 1] fatal: rank 1 fails on purpose")) << err;
}

TEST(Topology, AbortJobWithoutLauncher) {
  std::string err;
  int rc = nt::test::run_command("(" + program() + " 0 abort=0 > /dev/null)", &err);
  EXPECT_NE(rc, 0) << err;
  EXPECT_TRUE(contains(err, "[rank 0] fatal: rank 0 fails on purpose")) << err;
}

}  // namespace
