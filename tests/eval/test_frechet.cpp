// Fréchet distance and feature statistics: golden values from scipy.linalg.sqrtm (the reference
// fid.py), an independent nuclear-norm formula for random and rank-deficient covariances, the
// diagonal closed form, identical statistics, errors; the accumulator against two-pass statistics.
#include "eval/frechet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace {

using nt::FeatureAccumulator;
using nt::FeatureStats;
using nt::frechet_distance;

// Deterministic features that Python rebuilds exactly (integers, then one division):
//   ((i*73856093 ^ j*19349663 ^ s*83492791) % 1000003) / 1000003.0 - 0.5 + 0.01*j*s
at::Tensor formula_features(int64_t n, int64_t d, int64_t s) {
  at::Tensor x = torch::empty({n, d}, torch::kFloat64);  // [N, D]
  auto a = x.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const uint64_t h = (uint64_t(i) * 73856093ull) ^ (uint64_t(j) * 19349663ull) ^
                         (uint64_t(s) * 83492791ull);
      a[i][j] = double(h % 1000003ull) / 1000003.0 - 0.5 + 0.01 * double(j) * double(s);
    }
  return x;
}

FeatureStats stats_of(const at::Tensor& x) {
  FeatureAccumulator acc;
  acc.add(x);
  return acc.finalize();
}

// Independent reference for S1 = A A^T, S2 = B B^T: the eigenvalues of S1 S2 are the squared
// singular values of B^T A, so tr((S1 S2)^(1/2)) is the nuclear norm of B^T A (no eigh involved).
double nuclear_fid(const at::Tensor& mu1, const at::Tensor& a, const at::Tensor& mu2,
                   const at::Tensor& b) {
  const double tr_sqrt = at::linalg_svdvals(at::matmul(b.transpose(0, 1), a)).sum().item<double>();
  return (mu1 - mu2).pow(2).sum().item<double>() + a.pow(2).sum().item<double>() +
         b.pow(2).sum().item<double>() - 2.0 * tr_sqrt;
}

// A second reference for full-rank S1, S2: the eigenvalues of the non-symmetric S1 S2.
double eigvals_fid(const at::Tensor& mu1, const at::Tensor& s1, const at::Tensor& mu2,
                   const at::Tensor& s2) {
  at::Tensor ev = at::real(at::linalg_eigvals(at::matmul(s1, s2))).clamp_min(0.0);
  return (mu1 - mu2).pow(2).sum().item<double>() + s1.trace().item<double>() +
         s2.trace().item<double>() - 2.0 * ev.sqrt().sum().item<double>();
}

void expect_rel(double got, double want, double rel, const char* what) {
  EXPECT_LE(std::abs(got - want), rel * std::abs(want))
      << what << ": got " << got << ", want " << want;
}

TEST(Frechet, MatchesScipySqrtmGoldens) {
  // Printed by scipy 1.10 (pytorch-fid's calculate_frechet_distance on np.mean / np.cov of the
  // same formula features); the last case has rank-deficient covariances (N < D).
  struct Case { int64_t d, n1, s1, n2, s2; double fid; };
  const Case cases[] = {{16, 50, 1, 40, 2, 0.5098192703307083},
                        {64, 300, 3, 200, 5, 34.54286426655746},
                        {32, 20, 1, 24, 4, 12.350050996564573}};
  for (const Case& c : cases) {
    FeatureStats a = stats_of(formula_features(c.n1, c.d, c.s1));
    FeatureStats b = stats_of(formula_features(c.n2, c.d, c.s2));
    expect_rel(frechet_distance(a, b), c.fid, 1e-6, "scipy golden");
  }
}

