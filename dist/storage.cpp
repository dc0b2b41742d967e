// Releasing and restoring a tensor's storage memory (see dist/storage.h).
#include "dist/storage.h"

#include <c10/core/StorageImpl.h>
#include <c10/util/Exception.h>

namespace nt {

void release_storage(const at::Tensor& t) {
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  s->set_data_ptr(at::DataPtr(nullptr, t.device()));
  s->set_nbytes(0);
}

void restore_storage(const at::Tensor& t) {
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  const size_t nbytes = static_cast<size_t>(t.storage_offset() + t.numel()) * t.element_size();
  if (s->nbytes() >= nbytes) return;
  TORCH_CHECK(s->allocator() != nullptr, "restore_storage: the storage has no allocator");
  s->set_data_ptr(s->allocator()->allocate(nbytes));
  s->set_nbytes(nbytes);
}

bool storage_released(const at::Tensor& t) { return t.storage().nbytes() == 0; }

}  // namespace nt
