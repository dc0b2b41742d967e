// The faster of two forms of a linear layer's backward products (see models/product_forms.h).
#include "models/product_forms.h"

#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "core/log.h"

#ifdef NT_HAVE_CUDA_KERNELS
#include "models/event_timer_cuda.h"
#include "models/fused_kernels_cuda.h"
#endif

namespace nt {
namespace {

std::optional<ProductForm> forced;  // force_product_form_for_tests
FormPolicy policy = FormPolicy::tall;  // set_product_form_policy (train.product_forms's default)

// Which product (0: weight gradient, 1: input gradient), of which sizes (M, O, H), dtype and device.
using FormKey = std::tuple<int, int64_t, int64_t, int64_t, int, int>;

FormKey key_of(int kind, int64_t M, int64_t O, int64_t H, const at::Tensor& t) {
  return FormKey{kind, M, O, H, static_cast<int>(t.scalar_type()), t.is_cuda() ? t.get_device() : -1};
}

// t [R, C] -> t^T [C, R], contiguous: on CUDA through the project's transpose kernel where built.
at::Tensor transposed_copy(const at::Tensor& t) {
#ifdef NT_HAVE_CUDA_KERNELS
  const auto dtype = t.scalar_type();
  if (t.is_cuda() && t.dim() == 2 && t.is_contiguous() && (dtype == at::kBFloat16 || dtype == at::kFloat) &&
      t.numel() > 0 && t.size(0) <= cuda::transpose_max_rows()) {
    auto out = at::empty({t.size(1), t.size(0)}, t.options());
    cuda::transpose(t.data_ptr(), out.data_ptr(), t.size(0), t.size(1),
                    dtype == at::kBFloat16 ? cuda::Dtype::bf16 : cuda::Dtype::f32, t.get_device(), nullptr);
    return out;
  }
#endif
  return t.t().contiguous();
}

at::Tensor run_form(ProductForm form, const std::function<at::Tensor()>& direct,
                    const std::function<at::Tensor()>& transposed) {
  return form == ProductForm::transposed ? transposed() : direct();
}

#ifdef NT_HAVE_CUDA_KERNELS
constexpr int kUntimedCalls = 2;  // a key's first calls: the direct form, untimed (first-use costs)
constexpr int kSamples = 3;       // timed calls of each form before the choice

std::string fmt_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f ms", ms);
  return buf;
}

// One key's trials: the forms alternate call by call, each call between two events on the
// stream, until kSamples of each have run; the faster mean is kept from then on.
struct FormTrials {
  struct Trial {
    ProductForm form;
    std::unique_ptr<cuda::EventTimer> timer;
  };
  std::optional<ProductForm> chosen;
  int64_t calls = 0;
  std::vector<Trial> pending;  // timed, not yet read
  double total_ms[2] = {0, 0};
  int done[2] = {0, 0};

  // Reads the trials that have run; chooses once both forms have kSamples.
  void collect(const FormKey& key, const char* what) {
    for (auto it = pending.begin(); it != pending.end();) {
      const auto ms = it->timer->ms();
      if (!ms) {
        ++it;
        continue;
      }
      const int f = it->form == ProductForm::transposed ? 1 : 0;
      total_ms[f] += *ms;
      ++done[f];
      it = pending.erase(it);
    }
    if (done[0] < kSamples || done[1] < kSamples) return;
    const double direct_ms = total_ms[0] / done[0], transposed_ms = total_ms[1] / done[1];
    chosen = transposed_ms < direct_ms ? ProductForm::transposed : ProductForm::direct;
    pending.clear();
    const auto [kind, M, O, H, dtype, device] = key;
    log_info(std::string(what) + " [M " + std::to_string(M) + ", O " + std::to_string(O) + ", H " + std::to_string(H) +
             ", " + std::string(c10::toString(static_cast<at::ScalarType>(dtype))) + "] on cuda:" +
             std::to_string(device) + " in the step: direct " + fmt_ms(direct_ms) + ", transposed " +
             fmt_ms(transposed_ms) + " (means of " + std::to_string(done[0]) + " and " + std::to_string(done[1]) +
             " calls); takes " + (*chosen == ProductForm::transposed ? "transposed" : "direct"));
  }
};
#endif

// The product for `key` in its form: forced; direct off CUDA; on CUDA as the policy says
// (`tall`: the form for FormPolicy::tall), where `timed` falls back to direct in a build without
// the own CUDA kernels (no event timer).
at::Tensor product(const FormKey& key, const at::Tensor& on, const char* what, const std::function<at::Tensor()>& direct,
                   const std::function<at::Tensor()>& transposed, ProductForm tall) {
  if (forced) return run_form(*forced, direct, transposed);
  if (!on.is_cuda() || policy == FormPolicy::direct) return direct();
  if (policy == FormPolicy::tall) return run_form(tall, direct, transposed);
#ifdef NT_HAVE_CUDA_KERNELS
  {
    static std::mutex mutex;  // backward may run on one thread per device
    static std::map<FormKey, FormTrials> trials;
    std::lock_guard<std::mutex> lock(mutex);
    FormTrials& t = trials[key];
    if (!t.chosen) t.collect(key, what);
    if (t.chosen) return run_form(*t.chosen, direct, transposed);
    const int64_t n = t.calls++;
    if (n < kUntimedCalls) return direct();
    const ProductForm form = (n - kUntimedCalls) % 2 == 0 ? ProductForm::direct : ProductForm::transposed;
    auto timer = std::make_unique<cuda::EventTimer>(on.get_device(), nullptr);
    at::Tensor out = run_form(form, direct, transposed);
    timer->stop();
    t.pending.push_back({form, std::move(timer)});
    return out;
  }
#endif
  (void)key;
  (void)on;
  (void)what;
  return direct();
}

}  // namespace

at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2) {
  const int64_t M = dy2.size(0), O = dy2.size(1), H = a2.size(1);
  const auto direct = [&] { return dy2.t().mm(a2); };                          // [O, M] · [M, H]
  const auto transposed = [&] { return transposed_copy(a2.t().mm(dy2)); };  // ([H, M] · [M, O])^T
  // Tall: the problem with more rows than columns ([H, O] where O < H), for outputs of at least
  // 256 rows (the final layer's 16 took 0.03 ms direct and 0.11 transposed in a DiT-XL/2 step).
  const ProductForm tall = O < H && O >= 256 ? ProductForm::transposed : ProductForm::direct;
  return product(key_of(0, M, O, H, dy2), dy2, "weight gradient", direct, transposed, tall);  // [O, H]
}

at::Tensor input_gradient(const at::Tensor& dy2, const at::Tensor& w) {
  const int64_t M = dy2.size(0), O = dy2.size(1), H = w.size(1);
  const auto direct = [&] { return dy2.mm(w); };                             // [M, O] · [O, H]
  const auto transposed = [&] { return dy2.mm(transposed_copy(w).t()); };  // [M, O] · ([H, O])^T
  return product(key_of(1, M, O, H, dy2), dy2, "input gradient", direct, transposed, ProductForm::direct);  // [M, H]
}

void set_product_form_policy(FormPolicy p) { policy = p; }
void force_product_form_for_tests(std::optional<ProductForm> form) { forced = form; }
std::optional<ProductForm> forced_product_form() { return forced; }

}  // namespace nt
