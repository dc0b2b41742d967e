// GlobalSampler: the documented permutation, rank parts that tile each global batch for any
// W, the same global batches for W = 1, 2, 3, epoch wrap-around, argument checks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "data/global_sampler.h"

namespace {

using nt::GlobalSampler;
using nt::LoaderState;

// The documented epoch seed (docs/data-format.md), written out independently of core/rng.
uint64_t documented_seed(uint64_t s, uint64_t e) {
  uint64_t z = s * 0x9E3779B97F4A7C15ull + e + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TEST(GlobalSampler, PermutationIsTheDocumentedRandperm) {
  GlobalSampler s(103, 12, 42);
  for (int64_t epoch : {0, 1, 5}) {
    at::Tensor expect =
        at::randperm(103, at::detail::createCPUGenerator(documented_seed(42, epoch)), at::kLong);
    std::vector<int64_t> perm = s.permutation(epoch);
    ASSERT_EQ(perm.size(), 103u);
    for (int64_t i = 0; i < 103; ++i) ASSERT_EQ(perm[i], expect[i].item<int64_t>()) << i;
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 103; ++i) ASSERT_EQ(sorted[i], i);
  }
}

TEST(GlobalSampler, EpochsAndSeedsGiveDifferentPermutations) {
  GlobalSampler a(200, 10, 1), b(200, 10, 1), c(200, 10, 2);
  const std::vector<int64_t> a0 = a.permutation(0), a1 = a.permutation(1);
  EXPECT_NE(a0, a1);
  EXPECT_EQ(a0, b.permutation(0));  // same (seed, epoch): same order, from a fresh sampler too
  EXPECT_EQ(a.permutation(0), a0);  // asking again after another epoch
  EXPECT_NE(a0, c.permutation(0));
}

TEST(GlobalSampler, RankPartsTileEachGlobalBatch) {
  const int64_t N = 100, B = 12;
  GlobalSampler one(N, B, 7);
  EXPECT_EQ(one.batches_per_epoch(), 8);  // 96 used, the last 4 dropped
  for (int W = 1; W <= 4; ++W) {
    std::vector<GlobalSampler> ranks;
    for (int r = 0; r < W; ++r) ranks.emplace_back(N, B, 7, r, W);
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      std::set<int64_t> seen_in_epoch;
      for (int64_t g = 0; g < one.batches_per_epoch(); ++g) {
        LoaderState st{epoch, g};
        std::vector<int64_t> joined;
        for (int r = 0; r < W; ++r) {
          std::vector<int64_t> part = ranks[r].indices(st);
          ASSERT_EQ(part.size(), size_t(B / W));
          joined.insert(joined.end(), part.begin(), part.end());
        }
        // Concatenated in rank order, the parts are exactly the global batch of W = 1 ...
        ASSERT_EQ(joined, one.indices(st)) << "W=" << W << " epoch " << epoch << " batch " << g;
        // ... which is the slice [g*B, (g+1)*B) of the permutation.
        const std::vector<int64_t>& perm = one.permutation(epoch);
        ASSERT_EQ(joined, std::vector<int64_t>(perm.begin() + g * B, perm.begin() + (g + 1) * B));
        // Disjoint across ranks and across the batches of an epoch.
        for (int64_t i : joined) ASSERT_TRUE(seen_in_epoch.insert(i).second) << i;
      }
      EXPECT_EQ(seen_in_epoch.size(), size_t(one.batches_per_epoch() * B));
    }
  }
}

TEST(GlobalSampler, NextWrapsIntoTheNextEpoch) {
  GlobalSampler s(10, 3, 0);  // 3 batches per epoch, sample 9 dropped each epoch
  ASSERT_EQ(s.batches_per_epoch(), 3);
  LoaderState st;
  std::vector<std::pair<int64_t, int64_t>> seen;
  for (int i = 0; i < 7; ++i) {
    seen.emplace_back(st.epoch, st.batch);
    st = s.next(st);
  }
  const std::vector<std::pair<int64_t, int64_t>> expect = {{0, 0}, {0, 1}, {0, 2}, {1, 0},
                                                           {1, 1}, {1, 2}, {2, 0}};
  EXPECT_EQ(seen, expect);
  // Batch 0 of epoch 1 comes from epoch 1's permutation, not a continuation of epoch 0's.
  LoaderState e1 = s.next(LoaderState{0, 2});
  std::vector<int64_t> first = s.indices(e1);
  const std::vector<int64_t>& perm1 = s.permutation(1);
  EXPECT_EQ(first, std::vector<int64_t>(perm1.begin(), perm1.begin() + 3));
}

TEST(GlobalSampler, RejectsBadArguments) {
  EXPECT_THROW(GlobalSampler(5, 8, 0), std::invalid_argument);        // N < B
  EXPECT_THROW(GlobalSampler(100, 10, 0, 0, 3), std::invalid_argument);  // B % W != 0
  EXPECT_THROW(GlobalSampler(100, 10, 0, 2, 2), std::invalid_argument);  // rank >= W
  EXPECT_THROW(GlobalSampler(100, 0, 0), std::invalid_argument);
  GlobalSampler s(100, 10, 0);
  EXPECT_THROW(s.indices(LoaderState{0, 10}), std::invalid_argument);
  EXPECT_THROW(s.indices(LoaderState{-1, 0}), std::invalid_argument);
  try {
    GlobalSampler(100, 10, 0, 0, 3);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible"), std::string::npos) << e.what();
  }
}

}  // namespace
