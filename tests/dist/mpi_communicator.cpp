// Multi-rank tests of the MPI communicator: every collective, sync and async, for each dtype;
// average and max semantics; in-place forms; bfloat16 reduced in float32; size, dtype, root and
// layout errors; a communicator on the trainers only (one evaluation rank).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "dist/mpi_check.h"
#include "dist/mpi_communicator.h"
#include "dist/topology.h"
#include "world_comm.h"

namespace {

using Op = nt::Communicator::Op;

const std::vector<at::ScalarType> kAllDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf,
                                                at::kLong,  at::kInt,    at::kByte};
const std::vector<at::ScalarType> kFloatDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

// Values 0..n-1 plus `offset`, in `dtype` (small integers: exact in every dtype).
at::Tensor ramp(int64_t n, int64_t offset, at::ScalarType dtype) {
  return (torch::arange(n, torch::kLong) + offset).to(dtype);
}

// Runs `fn(expect_message_part)` and checks it throws std::runtime_error containing `part`.
template <class F>
void expect_error(F&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing \"" << part << "\"";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

class MpiComm : public nt::test::WorldComm {};

TEST_F(MpiComm, RankAndSizeMatchTheWorld) {
  int r = 0, s = 0;
  NT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  NT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &s));
  EXPECT_EQ(R(), r);
  EXPECT_EQ(W(), s);
  EXPECT_EQ(comm_->backend(), "mpi");
}

TEST_F(MpiComm, AllGatherEveryDtypeSyncAndAsync) {
  const int64_t n = 5;
  for (auto dtype : kAllDtypes) {
    SCOPED_TRACE(c10::toString(dtype));
    at::Tensor expected = torch::empty({W() * n}, dtype);
    for (int r = 0; r < W(); ++r) expected.narrow(0, r * n, n).copy_(ramp(n, 40 * r, dtype));

    at::Tensor out = torch::zeros({W() * n}, dtype);
    comm_->all_gather_into(out, ramp(n, 40 * R(), dtype));
    EXPECT_TRUE(torch::equal(out, expected));

    at::Tensor out_async = torch::zeros({W() * n}, dtype);
    nt::CommWork work = comm_->all_gather_into_async(out_async, ramp(n, 40 * R(), dtype));
    EXPECT_TRUE(work.pending());
    work.wait();
    EXPECT_FALSE(work.pending());
    work.wait();  // idempotent
    EXPECT_TRUE(torch::equal(out_async, expected));
  }
}

TEST_F(MpiComm, AllGatherInPlaceFromOwnSlice) {
  const int64_t n = 7;
  at::Tensor flat = torch::full({W() * n}, -1.0f);
  flat.narrow(0, R() * n, n).copy_(ramp(n, 10 * R(), at::kFloat));
  comm_->all_gather_into(flat, flat.narrow(0, R() * n, n));
  for (int r = 0; r < W(); ++r) EXPECT_TRUE(torch::equal(flat.narrow(0, r * n, n), ramp(n, 10 * r, at::kFloat)));
}

TEST_F(MpiComm, ReduceScatterAveragesEveryFloatDtype) {
  const int64_t n = 4;
  for (auto dtype : kFloatDtypes) {
    SCOPED_TRACE(c10::toString(dtype));
    // Rank r contributes i + 2r at index i: the average at i is i + (W-1), exact in every dtype.
    at::Tensor flat = ramp(W() * n, 2 * R(), dtype);
    at::Tensor expected = ramp(n, R() * n + (W() - 1), dtype);

    at::Tensor shard = torch::zeros({n}, dtype);
    comm_->reduce_scatter_avg(shard, flat);
    EXPECT_TRUE(torch::equal(shard, expected)) << shard << expected;

    at::Tensor shard_async = torch::zeros({n}, dtype);
    nt::CommWork work = comm_->reduce_scatter_avg_async(shard_async, flat);
    work.wait();
    EXPECT_TRUE(torch::equal(shard_async, expected));
  }
}

TEST_F(MpiComm, ReduceScatterAverageOfRandomValues) {
  const int64_t n = 1001;
  // Every rank can rebuild every rank's input from its seed.
  auto input_of = [&](int r) {
    torch::manual_seed(1234 + r);
    return torch::randn({W() * n}, torch::kDouble);
  };
  at::Tensor sum = torch::zeros({W() * n}, torch::kDouble);
  for (int r = 0; r < W(); ++r) sum += input_of(r);
  at::Tensor expected = (sum / W()).narrow(0, R() * n, n);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    at::Tensor shard = torch::empty({n}, dtype);
    comm_->reduce_scatter_avg(shard, input_of(R()).to(dtype));
    const double tol = dtype == at::kFloat ? 1e-6 : 1e-14;
    EXPECT_TRUE(torch::allclose(shard.to(torch::kDouble), expected, tol, tol)) << c10::toString(dtype);
  }
}

