// The fixture of the multi-rank tests that use an MPI communicator over the whole job
// (tests/dist/mpi_*.cpp): W() ranks, this one R(), comm_ made fresh for every test.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>

#include "dist/mpi_communicator.h"

namespace nt::test {

class WorldComm : public ::testing::Test {
 protected:
  void SetUp() override { comm_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD); }
  void TearDown() override { comm_.reset(); }
  int W() const { return comm_->size(); }
  int R() const { return comm_->rank(); }
  std::unique_ptr<MpiCommunicator> comm_;
};

}  // namespace nt::test
