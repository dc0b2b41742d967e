// Small training runs through tread_run for the launch tests: an 8x8 MNIST dataset and a tiny
// TREAD config (tests/launch/test_distributed.cpp, test_gpu.cpp), running it under mpiexec, and
// comparing the tensors of two checkpoints.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nt::test {

struct RunSetup {
  std::string dir, config;  // a scratch folder; its config c.toml (runs go to dir/runs)
};

// Imports 8x8 MNIST into dir/m8.h5 and writes a 3-block, 36-wide TREAD config on one channel
// (patch 1: the root unit's parameter count is divisible by neither 2 nor 3), batch 12, 10 steps,
// fp32 on the CPU, checkpoints every 5 steps.
RunSetup make_setup();
// Adds an evaluation setup to `s`: a classifier trained for one epoch on the 8x8 data
// (dir/cls.safetensors), its reference statistics of the data (dir/ref.npz) and an [eval] table
// (classifier features, `num_samples` samples from seeds 0-9999, `steps` Heun steps; eval.ranks
// stays 0 until set).
void add_eval(const RunSetup& s, int num_samples, int steps);
// Runs tread_run on `ranks` processes under mpiexec with extra arguments; returns the exit code.
int run(const RunSetup& s, int ranks, const std::string& sets, std::string* out);
// Runs tread_run as one process without a launcher.
int run_single(const RunSetup& s, const std::string& sets, std::string* out);
// A checkpoint's full tensors of one kind ("param", "ema", "exp_avg", "exp_avg_sq") by name.
std::map<std::string, at::Tensor> tensors(const std::string& ckpt, const std::string& kind);
// The key third of attn.qkv.bias has an exactly zero gradient (softmax is invariant to adding
// the same value to every key's logit): its values are accumulated rounding noise, so a relative
// comparison means nothing and it is compared on its own, in absolute terms.
bool is_key_bias(const std::string& name);
// Largest relative difference over the tensors: max|a-b| / max|b| per tensor (for qkv.bias, the
// query and value thirds; the key third's largest absolute difference goes to *key_bias_diff).
double max_rel_diff(const std::string& a, const std::string& b, const std::string& kind,
                    double* key_bias_diff = nullptr);
bool bit_equal(const std::string& a, const std::string& b, const std::string& kind);
// The folder of run `name`'s checkpoint at `step`.
std::string ckpt(const RunSetup& s, const std::string& name, int step);
// The records of run `name`'s metrics.jsonl, in order: its training steps' (eval false) or its
// evaluations' (eval true: the records with a "kind").
std::vector<nlohmann::json> metrics(const RunSetup& s, const std::string& name, bool eval = false);

}  // namespace nt::test
