// HDF5 latent dataset (docs/data-format.md): one or more files, concatenated in order.
//   /latents [N,C,H,W] float16|float32   or   /moments [N,2C,H,W] (mean || logvar)
//   /labels  [N] integer
//   attributes (on the file root): scale_factor, shift_factor, num_classes, latent_space, source,
//   prescaled
// A sample is x = scale_factor * (v - shift_factor) (with prescaled = 1: x = the stored latent),
// with v the latent or, for moments,
// v = mean + exp(0.5 * clamp(logvar, -30, 20)) * eps, eps drawn afresh on every read from a
// generator seeded by (noise_seed, global sample index).
// Reads are synchronous and may run from several threads at once (the PrefetchLoader does):
// contiguous uncompressed datasets are read with pread, in parallel; chunked or compressed
// ones through HDF5 (data/row_reader.h).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace nt {

struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DatasetInfo {
  int64_t size = 0;  // N, all files together
  int channels = 0, height = 0, width = 0;  // of a sample x (C, not 2C, for moments)
  int num_classes = 0;
  bool moments = false;
  double scale_factor = 1.0, shift_factor = 0.0;
  // The stored latents are the model's x = scale_factor · (v − shift_factor) already (attribute
  // prescaled = 1): read as they are; scale_factor and shift_factor then only say how samples decode.
  bool prescaled = false;
  std::string latent_space;  // "pixels", "sd-vae-ft-ema", ...
  std::string source;
  std::string dtype;         // "float16" | "float32"
  std::string read_path;     // "pread" | "H5Dread" | "mixed" (files differ): how reads go
};

class LatentDataset {
 public:
  // Opens every file and checks shapes and attributes agree; errors (missing file, not
  // HDF5, missing dataset, wrong rank, mismatched files) throw DataError naming the file
  // and dataset.
  explicit LatentDataset(const std::vector<std::string>& paths);
  ~LatentDataset();
  LatentDataset(const LatentDataset&) = delete;
  LatentDataset& operator=(const LatentDataset&) = delete;

  const DatasetInfo& info() const { return info_; }

  // Reads samples by global index (any order, repeats allowed) into
  // x [B,C,H,W] float32 (normalised as above) and y [B] int64.
  void read(const std::vector<int64_t>& indices, uint64_t noise_seed, at::Tensor* x,
            at::Tensor* y) const;
  // The same into tensors the caller allocated (e.g. pinned memory): x [B,C,H,W] float32 and
  // y [B] int64, both contiguous on the CPU. Safe to call from several threads at once.
  void read_into(const std::vector<int64_t>& indices, uint64_t noise_seed, const at::Tensor& x,
                 const at::Tensor& y) const;

 private:
  struct File;
  std::vector<File*> files_;
  std::vector<int64_t> offsets_;  // global index of each file's first sample
  DatasetInfo info_;
};

}  // namespace nt