TEST_F(MpiComm, ReduceScatterInPlaceIntoOwnSlice) {
  const int64_t n = 3;
  at::Tensor flat = ramp(W() * n, R(), at::kDouble);
  at::Tensor own = flat.narrow(0, R() * n, n);
  comm_->reduce_scatter_avg(own, flat);
  // Average of i + r over r: i + (W-1)/2.
  at::Tensor expected = ramp(n, R() * n, at::kDouble) + (W() - 1) / 2.0;
  EXPECT_TRUE(torch::equal(flat.narrow(0, R() * n, n), expected));
}

TEST_F(MpiComm, BFloat16IsReducedInFloat32) {
  if (W() != 3) GTEST_SKIP() << "needs 3 ranks";
  // 256 + 1 + 1: in bfloat16 (8 bits of mantissa) each partial 257 rounds back to 256, while a
  // float32 sum gives 258, which bfloat16 holds exactly.
  at::Tensor t = torch::full({4}, R() == 0 ? 256.0 : 1.0, torch::kBFloat16);
  comm_->all_reduce(t, Op::sum);
  EXPECT_TRUE(torch::equal(t, torch::full({4}, 258.0, torch::kBFloat16))) << t;
  at::Tensor flat = torch::full({3}, R() == 0 ? 768.0 : 3.0, torch::kBFloat16);  // sum 774 / 3 = 258
  at::Tensor shard = torch::empty({1}, torch::kBFloat16);
  comm_->reduce_scatter_avg(shard, flat);
  EXPECT_EQ(shard.item<float>(), 258.0f);
}

TEST_F(MpiComm, AllReduceSumAndMaxEveryDtype) {
  const int64_t n = 6;
  for (auto dtype : kAllDtypes) {
    SCOPED_TRACE(c10::toString(dtype));
    // Rank r holds i + r: the sum is W*i + W(W-1)/2, the max i + W-1.
    at::Tensor sum_expected = (torch::arange(n, torch::kLong) * W() + W() * (W() - 1) / 2).to(dtype);
    at::Tensor max_expected = ramp(n, W() - 1, dtype);

    at::Tensor s = ramp(n, R(), dtype);
    comm_->all_reduce(s, Op::sum);
    EXPECT_TRUE(torch::equal(s, sum_expected)) << s;

    at::Tensor m = ramp(n, R(), dtype);
    comm_->all_reduce(m, Op::max);
    EXPECT_TRUE(torch::equal(m, max_expected)) << m;

    at::Tensor a = ramp(n, R(), dtype);
    nt::CommWork work = comm_->all_reduce_async(a, Op::sum);
    work.wait();
    EXPECT_TRUE(torch::equal(a, sum_expected));
  }
}

TEST_F(MpiComm, AllReduceOfAMultiDimensionalTensor) {
  at::Tensor t = torch::full({2, 3, 4}, static_cast<double>(R() + 1));
  comm_->all_reduce(t, Op::max);
  EXPECT_TRUE(torch::equal(t, torch::full({2, 3, 4}, static_cast<double>(W()))));
}

TEST_F(MpiComm, BroadcastFromEveryRootEveryDtype) {
  const int64_t n = 9;
  for (auto dtype : kAllDtypes) {
    SCOPED_TRACE(c10::toString(dtype));
    for (int root = 0; root < W(); ++root) {
      at::Tensor t = ramp(n, 20 * R(), dtype);
      comm_->broadcast(t, root);
      EXPECT_TRUE(torch::equal(t, ramp(n, 20 * root, dtype))) << "root " << root;
      at::Tensor a = ramp(n, 20 * R(), dtype);
      comm_->broadcast_async(a, root).wait();
      EXPECT_TRUE(torch::equal(a, ramp(n, 20 * root, dtype))) << "root " << root;
    }
  }
}

TEST_F(MpiComm, BarrierHoldsEveryRankUntilAllArrive) {
  using clock = std::chrono::system_clock;
  auto now_us = [] {
    return static_cast<double>(
        std::chrono::duration_cast<std::chrono::microseconds>(clock::now().time_since_epoch()).count());
  };
  for (bool async : {false, true}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(60 * R()));  // ranks arrive in turn
    at::Tensor times = torch::zeros({2 * W()}, torch::kDouble);
    const double arrived = now_us();
    if (async) {
      nt::CommWork work = comm_->barrier_async();
      work.wait();
    } else {
      comm_->barrier();
    }
    const double left = now_us();
    at::Tensor mine = torch::tensor({arrived, left}, torch::kDouble);
    comm_->all_gather_into(times, mine);
    auto t = times.view({W(), 2});
    // Nobody left before the last one arrived.
    EXPECT_GE(t.select(1, 1).min().item<double>(), t.select(1, 0).max().item<double>()) << (async ? "async" : "sync");
  }
}

