// DatasetWriter: writes one HDF5 dataset file (docs/data-format.md) for every tool that makes
// one — tread_data import-mnist, import-npy and encode, tread_sample's .h5 output:
//   DatasetWriter w("x.h5", "latents", {N, C, H, W}, at::kHalf);  // creates "x.h5.tmp"
//   w.write_rows(begin, rows);            // rows [B,C,H,W] at sample `begin`, streamed
//   w.write_labels(labels);               // /labels [N] int64
//   w.set_int_attr("num_classes", 10);    // root attributes: int64, double, string
//   w.commit();                           // closes the file, renames it to "x.h5"
// A writer destroyed without commit() (an exception on the way) deletes its temporary file,
// so a failed tool leaves neither x.h5 nor x.h5.tmp behind.
// The row dataset (/latents, /moments, /samples) is contiguous, uncompressed and allocated at
// creation, which LatentDataset reads with pread (row_reader.h); /labels and the datasets of
// write_dataset() are contiguous too. Stored types: float32 as IEEE F32LE, float16 as IEEE
// binary16 little-endian (as h5py and numpy's '<f2'), int64 as STD I64LE.
// Every HDF5 call is checked (NT_H5_CHECK) and holds h5_lock(); errors are nt::DataError
// naming the temporary file and the dataset or attribute.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nt {

// How a string attribute is stored; LatentDataset and h5py read each kind back as a str.
enum class TextType {
  kVariableUtf8,  // variable-length UTF-8: what h5py writes for a Python str (the default)
  kFixedUtf8,     // fixed-length UTF-8 of exactly the text's bytes (at least 1), NUL-padded
  kFixedAscii,    // fixed-length ASCII of the text and its terminating NUL
};

class DatasetWriter {
 public:
  // Creates `path` + ".tmp" (replacing any such file) with the row dataset /`data_name` of
  // shape `dims` ([N, ...], rank >= 1) and `dtype` at::kFloat or at::kHalf. The folder of
  // `path` must exist.
  DatasetWriter(const std::string& path, const std::string& data_name,
                const std::vector<int64_t>& dims, at::ScalarType dtype);
  // Without commit(): closes the file and deletes the temporary file; never throws.
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  const std::string& path() const { return path_; }
  const std::string& tmp_path() const { return tmp_; }

  // Writes rows [B, ...] (the row dataset's dims after N; any device, converted to its dtype)
  // at samples [begin, begin + B).
  void write_rows(int64_t begin, const at::Tensor& rows);
  // /labels [N] int64; N must be the row dataset's N.
  void write_labels(const std::vector<int64_t>& labels);
  // A one-shot dataset /`name` holding `data` (float32, float16 or int64; any device).
  void write_dataset(const std::string& name, const at::Tensor& data);

  // Root attributes, stored as STD I64LE, IEEE F64LE and strings of `type`.
  void set_int_attr(const std::string& name, int64_t value);
  void set_double_attr(const std::string& name, double value);
  void set_string_attr(const std::string& name, const std::string& value,
                       TextType type = TextType::kVariableUtf8);
  // The attributes every dataset file carries (docs/data-format.md): num_classes, scale_factor,
  // shift_factor, and the strings latent_space and source (of `type`).
  void set_dataset_attributes(int64_t num_classes, double scale_factor, double shift_factor,
                              const std::string& latent_space, const std::string& source,
                              TextType type = TextType::kVariableUtf8);

  // Closes the file (checked) and renames the temporary file to path(). Nothing may be
  // written afterwards.
  void commit();

 private:
  void check_open(const std::string& what) const;
  void discard() noexcept;

  struct Handles;  // the open file and row dataset (HDF5 identifiers)

  std::string path_, tmp_, data_name_;
  std::vector<int64_t> dims_;
  at::ScalarType dtype_;
  std::unique_ptr<Handles> h_;  // null once committed or discarded
  bool committed_ = false;
};

}  // namespace nt
