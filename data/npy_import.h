// .npy / .npz importer: numpy arrays of latents (or moments) and labels -> a dataset file in
// the format of docs/data-format.md, used by `tread_data import-npy`.
//   .npy: magic "\x93NUMPY", version 1, 2 or 3, a header dict with 'descr' (e.g. '<f2', '<f4',
//         '<f8', '<i8', '<i4', '|u1'; '>' big-endian is byte-swapped), 'fortran_order' (only
//         False) and 'shape'; then the C-order data.
//   .npz: a zip archive of .npy members (np.savez stores them, np.savez_compressed deflates
//         them), read with libzip, streamed without unpacking to disk.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nt {

struct NpyImportOptions {
  std::string latents;      // .npy or .npz: [N,C,H,W] (or [N,2C,H,W] with moments) float
  std::string labels;       // .npy or .npz: [N] integer; empty: the same .npz as latents
  std::string latents_key;  // .npz member; empty: 'latents' if present, else the first array
  std::string labels_key;   // .npz member; empty: 'labels' if present, else the second array
                            // of the latents archive (the first of another archive)
  std::string out;          // the .h5 to write (through out + ".tmp", renamed when complete)
  bool moments = false;     // write /moments (mean || logvar) instead of /latents
  int64_t num_classes = 0;  // 0: the largest label + 1
  std::string latent_space = "unknown";
  double scale_factor = 1.0, shift_factor = 0.0;
  std::string source;       // empty: "imported from <files> by tread_data import-npy"
};

struct NpyImportResult {
  int64_t samples = 0;
  std::vector<int64_t> shape;   // of the data array
  std::string dtype;            // "float16" | "float32" as stored in the .h5
  int64_t num_classes = 0;
  bool num_classes_from_labels = false;  // num_classes was the largest label + 1
};

// Throws nt::DataError naming the file (and member) for unreadable or malformed input:
// bad magic or version, structured or Fortran-order arrays, unsupported dtypes, wrong rank,
// mismatched N, truncated data, labels out of range (naming the first indices).
NpyImportResult import_npy(const NpyImportOptions& options);

// The header of a .npy array, as parsed.
struct NpyHeader {
  char byte_order = '<';  // '<', '>' or '|'
  char kind = 'f';        // 'f' float, 'i' signed, 'u' unsigned integer
  int itemsize = 4;
  std::vector<int64_t> shape;
  int64_t data_offset = 0;  // bytes before the data
};

// A shape as numpy prints it: "(6, 2, 3)", "(24,)".
std::string shape_text(const std::vector<int64_t>& shape);

// Parses a .npy header from its first bytes (the magic line and the dict); `name` is used in
// messages. Throws DataError.
NpyHeader parse_npy_header(const std::string& head, const std::string& name);

}  // namespace nt
