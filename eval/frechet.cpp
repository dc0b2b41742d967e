// Fréchet distance and float64 feature statistics (see frechet.h).
#include "eval/frechet.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace nt {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

at::Tensor to_cpu_f64(const at::Tensor& t) {
  return t.to(torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCPU)).contiguous();
}

void check_finite(const at::Tensor& t, const char* what) {
  if (!at::isfinite(t).all().item<bool>())
    throw std::invalid_argument(std::string("Fréchet distance: ") + what +
                                " holds NaN or infinite values");
}

// Eigenvalues of a symmetric PSD matrix [D] with the numerical zeros set to 0: negative ones
// and those below D * eps * the largest, which are rounding noise of eigh (on the order of
// eps * ||S||). Their square roots (~sqrt(eps) each) would otherwise add up for rank-deficient
// covariances, e.g. 1e-5 of error for 36 null directions of a matrix with norm 1e4.
at::Tensor clean_psd_eigenvalues(const at::Tensor& evals) {
  const double top = evals.numel() ? evals.max().item<double>() : 0.0;
  const double tol = static_cast<double>(evals.numel()) * std::numeric_limits<double>::epsilon() *
                     std::max(top, 0.0);
  return at::where(evals > tol, evals, at::zeros_like(evals));
}

// The symmetric PSD square root of a symmetric matrix S [D, D]: V diag(sqrt(max(l, 0))) V^T.
at::Tensor psd_sqrt(const at::Tensor& s) {
  auto [evals, evecs] = at::linalg_eigh(s);  // [D], [D, D]
  at::Tensor root = clean_psd_eigenvalues(evals).sqrt();
  return at::matmul(evecs * root.unsqueeze(0), evecs.transpose(0, 1));
}

}  // namespace

void FeatureAccumulator::add(const at::Tensor& features) {
  if (!features.defined() || features.dim() != 2)
    throw std::invalid_argument("FeatureAccumulator::add: features must be [N, D], got " +
                                (features.defined() ? shape_str(features) : std::string("none")));
  at::Tensor x = to_cpu_f64(features);  // [N, D]
  const int64_t d = x.size(1);
  if (dim_ >= 0 && d != dim_)
    throw std::invalid_argument("FeatureAccumulator::add: features have D = " + std::to_string(d) +
                                " but earlier batches had D = " + std::to_string(dim_));
  add_sums(x.sum(0), at::matmul(x.transpose(0, 1), x), x.size(0));
}

void FeatureAccumulator::add_sums(const at::Tensor& sum, const at::Tensor& outer, int64_t n) {
  if (sum.dim() != 1 || outer.dim() != 2 || outer.size(0) != sum.size(0) ||
      outer.size(1) != sum.size(0))
    throw std::invalid_argument("FeatureAccumulator::add_sums: expected sum [D] and outer [D, D], "
                                "got " + shape_str(sum) + " and " + shape_str(outer));
  if (n < 0) throw std::invalid_argument("FeatureAccumulator::add_sums: negative count");
  const int64_t d = sum.size(0);
  if (dim_ >= 0 && d != dim_)
    throw std::invalid_argument("FeatureAccumulator::add_sums: D = " + std::to_string(d) +
                                " but earlier batches had D = " + std::to_string(dim_));
  if (dim_ < 0) {
    dim_ = d;
    sum_ = torch::zeros({d}, torch::kFloat64);
    outer_ = torch::zeros({d, d}, torch::kFloat64);
  }
  sum_ += to_cpu_f64(sum);
  outer_ += to_cpu_f64(outer);
  n_ += n;
}

FeatureStats FeatureAccumulator::finalize() const {
  if (n_ < 2)
    throw std::invalid_argument("FeatureAccumulator::finalize: a covariance needs at least 2 "
                                "samples, got " + std::to_string(n_));
  FeatureStats s;
  s.n = n_;
  s.mu = sum_ / static_cast<double>(n_);  // [D]
  // (S - n mu mu^T) / (n - 1), symmetrised against rounding.
  at::Tensor cov = (outer_ - static_cast<double>(n_) * at::outer(s.mu, s.mu)) /
                   static_cast<double>(n_ - 1);  // [D, D]
  s.sigma = (cov + cov.transpose(0, 1)) * 0.5;
  return s;
}

double frechet_distance(const at::Tensor& mu1_in, const at::Tensor& sigma1_in,
                        const at::Tensor& mu2_in, const at::Tensor& sigma2_in) {
  if (!mu1_in.defined() || !mu2_in.defined() || !sigma1_in.defined() || !sigma2_in.defined())
    throw std::invalid_argument("Fréchet distance: undefined statistics tensor");
  if (mu1_in.dim() != 1 || mu2_in.dim() != 1 || mu1_in.size(0) != mu2_in.size(0))
    throw std::invalid_argument("Fréchet distance: means must both be [D], got " +
                                shape_str(mu1_in) + " and " + shape_str(mu2_in));
  const int64_t d = mu1_in.size(0);
  for (const at::Tensor* s : {&sigma1_in, &sigma2_in})
    if (s->dim() != 2 || s->size(0) != d || s->size(1) != d)
      throw std::invalid_argument("Fréchet distance: covariances must be [" + std::to_string(d) +
                                  ", " + std::to_string(d) + "] to match mu, got " +
                                  shape_str(sigma1_in) + " and " + shape_str(sigma2_in));
  at::Tensor mu1 = to_cpu_f64(mu1_in), mu2 = to_cpu_f64(mu2_in);
  at::Tensor s1 = to_cpu_f64(sigma1_in), s2 = to_cpu_f64(sigma2_in);
  check_finite(mu1, "mu1");
  check_finite(mu2, "mu2");
  check_finite(s1, "sigma1");
  check_finite(s2, "sigma2");
  // Symmetrise: eigh reads one triangle only.
  s1 = (s1 + s1.transpose(0, 1)) * 0.5;
  s2 = (s2 + s2.transpose(0, 1)) * 0.5;

  at::Tensor diff = mu1 - mu2;                      // [D]
  const double mean_term = diff.dot(diff).item<double>();
  at::Tensor r = psd_sqrt(s1);                      // [D, D] S1^(1/2)
  at::Tensor a = at::matmul(at::matmul(r, s2), r);  // [D, D] S1^(1/2) S2 S1^(1/2)
  a = (a + a.transpose(0, 1)) * 0.5;
  const double tr_covmean = clean_psd_eigenvalues(at::linalg_eigvalsh(a)).sqrt().sum().item<double>();
  const double fid = mean_term + s1.trace().item<double>() + s2.trace().item<double>() -
                     2.0 * tr_covmean;
  if (!std::isfinite(fid))
    throw std::invalid_argument("Fréchet distance: the result is not finite");
  return fid;
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  return frechet_distance(a.mu, a.sigma, b.mu, b.sigma);
}

}  // namespace nt