TEST(Frechet, RandomPsdMatchesIndependentComputation) {
  torch::manual_seed(1234);
  const auto f64 = torch::kFloat64;
  for (int64_t d : {8, 16, 33, 64}) {
    at::Tensor a = torch::randn({d, 2 * d}, f64) / std::sqrt(2.0 * d);  // S1 = A A^T, full rank
    at::Tensor b = torch::randn({d, 3 * d}, f64) * 0.7 / std::sqrt(3.0 * d);
    at::Tensor mu1 = torch::randn({d}, f64), mu2 = torch::randn({d}, f64) * 0.5;
    at::Tensor s1 = at::matmul(a, a.transpose(0, 1)), s2 = at::matmul(b, b.transpose(0, 1));
    const double got = frechet_distance(mu1, s1, mu2, s2);
    expect_rel(got, nuclear_fid(mu1, a, mu2, b), 1e-6, "nuclear-norm reference");
    expect_rel(got, eigvals_fid(mu1, s1, mu2, s2), 1e-6, "eigvals(S1 S2) reference");
    // Symmetric in its arguments.
    expect_rel(frechet_distance(mu2, s2, mu1, s1), got, 1e-9, "swapped arguments");
  }
}

TEST(Frechet, RankDeficientCovariances) {
  torch::manual_seed(99);
  const auto f64 = torch::kFloat64;
  for (int64_t d : {16, 48}) {
    // Exactly singular: rank d/4 and d/2.
    at::Tensor a = torch::randn({d, d / 4}, f64), b = torch::randn({d, d / 2}, f64) * 0.3;
    at::Tensor mu1 = torch::zeros({d}, f64), mu2 = torch::full({d}, 0.1, f64);
    at::Tensor s1 = at::matmul(a, a.transpose(0, 1)), s2 = at::matmul(b, b.transpose(0, 1));
    expect_rel(frechet_distance(mu1, s1, mu2, s2), nuclear_fid(mu1, a, mu2, b), 1e-6,
               "singular covariances");
    // Fewer samples than dimensions, through the accumulator: S = Xc^T Xc / (n - 1).
    at::Tensor x1 = torch::randn({d / 2, d}, f64), x2 = torch::randn({d / 3, d}, f64) + 0.2;
    FeatureStats st1 = stats_of(x1), st2 = stats_of(x2);
    at::Tensor c1 = (x1 - x1.mean(0)).transpose(0, 1) / std::sqrt(double(x1.size(0) - 1));
    at::Tensor c2 = (x2 - x2.mean(0)).transpose(0, 1) / std::sqrt(double(x2.size(0) - 1));
    expect_rel(frechet_distance(st1, st2), nuclear_fid(x1.mean(0), c1, x2.mean(0), c2), 1e-6,
               "fewer samples than dimensions");
    // A singular matrix against itself.
    EXPECT_NEAR(frechet_distance(mu1, s1, mu1, s1), 0.0, 1e-9);
  }
}

TEST(Frechet, IdenticalStatisticsGiveZero) {
  torch::manual_seed(7);
  for (int64_t d : {8, 64}) {
    FeatureStats s = stats_of(torch::randn({4 * d, d}, torch::kFloat64) * 3.0 + 1.0);
    EXPECT_NEAR(frechet_distance(s, s), 0.0, 1e-9) << "D = " << d;
  }
  // float32 inputs are promoted to float64.
  at::Tensor mu = torch::randn({8}), a = torch::randn({8, 8});
  at::Tensor sigma = at::matmul(a, a.transpose(0, 1));
  EXPECT_NEAR(frechet_distance(mu, sigma, mu, sigma), 0.0, 1e-9);
}

TEST(Frechet, DiagonalClosedForm) {
  const int64_t d = 12;
  at::Tensor va = torch::empty({d}, torch::kFloat64), vb = torch::empty({d}, torch::kFloat64);
  at::Tensor mu1 = torch::empty({d}, torch::kFloat64), mu2 = torch::empty({d}, torch::kFloat64);
  double want = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double x = 0.5 + i, y = (i % 3 == 0) ? 0.0 : 2.0 / (i + 1);  // some zero variances
    const double m1 = 0.1 * i, m2 = 1.0 - 0.05 * i * i;
    va[i] = x;
    vb[i] = y;
    mu1[i] = m1;
    mu2[i] = m2;
    want += (std::sqrt(x) - std::sqrt(y)) * (std::sqrt(x) - std::sqrt(y)) + (m1 - m2) * (m1 - m2);
  }
  expect_rel(frechet_distance(mu1, torch::diag(va), mu2, torch::diag(vb)), want, 1e-12,
             "diagonal closed form");
}

