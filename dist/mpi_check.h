// NT_MPI_CHECK(call): every MPI call goes through it. On failure it throws std::runtime_error
// "file:line (rank R): MPI call <call> failed: <MPI_Error_string>". MPI only returns errors
// once a communicator's handler is MPI_ERRORS_RETURN, which init_topology sets on the world.
#pragma once
#include <mpi.h>

#include <stdexcept>
#include <string>

#include "core/log.h"

namespace nt {

// MPI's own text for an error code ("MPI_ERR_COUNT: invalid count argument", ...).
inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, len);
}

}  // namespace nt

#define NT_MPI_CHECK(call)                                                                     \
  do {                                                                                         \
    const int nt_mpi_rc_ = (call);                                                             \
    if (nt_mpi_rc_ != MPI_SUCCESS)                                                             \
      throw std::runtime_error(::nt::where(__FILE__, __LINE__,                                 \
                                           std::string("MPI call ") + #call + " failed: " +    \
                                               ::nt::mpi_error_string(nt_mpi_rc_)));           \
  } while (0)
