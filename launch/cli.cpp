// Command-line parsing shared by the launch/ executables (see launch/cli.h).
#include "launch/cli.h"

#include <iostream>
#include <stdexcept>

namespace po = boost::program_options;

namespace nt {

bool parse_command_line(int argc, char** argv, const po::options_description& opts, po::variables_map& vm) {
  po::store(po::parse_command_line(argc, argv, opts), vm);
  po::notify(vm);
  if (!vm.count("help")) return true;
  std::cout << opts << "\n";
  return false;
}

std::vector<std::string> config_overrides(const po::variables_map& vm) {
  return vm.count("set") ? vm["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
}

Config config_from_command_line(const po::variables_map& vm) {
  if (!vm.count("config")) throw std::runtime_error("--config is required (try --help)");
  return load_config(vm["config"].as<std::string>(), config_overrides(vm));
}

}  // namespace nt
