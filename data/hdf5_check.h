// HDF5 error checking and handle ownership for the data layer.
//   NT_H5_CHECK(call, what): runs an HDF5 call (hid_t / herr_t / htri_t); a negative result
//     throws nt::DataError("file:line (rank R): <what>: HDF5 call <call> failed").
//   H5Id: owns one HDF5 identifier and closes it with the matching H5?close on every path.
//   h5_read_access(): the file-access property list of read-only opens (no file locks).
//   h5_silence(): turns off HDF5's own error-stack printing for the calling thread (the
//     library keeps that setting per thread in thread-safe builds), so users see our message.
//   h5_lock(): serialises HDF5 calls across threads when the library is not thread-safe (a
//     thread-safe build locks internally; then the returned lock holds nothing).
#pragma once
#include <hdf5.h>

#include <mutex>
#include <string>
#include <utility>

#include "core/log.h"
#include "data/latent_dataset.h"  // DataError

namespace nt {

inline void h5_silence() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// Holds the process-wide HDF5 mutex for the caller's scope if the library was built without
// thread safety; otherwise returns an empty lock (HDF5 serialises its calls itself).
inline std::unique_lock<std::mutex> h5_lock() {
  static std::mutex mutex;
  static const bool threadsafe = [] {
    hbool_t safe = 0;
    return H5is_library_threadsafe(&safe) >= 0 && safe;
  }();
  return threadsafe ? std::unique_lock<std::mutex>() : std::unique_lock<std::mutex>(mutex);
}

template <typename T>
T h5_check(T result, const char* call, const std::string& what, const char* file, int line) {
  if (result < 0)
    throw DataError(where(file, line, what + ": HDF5 call " + call + " failed"));
  return result;
}

#define NT_H5_CHECK(call, what) ::nt::h5_check((call), #call, (what), __FILE__, __LINE__)

// H5Pset_file_locking exists from HDF5 1.10.7 and 1.12.1 on.
#if (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7) || H5_VERSION_GE(1, 12, 1)
#define NT_H5_HAS_FILE_LOCKING 1
#else
#define NT_H5_HAS_FILE_LOCKING 0
#endif

// One owned HDF5 identifier (file, group, dataset, dataspace, datatype, attribute, property
// list); closed by the close function that fits its kind.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id() { reset(); }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id(H5Id&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  H5Id& operator=(H5Id&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Gives up ownership, e.g. to close by hand and check the result:
  //   NT_H5_CHECK(H5Fclose(file.release()), "closing " + path);
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }

  void reset() {
    if (id_ < 0) return;
    switch (H5Iget_type(id_)) {
      case H5I_FILE: H5Fclose(id_); break;
      case H5I_GROUP: H5Gclose(id_); break;
      case H5I_DATASET: H5Dclose(id_); break;
      case H5I_DATASPACE: H5Sclose(id_); break;
      case H5I_DATATYPE: H5Tclose(id_); break;
      case H5I_ATTR: H5Aclose(id_); break;
      case H5I_GENPROP_LST: H5Pclose(id_); break;
      default: break;  // predefined or already invalid: nothing to close
    }
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// A file-access property list for read-only opens: without file locks, which fail on many
// cluster file systems (Lustre, NFS) and protect nothing when nobody writes.
inline H5Id h5_read_access(const std::string& what) {
  H5Id fapl(NT_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), what));
#if NT_H5_HAS_FILE_LOCKING
  NT_H5_CHECK(H5Pset_file_locking(fapl.get(), false, true), what);
#endif
  return fapl;
}

}  // namespace nt
