// The NCCL communicator's collectives at world size 1 on CUDA tensors (the GPU machine has one
// GPU, and NCCL cannot put two ranks of one communicator on it): every collective leaves or
// copies its data as a one-rank job must, synchronously and through async handles; sharded
// training through it (bf16 gathers, bf16 or fp32 reductions, blocks released after forward and
// prefetched on the communication stream) trains bit for bit what training without a
// communicator trains. Skipped without a CUDA device (CI); MPI is initialised as a singleton for
// the unique-id broadcast.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "dist/nccl_communicator.h"
#include "toy_model.h"

namespace {

class NcclOneRank : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    }
    comm_ = std::make_unique<nt::NcclCommunicator>(MPI_COMM_SELF, 0);
  }
  std::unique_ptr<nt::NcclCommunicator> comm_;
  at::TensorOptions cuda_ = at::TensorOptions().device(at::kCUDA);
};

TEST_F(NcclOneRank, Collectives) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->backend(), "nccl");
  auto t = torch::arange(7, cuda_.dtype(at::kFloat)) - 3;  // [-3..3]
  const auto expected = t.clone();
  comm_->all_reduce(t, nt::Communicator::Op::sum);
  EXPECT_TRUE(torch::equal(t, expected));
  comm_->all_reduce(t, nt::Communicator::Op::max);
  EXPECT_TRUE(torch::equal(t, expected));
  auto flat = torch::zeros({7}, cuda_.dtype(at::kFloat));
  comm_->all_gather_into(flat, t);
  EXPECT_TRUE(torch::equal(flat, expected));
  auto shard = torch::zeros({7}, cuda_.dtype(at::kFloat));
  comm_->reduce_scatter_avg(shard, flat);
  EXPECT_TRUE(torch::equal(shard, expected));
  auto b = torch::full({3}, 5.0, cuda_.dtype(at::kDouble));
  comm_->broadcast(b, 0);
  EXPECT_TRUE(torch::equal(b, torch::full({3}, 5.0, cuda_.dtype(at::kDouble))));
  comm_->barrier();
}

TEST_F(NcclOneRank, AsyncHandlesOrderLaterKernels) {
  auto big = torch::ones({1 << 20}, cuda_.dtype(at::kFloat));
  auto work = comm_->all_reduce_async(big, nt::Communicator::Op::sum);
  work.wait();  // the compute stream waits for the collective
  big.mul_(2);  // a kernel after it sees its result
  torch::cuda::synchronize();
  EXPECT_EQ(big.sum().item<double>(), 2.0 * (1 << 20));
}

TEST_F(NcclOneRank, RejectsCpuTensors) {
  auto cpu = torch::ones({4});
  EXPECT_ANY_THROW(comm_->all_reduce(cpu, nt::Communicator::Op::sum));
}

TEST_F(NcclOneRank, ShardedTrainingEqualsTrainingWithoutCommunicator) {
  const c10::Device cuda(c10::kCUDA, 0);
  for (auto blocks : {at::kFloat, at::kBFloat16})
    for (auto reduce : {at::kFloat, at::kBFloat16})
      for (bool reshard : {false, true})
        for (int micro : {1, 3}) {  // 3: gradients accumulated over micro-batches of two rows
          const auto alone = nt::test::train_toy(nullptr, blocks, reduce, false, cuda, micro);
          const auto nccl = nt::test::train_toy(comm_.get(), blocks, reduce, reshard, cuda, micro);
          for (size_t u = 0; u < alone.size(); ++u)
            EXPECT_TRUE(torch::equal(nccl[u], alone[u]))
                << "unit " << u << " blocks " << c10::toString(blocks) << " reduce " << c10::toString(reduce)
                << " reshard " << reshard << " micro-batches " << micro;
        }
  // The check can fail: bf16 blocks train other numbers than fp32 ones.
  const auto f32 = nt::test::train_toy(comm_.get(), at::kFloat, at::kFloat, false, cuda);
  const auto b16 = nt::test::train_toy(comm_.get(), at::kBFloat16, at::kFloat, false, cuda);
  EXPECT_FALSE(torch::equal(f32[1], b16[1]));
}

}  // namespace
