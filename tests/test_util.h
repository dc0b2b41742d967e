// Helpers shared by the tests: scratch folders and running the project's executables.
#pragma once
#include <string>

namespace nt::test {

// A fresh, empty folder under the build tree, unique to the calling test.
std::string scratch_dir();
// Runs a shell command; returns its exit code and puts stdout+stderr into *output.
int run_command(const std::string& cmd, std::string* output = nullptr);
// Path of a project executable built in the build tree, e.g. exe("launch/tread_run").
std::string exe(const std::string& relative);

}  // namespace nt::test
