// Shared main of the multi-rank GoogleTest programs (tests/dist/mpi_*.cpp): starts MPI through
// init_topology, runs every test on every rank (rank 0 prints GoogleTest's report; the other
// ranks print only their failures, naming the rank), agrees on one exit code, finalises.
#include <gtest/gtest.h>

#include <cstdio>

#include "dist/mpi_check.h"
#include "dist/topology.h"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
    std::fflush(stderr);
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  nt::Topology topo;
  try {
    topo = nt::init_topology(&argc, &argv, /*eval_ranks=*/0, /*num_cuda_devices=*/0);
  } catch (const std::exception& e) {
    nt::abort_job(e.what());
  }
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (topo.world_rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(topo.world_rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  try {
    int any_failed = 0;
    NT_MPI_CHECK(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD));
    if (topo.world_rank == 0 && any_failed && !failed)
      std::fprintf(stderr, "tests failed on another rank (see its [rank R] lines)\n");
    nt::finalize_topology(topo);
    return any_failed;
  } catch (const std::exception& e) {
    nt::abort_job(e.what());
  }
}
