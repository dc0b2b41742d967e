// Registry of tread_data commands added by upper layers (see data/tool_commands.h).
#include "data/tool_commands.h"

#include <algorithm>
#include <stdexcept>

namespace nt {
namespace {
std::vector<ToolCommand>& registry() {  // constructed on first use: safe during static init
  static std::vector<ToolCommand> commands;
  return commands;
}
}  // namespace

bool register_tool_command(const ToolCommand& command) {
  for (const auto& c : registry())
    if (c.name == command.name) throw std::logic_error("tread_data command '" + command.name + "' registered twice");
  registry().push_back(command);
  return true;
}

std::vector<ToolCommand> tool_commands() {
  auto out = registry();
  std::sort(out.begin(), out.end(), [](const ToolCommand& a, const ToolCommand& b) { return a.name < b.name; });
  return out;
}

}  // namespace nt
