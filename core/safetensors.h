// safetensors reading and writing (https://github.com/huggingface/safetensors format):
// 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} plus
// optional "__metadata__" (string -> string), then the raw little-endian tensor bytes.
// Files move between this project and PyTorch's safetensors both ways.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nt {

struct SafetensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct NamedTensor {
  std::string name;
  at::Tensor tensor;  // any device; written contiguous from the CPU
};

// Writes tensors in the given order (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL).
// The file is written to `path` directly; callers that need atomicity write into a temporary
// folder first (see core/checkpoint.h).
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;  // CPU tensors, owning their memory
  std::vector<std::string> order;             // names in file order (by data offset)
  std::map<std::string, std::string> metadata;
};

// Reads a whole file; a missing file, a truncated file, a bad header, overlapping or
// out-of-range offsets or an unknown dtype throw SafetensorsError naming the file.
SafetensorsFile load_safetensors(const std::string& path);

// A file's header alone (checked as load_safetensors checks it): where each tensor lies, so that
// parts of tensors can be read without the rest of the file. The file stays open for reading
// until the last copy of the index is gone.
struct SafetensorsIndex {
  struct Info {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t file_offset = 0, nbytes = 0;  // the tensor's bytes in the file
  };
  std::string path;
  std::map<std::string, Info> tensors;
  std::vector<std::string> order;  // names in file order
  std::map<std::string, std::string> metadata;
  std::shared_ptr<const int> fd;  // the open file
};
SafetensorsIndex index_safetensors(const std::string& path);
// Elements [offset, offset + count) of tensor `name`, flattened, as a 1-D tensor of its dtype
// (pread: safe from several threads). Throws SafetensorsError for an unknown name or range.
at::Tensor read_tensor_elements(const SafetensorsIndex& index, const std::string& name, int64_t offset,
                                int64_t count);
// The whole tensor `name` with its shape.
at::Tensor read_tensor(const SafetensorsIndex& index, const std::string& name);

}  // namespace nt