TEST_F(MpiComm, ManyCollectivesInFlightWaitedInReverse) {
  const int64_t n = 10;
  at::Tensor gathered = torch::zeros({W() * n});
  at::Tensor shard_in = ramp(n, R(), at::kFloat);
  at::Tensor summed = ramp(n, R(), at::kDouble);
  at::Tensor flat = ramp(W() * n, 2 * R(), at::kFloat);
  at::Tensor avg = torch::zeros({n});
  at::Tensor bcast = ramp(n, R(), at::kLong);

  std::vector<nt::CommWork> works;
  works.push_back(comm_->all_gather_into_async(gathered, shard_in));
  works.push_back(comm_->all_reduce_async(summed, Op::sum));
  works.push_back(comm_->reduce_scatter_avg_async(avg, flat));
  works.push_back(comm_->broadcast_async(bcast, W() - 1));
  works.push_back(comm_->barrier_async());
  for (auto it = works.rbegin(); it != works.rend(); ++it) it->wait();

  for (int r = 0; r < W(); ++r) EXPECT_TRUE(torch::equal(gathered.narrow(0, r * n, n), ramp(n, r, at::kFloat)));
  EXPECT_TRUE(torch::equal(summed, (torch::arange(n, torch::kLong) * W() + W() * (W() - 1) / 2).to(at::kDouble)));
  EXPECT_TRUE(torch::equal(avg, ramp(n, R() * n + (W() - 1), at::kFloat)));
  EXPECT_TRUE(torch::equal(bcast, ramp(n, W() - 1, at::kLong)));
}

TEST_F(MpiComm, DroppedWorkCompletesBeforeItsDestructorReturns) {
  at::Tensor t = ramp(5, R(), at::kFloat);
  { nt::CommWork work = comm_->all_reduce_async(t, Op::max); }
  EXPECT_TRUE(torch::equal(t, ramp(5, W() - 1, at::kFloat)));
  nt::CommWork a = comm_->all_reduce_async(t, Op::sum);
  a = comm_->barrier_async();  // move-assignment completes the all-reduce first
  EXPECT_TRUE(torch::equal(t, ramp(5, W() - 1, at::kFloat) * W()));
  a.wait();
}

TEST_F(MpiComm, SizesNotMatchingTheWorldAreRefused) {
  const int64_t n = 4;
  if (W() > 1) {
    // A flat buffer that W does not divide: every rank refuses before any message is sent.
    expect_error([&] { comm_->reduce_scatter_avg(torch::zeros({n}), torch::zeros({W() * n + 1})); },
                 "not a multiple of the world size " + std::to_string(W()));
    expect_error([&] { comm_->all_gather_into(torch::zeros({W() * n + 1}), torch::zeros({n})); },
                 "not a multiple of the world size");
  }
  expect_error([&] { comm_->all_gather_into(torch::zeros({W() * n}), torch::zeros({n + 1})); },
               "must hold W * shard elements");
  expect_error([&] { comm_->reduce_scatter_avg(torch::zeros({n + 1}), torch::zeros({W() * n})); },
               "must hold W * shard elements");
  // The communicator still works afterwards.
  at::Tensor t = torch::ones({3});
  comm_->all_reduce(t, Op::sum);
  EXPECT_TRUE(torch::equal(t, torch::full({3}, static_cast<float>(W()))));
}

TEST_F(MpiComm, BadArgumentsAreRefusedWithTheReason) {
  const int64_t n = 4;
  expect_error([&] { comm_->all_gather_into(torch::zeros({W() * n}, torch::kDouble), torch::zeros({n})); },
               "differs from input dtype");
  expect_error([&] { comm_->reduce_scatter_avg(torch::zeros({n}, torch::kLong), torch::zeros({W() * n}, torch::kLong)); },
               "an average needs a floating dtype");
  expect_error([&] { comm_->all_reduce(torch::zeros({4, 4}).t(), Op::sum); }, "is not contiguous");
  expect_error([&] { comm_->all_reduce(torch::zeros({4}, torch::kComplexFloat), Op::sum); },
               "is not supported");
  expect_error([&] { comm_->broadcast(torch::zeros({4}), W()); },
               "root rank " + std::to_string(W()) + " is outside");
  at::Tensor flat = torch::zeros({W() * n + 2});
  expect_error([&] { comm_->all_gather_into(flat.narrow(0, 0, W() * n), flat.narrow(0, 1, n)); },
               "overlaps the flat buffer");
  expect_error([&] { nt::MpiCommunicator bad(MPI_COMM_NULL); }, "MPI_COMM_NULL");
}

TEST(MpiCommTrainers, OneEvaluationRankLeavesTheOthersTheirOwnCommunicator) {
  int W = 1;
  NT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &W));
  if (W < 2) GTEST_SKIP() << "needs 2 ranks";
  nt::Topology topo = nt::make_topology(1, 0);
  if (!topo.is_evaluator) {
    nt::MpiCommunicator comm(topo.trainers);
    EXPECT_EQ(comm.size(), W - 1);
    EXPECT_EQ(comm.rank(), topo.trainer_rank);
    at::Tensor flat = torch::zeros({(W - 1) * 2}, torch::kLong);
    comm.all_gather_into(flat, torch::full({2}, static_cast<int64_t>(topo.trainer_rank), torch::kLong));
    for (int r = 0; r < W - 1; ++r) EXPECT_TRUE(torch::equal(flat.narrow(0, 2 * r, 2), torch::full({2}, r, torch::kLong)));
    comm.barrier();
  }
  nt::free_topology(topo);
}

}  // namespace
