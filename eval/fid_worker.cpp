// eval/fid_worker: offline FID. `--stats A.npz --ref B.npz` prints the Fréchet distance of two
// statistics files as its last line ("fid: X"). The modes that score run folders and
// checkpoints and make reference statistics (--run-dir, --checkpoint, --make-ref) come later.
#include <boost/program_options.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "eval/frechet.h"
#include "eval/npz.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description opts(
      "fid_worker: Fréchet Inception Distance between FID statistics files\n"
      "usage: fid_worker --stats A.npz --ref B.npz\nOptions");
  opts.add_options()
      ("help,h", "print this help")
      ("stats", po::value<std::string>(), ".npz with `mu` [D] and `sigma` [D, D] to score")
      ("ref", po::value<std::string>(), "reference .npz statistics (ADM/EDM style, mu and sigma)")
      ("run-dir", po::value<std::string>(), "score every unscored checkpoint of a run (not implemented yet)")
      ("watch", po::bool_switch(), "with --run-dir: follow a running job (not implemented yet)")
      ("checkpoint", po::value<std::string>(), "score one checkpoint folder (not implemented yet)")
      ("make-ref", po::bool_switch(), "compute reference statistics (not implemented yet)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "fid_worker: " << e.what() << "\n(run fid_worker --help for the options)\n";
    return 1;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  for (const char* mode : {"run-dir", "checkpoint"})
    if (vm.count(mode)) {
      std::cerr << "fid_worker: --" << mode << " is not implemented yet; only --stats A.npz "
                << "--ref B.npz is\n";
      return 1;
    }
  for (const char* mode : {"make-ref", "watch"})
    if (vm[mode].as<bool>()) {
      std::cerr << "fid_worker: --" << mode << " is not implemented yet; only --stats A.npz "
                << "--ref B.npz is\n";
      return 1;
    }
  if (!vm.count("stats") || !vm.count("ref")) {
    std::cerr << "fid_worker: give both --stats A.npz and --ref B.npz (see --help)\n";
    return 1;
  }
  try {
    const nt::FeatureStats a = nt::read_stats_npz(vm["stats"].as<std::string>());
    const nt::FeatureStats b = nt::read_stats_npz(vm["ref"].as<std::string>());
    if (a.mu.size(0) != b.mu.size(0)) {
      std::cerr << "fid_worker: the statistics have different feature sizes: "
                << vm["stats"].as<std::string>() << " has D = " << a.mu.size(0) << ", "
                << vm["ref"].as<std::string>() << " has D = " << b.mu.size(0) << "\n";
      return 1;
    }
    const double fid = nt::frechet_distance(a, b);
    std::printf("fid: %.9f\n", fid);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fid_worker: " << e.what() << "\n";
    return 1;
  }
}
