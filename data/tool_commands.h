// Commands that upper layers add to the tread_data tool without data/ including them: e.g.
// eval/encode_command.cpp (the VAE encoder lives in models/) registers `encode`. A file that
// registers a command is compiled into the tread_data executable itself (see
// eval/CMakeLists.txt), so the linker keeps its registration.
#pragma once

#include <string>
#include <vector>

namespace nt {

struct ToolCommand {
  std::string name;     // "encode"
  std::string summary;  // one line for `tread_data --help`
  int (*run)(const std::vector<std::string>& args);  // the arguments after the name; exit code
};

// Registers a command at static initialisation; returns true (for `static bool x = ...`).
bool register_tool_command(const ToolCommand& command);
// The registered commands, sorted by name.
std::vector<ToolCommand> tool_commands();

}  // namespace nt
