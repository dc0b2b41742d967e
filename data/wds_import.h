// WebDataset importer: the training data of the Python reference (CompVis/tread train.py reads
// them with webdataset), tar shards whose samples are the members <key>.latent.npy (one latent
// [C,H,W], float16/32/64, any .npy version) and <key>.cls (its class as decimal text), -> a
// dataset file in the format of docs/data-format.md, used by `tread_data import-wds`.
//   - A sample's key is its member path up to the first '.' of the file name (webdataset's rule);
//     other members of a sample (e.g. <key>.json) are ignored and counted.
//   - Samples keep the order of the shards (as given; a folder: its .tar files whose names
//     contain `match`, sorted by name) and of the members in each shard. The reference shuffles
//     while reading; tread_run's global sampler shuffles per epoch.
//   - Shards are plain (uncompressed) POSIX tar files: ustar, GNU long names and pax headers (what
//     Python's tarfile writes) are read.
//   - `prescaled`: the values are already scale_factor · (z − shift_factor), what training takes
//     (the reference trains on latents multiplied by the VAE's scaling factor: its sampler decodes
//     x / 0.18215): they are stored as they are with the attribute prescaled = 1, so that training
//     reads the shards' values bit for bit, and decoding divides samples by scale_factor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nt {

struct WdsImportOptions {
  std::vector<std::string> shards;  // .tar files and folders of them, in order
  std::string match;                // a folder's shards: names containing it (the reference's mode)
  std::string out;                  // the .h5 to write (through out + ".tmp", renamed when complete)
  int64_t num_classes = 0;          // 0: the largest label + 1
  std::string latent_space = "unknown";
  double scale_factor = 1.0, shift_factor = 0.0;
  bool prescaled = false;
  std::string source;               // empty: "imported from N WebDataset shards (...) by tread_data import-wds"
};

struct WdsImportResult {
  int64_t samples = 0;
  int64_t shards = 0;
  std::vector<int64_t> shape;  // [N, C, H, W]
  std::string dtype;           // "float16" | "float32" as stored in the .h5
  int64_t num_classes = 0;
  bool num_classes_from_labels = false;
  int64_t ignored_members = 0;  // members that are neither .latent.npy nor .cls
};

// Throws nt::DataError naming the shard and the sample key for unreadable or malformed input:
// a damaged or compressed tar, a sample without its latent or its class, latents of different
// shapes or dtypes, a class that is not an integer or lies outside [0, num_classes).
WdsImportResult import_wds(const WdsImportOptions& options);

}  // namespace nt
