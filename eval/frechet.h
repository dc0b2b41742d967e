// Fréchet (FID) statistics: float64 feature means and covariances, accumulated batch by batch,
// and the Fréchet distance between two Gaussians
//   ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)),
// with tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)) taken from the eigenvalues of that
// symmetric PSD matrix (stable also for rank-deficient covariances: eigenvalues below
// D * eps * the largest count as zero).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace nt {

struct FeatureStats {
  at::Tensor mu;     // [D] float64
  at::Tensor sigma;  // [D, D] float64
  int64_t n = 0;     // samples behind the statistics (0 when unknown, e.g. read from a file)
};

// Sums of features and of their outer products in float64; finalize() gives the mean and the
// unbiased covariance (divided by n - 1), as numpy's np.cov(rowvar=False) in the reference fid.py.
class FeatureAccumulator {
 public:
  // features: [N, D] (any floating dtype, any device; converted to float64 on the CPU). The first
  // call fixes D; a different D later throws std::invalid_argument.
  void add(const at::Tensor& features);
  // Adds partial sums from elsewhere (e.g. another evaluation rank): sum [D], outer [D, D].
  void add_sums(const at::Tensor& sum, const at::Tensor& outer, int64_t n);
  int64_t count() const { return n_; }
  int64_t dim() const { return dim_; }
  const at::Tensor& sum() const { return sum_; }      // [D] float64
  const at::Tensor& outer() const { return outer_; }  // [D, D] float64
  // Throws std::invalid_argument with fewer than 2 samples.
  FeatureStats finalize() const;

 private:
  int64_t n_ = 0, dim_ = -1;
  at::Tensor sum_, outer_;
};

// The Fréchet distance in float64. Throws std::invalid_argument for mismatched or non-square
// shapes and non-finite values.
double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1, const at::Tensor& mu2,
                        const at::Tensor& sigma2);
double frechet_distance(const FeatureStats& a, const FeatureStats& b);

}  // namespace nt
