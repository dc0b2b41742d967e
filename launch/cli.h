// Command-line parsing shared by the launch/ executables (Boost.Program_options stays in the
// cli and the mains).
#pragma once
#include <boost/program_options.hpp>

#include <string>
#include <vector>

#include "core/config.h"

namespace nt {

// Parses argv into `vm` (errors throw po::error). On --help prints `opts` and returns false:
// the caller exits 0.
bool parse_command_line(int argc, char** argv, const boost::program_options::options_description& opts,
                        boost::program_options::variables_map& vm);
// The --set overrides ("a.b=v", repeatable; none when absent).
std::vector<std::string> config_overrides(const boost::program_options::variables_map& vm);
// The config of --config F with its --set overrides; without --config an error saying so.
Config config_from_command_line(const boost::program_options::variables_map& vm);

}  // namespace nt
