// Attention in fp32 products, the softmax recomputed in backward (see models/fp32_attention.h).
#include "models/fp32_attention.h"

#include <ATen/Context.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>

namespace nt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<Fp32AttentionKind> chosen{Fp32AttentionKind::products};

// TF32 off in cuBLAS for one scope.
class NoTF32 {
 public:
  NoTF32() : prev_(at::globalContext().allowTF32CuBLAS()) { at::globalContext().setAllowTF32CuBLAS(false); }
  ~NoTF32() { at::globalContext().setAllowTF32CuBLAS(prev_); }
  NoTF32(const NoTF32&) = delete;
  NoTF32& operator=(const NoTF32&) = delete;

 private:
  bool prev_;
};

// Samples a chunk takes: its scores [n * H, T, Tk] within `chunk_scores` elements (at least one).
int64_t chunk_samples(const at::Tensor& q, const at::Tensor& k, int64_t chunk_scores) {
  const int64_t per_sample = q.size(1) * q.size(2) * k.size(2);
  return std::max<int64_t>(1, chunk_scores / std::max<int64_t>(per_sample, 1));
}

// Samples [s, s + n) of t [N, H, T, hd] as [n * H, T, hd] (a copy where t's layout needs one).
at::Tensor rows_of(const at::Tensor& t, int64_t s, int64_t n) {
  return t.narrow(0, s, n).reshape({n * t.size(1), t.size(2), t.size(3)});
}

// P = softmax(qs k^T) for one chunk, qs = q * scale (rows_of's copy of q, scaled: a pass over
// q rather than over the scores): [B, T, Tk].
at::Tensor probabilities(const at::Tensor& qs, const at::Tensor& kc) {
  return at::_softmax(at::bmm(qs, kc.transpose(1, 2)), -1, false);
}

// [N, H, T, hd] as a transposed view of a fresh [N, T, H, hd] tensor.
at::Tensor token_major_like(const at::Tensor& t) {
  return at::empty({t.size(0), t.size(2), t.size(1), t.size(3)}, t.options()).transpose(1, 2);
}

// o = softmax(q k^T * scale) v, chunk by chunk: [N, H, T, hd].
at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t step) {
  const NoTF32 no_tf32;
  const int64_t N = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor o = token_major_like(q);  // [N, H, T, hd]
  for (int64_t s = 0; s < N; s += step) {
    const int64_t n = std::min(step, N - s);
    const at::Tensor p = probabilities(rows_of(q, s, n).mul(scale), rows_of(k, s, n));  // [n H, T, Tk]
    o.narrow(0, s, n).copy_(at::bmm(p, rows_of(v, s, n)).view({n, H, T, hd}));
  }
  return o;
}

struct Fp32Attention : torch::autograd::Function<Fp32Attention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t step) {
    ctx->save_for_backward({q, k, v});
    ctx->saved_data["step"] = step;
    return attention_forward(q, k, v, step);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2];
    const at::Tensor& go = grads[0];  // [N, H, T, hd]
    const NoTF32 no_tf32;
    const int64_t N = q.size(0), H = q.size(1), T = q.size(2), Tk = k.size(2), hd = q.size(3);
    const int64_t step = ctx->saved_data["step"].toInt();
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    at::Tensor dq = token_major_like(q), dk = token_major_like(k), dv = token_major_like(v);
    for (int64_t s = 0; s < N; s += step) {
      const int64_t n = std::min(step, N - s);
      const at::Tensor qs = rows_of(q, s, n).mul(scale), kc = rows_of(k, s, n), vc = rows_of(v, s, n);  // [n H, T or Tk, hd]
      const at::Tensor p = probabilities(qs, kc);  // [n H, T, Tk]
      const at::Tensor goc = rows_of(go, s, n);    // [n H, T, hd]
      dv.narrow(0, s, n).copy_(at::bmm(p.transpose(1, 2), goc).view({n, H, Tk, hd}));
      const at::Tensor ds = at::_softmax_backward_data(at::bmm(goc, vc.transpose(1, 2)), p, -1, at::kFloat);
      dq.narrow(0, s, n).copy_(at::bmm(ds, kc).mul_(scale).view({n, H, T, hd}));
      dk.narrow(0, s, n).copy_(at::bmm(ds.transpose(1, 2), qs).view({n, H, Tk, hd}));
    }
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

at::Tensor fp32_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t chunk_scores) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.scalar_type() == at::kFloat &&
                  k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "fp32_attention: q, k, v must be fp32 [N, H, T, hd]");
  if (!torch::autograd::GradMode::is_enabled() || !(q.requires_grad() || k.requires_grad() || v.requires_grad())) {
    torch::NoGradGuard no_grad;  // the forward alone, nothing kept
    return attention_forward(q, k, v, chunk_samples(q, k, chunk_scores));
  }
  return Fp32Attention::apply(q, k, v, chunk_samples(q, k, chunk_scores));
}

void set_fp32_attention(Fp32AttentionKind kind) { chosen = kind; }
Fp32AttentionKind fp32_attention_kind() { return chosen; }

}  // namespace nt
