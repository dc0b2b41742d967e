// Forces a linear layer's weight-gradient form (models/product_forms.h) for one scope; the
// models tests that run the linear node on the CPU (test_product_forms,
// test_weight_grads_in_place).
#pragma once
#include <optional>

#include "models/product_forms.h"

namespace nt::test {

struct ForcedProductForm {
  explicit ForcedProductForm(std::optional<ProductForm> f) { force_product_form_for_tests(f); }
  ~ForcedProductForm() { force_product_form_for_tests(std::nullopt); }
  ForcedProductForm(const ForcedProductForm&) = delete;
  ForcedProductForm& operator=(const ForcedProductForm&) = delete;
};

}  // namespace nt::test
