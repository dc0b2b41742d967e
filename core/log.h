// Logging: rank-aware messages to stderr/stdout. Rank 0 prints progress; every rank may print
// errors, which always name the rank.
#pragma once
#include <string>

namespace nt {

void set_log_rank(int rank);  // set once by dist/topology; 0 for a single process
int log_rank();

// "[rank R] message" on stderr, for errors and warnings from any rank.
void log_error(const std::string& msg);
void log_warn(const std::string& msg);
// Progress and info lines on stdout, printed by rank 0 only (timestamped).
void log_info(const std::string& msg);
// The same from whichever rank calls it, naming the rank: "[time] [rank R] message" (e.g. the
// first evaluator's progress).
void log_info_here(const std::string& msg);

// "file:line (rank R): what" -- used by the check macros of MPI, NCCL, CUDA and HDF5 calls.
std::string where(const char* file, int line, const std::string& what);

}  // namespace nt
