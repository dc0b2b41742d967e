// tread_export: consolidate a checkpoint into one safetensors file with the reference names.
//   tread_export --checkpoint runs/x/ckpt/latest --out weights.safetensors [--weights ema|raw]
#include <boost/program_options.hpp>

#include <iostream>

#include "core/log.h"
#include "dist/model_io.h"
#include "launch/cli.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description opts("tread_export: write a checkpoint's weights as one reference-named safetensors file\n\nOptions");
  opts.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value<std::string>(), "checkpoint folder (e.g. runs/NAME/ckpt/latest)")
      ("out", po::value<std::string>(), "output .safetensors file")
      ("weights", po::value<std::string>()->default_value("ema"), "ema | raw");
  try {
    po::variables_map vm;
    if (!nt::parse_command_line(argc, argv, opts, vm)) return 0;  // --help
    if (!vm.count("checkpoint") || !vm.count("out")) throw std::runtime_error("--checkpoint and --out are required (try --help)");
    const std::string kind = vm["weights"].as<std::string>();
    if (kind != "ema" && kind != "raw") throw std::runtime_error("--weights must be 'ema' or 'raw', got '" + kind + "'");
    auto ck = nt::load_checkpoint_model(vm["checkpoint"].as<std::string>(), kind == "ema" ? "ema" : "param");
    nt::export_weights(ck.model, vm["out"].as<std::string>(),
                       {{"step", std::to_string(ck.manifest.at("step").get<int64_t>())},
                        {"weights", kind},
                        {"model", ck.manifest.at("model").dump()}});
    std::cout << "wrote " << vm["out"].as<std::string>() << " (" << kind << " weights of step "
              << ck.manifest.at("step").get<int64_t>() << ")\n";
    return 0;
  } catch (const std::exception& e) {
    nt::log_error(e.what());
    return 1;
  }
}
