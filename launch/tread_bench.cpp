// tread_bench: the benchmark tool. Times full training steps (forward, backward, AdamW, EMA) of
// a config's model on random inputs in one process and appends one JSON object per run to a
// .jsonl file (docs/performance.md):
//   tread_bench --config configs/tread_xl.toml [--set train.global_batch=128]... [--steps 20]
//               [--warmup 5] [--jsonl bench/results/DATE-GPU.jsonl] [--label TEXT]
//               [--profile trace.json]
// On CUDA it also measures the bf16 matrix-product rate (8192^3) that MFU is reported against,
// and the caching allocator's peak memory (with NT_CUDA_EXTRAS); on the CPU, the fp32 rate
// (2048^3).
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <sys/resource.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>

#include "core/config.h"
#include "core/host_memory.h"
#include "launch/cli.h"
#include "launch/cuda_inspect.h"
#include "launch/trainer.h"

namespace po = boost::program_options;

namespace {

// Steps the profile holds (scripts/trace-summary --steps; scripts/gpu-check passes it): back to
// back, as the timed steps run, so that only the first starts on an idle GPU (until the twelfth
// session each profiled step began after a synchronisation, and the host's preparation of the
// step showed as 9-10 ms of idle GPU per step).
constexpr int kProfiledSteps = 3;

// Dense matrix-product rate in TFLOP/s: bf16 8192^3 on CUDA, fp32 2048^3 on the CPU; the mean of
// `reps` products after `warmup`, timed around a device synchronisation.
double matmul_tflops(const c10::Device& device, int warmup = 3, int reps = 10) {
  const int64_t n = device.is_cuda() ? 8192 : 2048;
  const auto dtype = device.is_cuda() ? at::kBFloat16 : at::kFloat;
  auto gen = at::detail::createCPUGenerator(7);
  auto a = at::randn({n, n}, gen).to(device, dtype), b = at::randn({n, n}, gen).to(device, dtype);
  auto sync = [&] { if (device.is_cuda()) torch::cuda::synchronize(); };
  for (int i = 0; i < warmup; ++i) at::matmul(a, b);
  sync();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) at::matmul(a, b);
  sync();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * n * reps / dt / 1e12;
}

// The process's peak resident memory so far (getrusage), GB.
double peak_rss_gb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) * 1024 / 1e9;  // ru_maxrss: KiB on Linux
}

std::string today() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  nt::tune_host_allocator();
  po::options_description opts("tread_bench: time training steps of a config's model on random inputs\n\nOptions");
  opts.add_options()
      ("help,h", "show this help")
      ("config", po::value<std::string>(), "TOML config file (see docs/config.md)")
      ("set", po::value<std::vector<std::string>>()->composing(), "override a key: --set train.global_batch=128 (repeatable)")
      ("steps", po::value<int>()->default_value(20), "timed steps")
      ("warmup", po::value<int>()->default_value(5), "untimed warm-up steps")
      ("jsonl", po::value<std::string>(), "append the result as one JSON object to this file")
      ("label", po::value<std::string>()->default_value(""), "free text stored with the result (what changed)")
      ("commit", po::value<std::string>()->default_value(""), "the commit measured, stored with the result")
      ("profile", po::value<std::string>(),
       "after timing, profile 3 more steps, back to back as the timed ones, into this Chrome trace (CUDA extras)");
  try {
    po::variables_map vm;
    if (!nt::parse_command_line(argc, argv, opts, vm)) return 0;  // --help
    const nt::Config cfg = nt::config_from_command_line(vm);
    const int steps = vm["steps"].as<int>(), warmup = vm["warmup"].as<int>();
    if (steps < 1 || warmup < 0) throw std::runtime_error("--steps must be >= 1 and --warmup >= 0");

    std::function<void(const std::function<void(int)>&)> after;
    if (vm.count("profile")) {
      const std::string path = vm["profile"].as<std::string>();
      after = [path](const std::function<void(int)>& run_steps) {
        if (nt::cuda_profile(path, [&] { run_steps(kProfiledSteps); }))
          std::printf("profile: %s\n", path.c_str());
        else
          std::printf("profile: not available in this build (needs a CUDA LibTorch and NT_CUDA_EXTRAS)\n");
      };
    }
    const bool cuda = cfg.train.device == "cuda" || (cfg.train.device == "auto" && torch::cuda::is_available());
    nt::cuda_reset_peak_memory(0);
    const nt::BenchResult r = nt::benchmark(cfg, warmup, steps, after);
    const double peak_gb = cuda ? nt::cuda_peak_memory_gb(0) : -1;
    const double mm = matmul_tflops(c10::Device(cuda ? c10::kCUDA : c10::kCPU));
    const bool autocast = cuda && cfg.train.precision == "bf16";
    nlohmann::json j{{"model", cfg.model.name},
                     {"tread", !cfg.model.routes.empty()},
                     {"batch", r.batch},
                     {"precision", autocast ? "bf16" : "fp32"},
                     {"img_per_s", r.img_per_s},
                     {"tflops", r.tflops},
                     {"mfu", r.tflops / mm},
                     {"matmul_tflops", mm},
                     {"peak_mem_gb", peak_gb >= 0 ? nlohmann::json(peak_gb) : nlohmann::json(nullptr)},
                     {"peak_rss_gb", peak_rss_gb()},
                     {"device", cuda ? nt::cuda_device_name(0) : std::string("cpu")},
                     {"torch", TORCH_VERSION},
                     {"commit", vm["commit"].as<std::string>()},
                     {"date", today()},
                     {"step_s", r.step_s},
                     {"steps", steps},
                     {"params", r.params},
                     {"gflop_per_img", r.train_flop / 1e9},
                     {"threads", at::get_num_threads()},
                     {"label", vm["label"].as<std::string>()},
                     {"param_dtype", autocast ? cfg.dist.param_dtype : std::string("fp32")},
                     {"micro_batch", cfg.train.micro_batch},
                     {"recompute", cfg.train.recompute},
                     {"recompute_blocks", cfg.train.recompute_blocks},
                     {"fused_kernels", cfg.train.fused_kernels},
                     {"fused_mlp", cfg.train.fused_mlp},
                     {"attention", cfg.train.attention},
                     {"product_forms", cfg.train.product_forms},
                     {"weight_grads_in_place", cfg.train.weight_grads_in_place},
                     {"fp32_attention", cfg.train.fp32_attention},
                     {"blas", cfg.train.blas},
                     {"loss_first_last", {r.first_loss, r.last_loss}}};
    if (j["device"] == "") j["device"] = r.device;
    std::printf("matmul TFLOP/s: %.1f, MFU %.1f%%, peak memory %s GB, peak resident %.2f GB\n", mm,
                100 * r.tflops / mm, peak_gb >= 0 ? std::to_string(peak_gb).c_str() : "n/a", peak_rss_gb());
    std::printf("%s\n", j.dump().c_str());
    if (vm.count("jsonl")) {
      std::ofstream out(vm["jsonl"].as<std::string>(), std::ios::app);
      out << j.dump() << "\n";
      if (!out) throw std::runtime_error("cannot append to '" + vm["jsonl"].as<std::string>() + "'");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tread_bench: error: " << e.what() << "\n";
    return 1;
  }
}
