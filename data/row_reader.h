// RowReader: reads rows (along the first axis) of one HDF5 dataset of one open file, by the
// fastest path its storage allows (docs/data-format.md, "Read paths"):
//   pread   contiguous, unfiltered datasets with a standard little-endian type (IEEE float16 /
//           float32, integers of 1, 2, 4 or 8 bytes): POSIX pread at H5Dget_offset + row offset
//           on a file descriptor the caller opened once, no HDF5 call, so reads run in parallel;
//   H5Dread chunked, compressed or unusual datasets: one H5Dread of a plain hyperslab per run
//           of consecutive rows, through a dataset handle opened with a chunk cache sized for
//           the access.
// Both paths give bit-identical results: float16 is converted to float32 by this code on
// both (exact IEEE half -> float, c10::Half), and integer labels to int64.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/hdf5_check.h"

namespace nt {

class RowReader {
 public:
  RowReader() = default;
  // `dset` is the dataset opened by the caller (the reader keeps its own handle, reopened with
  // a chunk cache when chunked); `fd` a read-only descriptor of the same file, kept open by the
  // caller for the reader's lifetime. `name` ("/latents", "/labels") and `path` are used in
  // messages, `first_global` is the global index of row 0 (for messages). Call under h5_lock().
  void open(hid_t file, const std::string& name, int fd, const std::string& path,
            int64_t first_global, bool integer);

  bool direct() const { return direct_; }  // true: pread path
  int64_t rows() const { return rows_; }
  int64_t row_elems() const { return row_elems_; }

  // Reads the rows `rows` (sorted ascending, unique, in range) into `out`, row after row:
  // float datasets as float32, integer datasets as int64. Errors throw DataError naming the
  // file, the dataset and the first sample index involved.
  void read_float(const std::vector<int64_t>& rows, float* out) const;
  void read_int(const std::vector<int64_t>& rows, int64_t* out) const;

 private:
  enum class Enc { kF16, kF32, kInt, kConvert };  // kConvert: let HDF5 convert the type
  void read_raw(const std::vector<int64_t>& rows, void* out, size_t elem_bytes, hid_t mem_type)
      const;
  void pread_rows(const std::vector<int64_t>& rows, char* out, size_t row_bytes) const;
  void h5_rows(const std::vector<int64_t>& rows, void* out, hid_t mem_type) const;
  std::string where_rows(int64_t first, int64_t last) const;

  std::string path_, name_;
  H5Id dset_;
  H5Id type_;  // the stored type (memory type of raw reads)
  int fd_ = -1;
  bool direct_ = false;
  uint64_t offset_ = 0;     // byte offset of row 0 in the file (direct only)
  int64_t rows_ = 0, row_elems_ = 0, first_global_ = 0;
  size_t elem_bytes_ = 0;  // stored bytes per element
  Enc enc_ = Enc::kConvert;
  bool is_signed_ = true;
};

}  // namespace nt
