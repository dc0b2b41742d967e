// The faster of two forms of a linear layer's backward products (see models/product_forms.h).
#include "models/product_forms.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "core/log.h"

namespace nt {
namespace {

std::optional<ProductForm> forced;  // force_product_form_for_tests
bool timed = true;                  // time_product_forms

constexpr int kTimedCalls = 3;  // per form, after one untimed call

// Which product, of which sizes (M, O, H), dtype and device.
using FormKey = std::tuple<int, int64_t, int64_t, int64_t, int, int>;

// The mean time in ms of kTimedCalls calls of `work` after one untimed, between device
// synchronisations.
double time_ms(const std::function<at::Tensor()>& work) {
  work();
  torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kTimedCalls; ++i) work();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / kTimedCalls;
}

std::string fmt_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f ms", ms);
  return buf;
}

// The form for `key`: forced, direct off CUDA, else the faster measured on the first call.
ProductForm form_for(const FormKey& key, const at::Tensor& on, const char* what,
                     const std::function<at::Tensor()>& direct, const std::function<at::Tensor()>& transposed) {
  if (forced) return *forced;
  if (!on.is_cuda() || !timed) return ProductForm::direct;
  static std::mutex mutex;  // backward may run on one thread per device
  static std::map<FormKey, ProductForm> chosen;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = chosen.find(key);
  if (it != chosen.end()) return it->second;
  const double direct_ms = time_ms(direct), transposed_ms = time_ms(transposed);
  const ProductForm form = transposed_ms < direct_ms ? ProductForm::transposed : ProductForm::direct;
  const auto [kind, M, O, H, dtype, device] = key;
  log_info(std::string(what) + " [M " + std::to_string(M) + ", O " + std::to_string(O) + ", H " + std::to_string(H) +
           "] on cuda:" + std::to_string(device) + ": direct " + fmt_ms(direct_ms) + ", transposed " +
           fmt_ms(transposed_ms) + "; takes " + (form == ProductForm::transposed ? "transposed" : "direct"));
  return chosen.emplace(key, form).first->second;
}

FormKey key_of(int kind, int64_t M, int64_t O, int64_t H, const at::Tensor& t) {
  return FormKey{kind, M, O, H, static_cast<int>(t.scalar_type()), t.is_cuda() ? t.get_device() : -1};
}

}  // namespace

at::Tensor weight_gradient(const at::Tensor& dy2, const at::Tensor& a2) {
  const int64_t M = dy2.size(0), O = dy2.size(1), H = a2.size(1);
  const auto direct = [&] { return dy2.t().mm(a2); };                         // [O, M] · [M, H]
  const auto transposed = [&] { return a2.t().mm(dy2).t().contiguous(); };  // ([H, M] · [M, O])^T
  const ProductForm form = form_for(key_of(0, M, O, H, dy2), dy2, "weight gradient", direct, transposed);
  return form == ProductForm::transposed ? transposed() : direct();  // [O, H]
}

at::Tensor input_gradient(const at::Tensor& dy2, const at::Tensor& w) {
  const int64_t M = dy2.size(0), O = dy2.size(1), H = w.size(1);
  const auto direct = [&] { return dy2.mm(w); };                         // [M, O] · [O, H]
  const auto transposed = [&] { return dy2.mm(w.t().contiguous().t()); };  // [M, O] · ([H, O])^T
  const ProductForm form = form_for(key_of(1, M, O, H, dy2), dy2, "input gradient", direct, transposed);
  return form == ProductForm::transposed ? transposed() : direct();  // [M, H]
}

void time_product_forms(bool on) { timed = on; }
void force_product_form_for_tests(std::optional<ProductForm> form) { forced = form; }
std::optional<ProductForm> forced_product_form() { return forced; }

}  // namespace nt
