// Small training runs for the launch tests (see run_fixture.h).
#include "launch/run_fixture.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "core/checkpoint.h"
#include "dist/sharded_checkpoint.h"
#include "test_util.h"

namespace nt::test {

static const char* kMpiEnv = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 ";

RunSetup make_setup() {
  RunSetup s;
  s.dir = scratch_dir();
  const std::string data = s.dir + "/m8.h5";
  std::string out;
  const int rc = run_command(exe("data/tread_data") + " import-mnist --images " + std::string(NT_SOURCE_DIR) +
                                 "/data/mnist10k/images-idx3-ubyte.gz --labels " + NT_SOURCE_DIR +
                                 "/data/mnist10k/labels-idx1-ubyte.gz --out " + data + " --size 8",
                             &out);
  EXPECT_EQ(rc, 0) << out;
  s.config = s.dir + "/c.toml";
  std::ofstream f(s.config);
  // patch_size 1 on one channel with width 36: the root unit holds an odd number of
  // parameters, not divisible by 3 either, so the shards are padded.
  f << "[run]\nname = \"w\"\ndir = \"" << s.dir << "/runs\"\nseed = 3\n"
    << "[model]\nname = \"DiT-S/2\"\ninput_size = 8\nin_channels = 1\nnum_classes = 10\n"
    << "depth = 3\nhidden_size = 36\nnum_heads = 2\npatch_size = 1\n"
    << "[[model.routes]]\nselection_ratio = 0.5\nstart_layer = 1\nend_layer = 1\n"
    << "[diffusion]\nclass_drop_prob = 0.25\n"
    << "[data]\npaths = [\"" << data << "\"]\n"
    << "[train]\nglobal_batch = 12\nsteps = 10\nprecision = \"fp32\"\ngrad_clip = 0.5\nlog_every = 1\n"
    << "device = \"cpu\"\nthreads = 1\n"
    << "[optim]\nlr = 2e-3\nwarmup_steps = 2\nweight_decay = 0.01\n"
    << "[ema]\ndecay = 0.9\n"
    << "[checkpoint]\nevery = 5\nkeep_last = 10\nkeep_every = 0\n";
  return s;
}

void add_eval(const RunSetup& s, int num_samples, int steps) {
  std::string out;
  const std::string data = s.dir + "/m8.h5", cls = s.dir + "/cls.safetensors", ref = s.dir + "/ref.npz";
  ASSERT_EQ(run_command(exe("data/tread_data") + " train-classifier --epochs 1 --data " + data + " --out " + cls, &out), 0)
      << out;
  ASSERT_EQ(run_command(exe("eval/fid_worker") + " --make-ref --data " + data + " --out " + ref +
                            " --extractor classifier --extractor-weights " + cls,
                        &out),
            0)
      << out;
  std::ofstream f(s.config, std::ios::app);
  f << "[eval]\nnum_samples = " << num_samples << "\nseeds = \"0-9999\"\nsteps = " << steps
    << "\nref_stats = \"" << ref << "\"\nextractor = \"classifier\"\nextractor_weights = \"" << cls << "\"\n";
}

int run(const RunSetup& s, int ranks, const std::string& sets, std::string* out) {
  return run_command(std::string(kMpiEnv) + "mpiexec --oversubscribe -n " + std::to_string(ranks) + " " +
                         exe("launch/tread_run") + " --config " + s.config + " " + sets,
                     out);
}

int run_single(const RunSetup& s, const std::string& sets, std::string* out) {
  return run_command(exe("launch/tread_run") + " --config " + s.config + " " + sets, out);
}

std::map<std::string, at::Tensor> tensors(const std::string& ckpt, const std::string& kind) {
  auto m = nt::read_verified_manifest(ckpt);
  return nt::load_full_tensors(ckpt, m, kind);
}

bool is_key_bias(const std::string& name) {
  return name.size() > 14 && name.compare(name.size() - 14, 14, ".attn.qkv.bias") == 0;
}

double max_rel_diff(const std::string& a, const std::string& b, const std::string& kind, double* key_bias_diff) {
  auto ta = tensors(a, kind), tb = tensors(b, kind);
  EXPECT_EQ(ta.size(), tb.size());
  double worst = 0, worst_key = 0;
  auto rel = [](const at::Tensor& x, const at::Tensor& y) {
    return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-12);
  };
  for (const auto& [name, t] : tb) {
    const at::Tensor& u = ta.at(name);
    if (is_key_bias(name)) {
      const int64_t d = t.size(0) / 3;
      worst = std::max(worst, rel(at::cat({u.narrow(0, 0, d), u.narrow(0, 2 * d, d)}),
                                  at::cat({t.narrow(0, 0, d), t.narrow(0, 2 * d, d)})));
      worst_key = std::max(worst_key, (u.narrow(0, d, d) - t.narrow(0, d, d)).abs().max().item<double>());
    } else {
      worst = std::max(worst, rel(u, t));
    }
  }
  if (key_bias_diff) *key_bias_diff = worst_key;
  return worst;
}

bool bit_equal(const std::string& a, const std::string& b, const std::string& kind) {
  auto ta = tensors(a, kind), tb = tensors(b, kind);
  for (const auto& [name, t] : tb)
    if (!torch::equal(ta.at(name), t)) return false;
  return ta.size() == tb.size();
}

std::string ckpt(const RunSetup& s, const std::string& name, int step) {
  return s.dir + "/runs/" + name + "/ckpt/" + nt::checkpoint_name(step);
}

std::vector<nlohmann::json> metrics(const RunSetup& s, const std::string& name, bool eval) {
  std::vector<nlohmann::json> v;
  std::ifstream in(s.dir + "/runs/" + name + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("kind") == eval) v.push_back(j);
  }
  return v;
}

}  // namespace nt::test