TEST(Frechet, ErrorsAreInvalidArgument) {
  const auto f64 = torch::kFloat64;
  at::Tensor mu = torch::zeros({4}, f64), s = torch::eye(4, f64);
  EXPECT_THROW(frechet_distance(mu, s, torch::zeros({5}, f64), torch::eye(5, f64)),
               std::invalid_argument);
  EXPECT_THROW(frechet_distance(mu, torch::eye(3, f64), mu, s), std::invalid_argument);
  EXPECT_THROW(frechet_distance(mu, torch::zeros({4, 5}, f64), mu, s), std::invalid_argument);
  at::Tensor bad = s.clone();
  bad[1][2] = std::nan("");
  try {
    frechet_distance(mu, s, mu, bad);
    FAIL() << "NaN in sigma2 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("sigma2"), std::string::npos) << e.what();
  }
  at::Tensor inf_mu = mu.clone();
  inf_mu[0] = INFINITY;
  EXPECT_THROW(frechet_distance(inf_mu, s, mu, s), std::invalid_argument);
}

TEST(FeatureAccumulator, EqualsTwoPassStatistics) {
  torch::manual_seed(3);
  const int64_t d = 20;
  at::Tensor x = torch::randn({103, d}, torch::kFloat64) * 2.0 + 5.0;  // offset mean
  FeatureAccumulator acc;
  acc.add(x.slice(0, 0, 7));
  acc.add(x.slice(0, 7, 60).to(torch::kFloat32));  // a float32 batch, widened to float64
  acc.add(x.slice(0, 60, 103));
  at::Tensor y = torch::cat({x.slice(0, 0, 7), x.slice(0, 7, 60).to(torch::kFloat32).to(torch::kFloat64),
                             x.slice(0, 60, 103)});  // [103, D] the same values
  FeatureStats s = acc.finalize();
  EXPECT_EQ(s.n, 103);
  EXPECT_EQ(acc.dim(), d);
  at::Tensor mu = y.mean(0);
  at::Tensor c = y - mu;
  at::Tensor cov = at::matmul(c.transpose(0, 1), c) / 102.0;
  EXPECT_LT((s.mu - mu).abs().max().item<double>(), 1e-12);
  EXPECT_LT((s.sigma - cov).abs().max().item<double>(), 1e-10);
  EXPECT_TRUE(s.sigma.equal(s.sigma.transpose(0, 1)));
  EXPECT_EQ(s.mu.scalar_type(), torch::kFloat64);

  // Partial sums from elsewhere combine like one accumulator.
  FeatureAccumulator part1, part2;
  part1.add(x.slice(0, 0, 50));
  part2.add(x.slice(0, 50, 103));
  part1.add_sums(part2.sum(), part2.outer(), part2.count());
  FeatureStats merged = part1.finalize();
  at::Tensor cx = x - x.mean(0);
  EXPECT_LT((merged.sigma - at::matmul(cx.transpose(0, 1), cx) / 102.0).abs().max().item<double>(),
            1e-10);
}

TEST(FeatureAccumulator, Errors) {
  FeatureAccumulator acc;
  EXPECT_THROW(acc.finalize(), std::invalid_argument);
  acc.add(torch::randn({1, 4}));
  EXPECT_THROW(acc.finalize(), std::invalid_argument);  // one sample: no covariance
  EXPECT_THROW(acc.add(torch::randn({3, 5})), std::invalid_argument);
  EXPECT_THROW(acc.add(torch::randn({3})), std::invalid_argument);
  acc.add(torch::randn({2, 4}));
  EXPECT_EQ(acc.finalize().n, 3);
}

}  // namespace
