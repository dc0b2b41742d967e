// Tests of the TOML config layer (core/config.h): defaults, a full file, every kind of error
// with the exact key and suggestion, --set overrides, the to_toml round trip, the shipped
// configs/*.toml files and parse_int_list.
#include "core/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace nt {
namespace {

// The message of the ConfigError that parse_config throws, or a test failure if none.
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, "configs/x.toml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for:\n" << text << "\nwith " << overrides.size() << " overrides";
  return "";
}

std::string error_of_set(const std::vector<std::string>& overrides) {
  return error_of("", overrides);
}

void expect_same_route(const RouteConfig& a, const RouteConfig& b, size_t i) {
  SCOPED_TRACE("model.routes[" + std::to_string(i) + "]");
  EXPECT_EQ(a.selection_ratio, b.selection_ratio);
  EXPECT_EQ(a.start_layer, b.start_layer);
  EXPECT_EQ(a.end_layer, b.end_layer);
  EXPECT_EQ(a.x_T, b.x_T);
  EXPECT_EQ(a.x_D_last, b.x_D_last);
}

// Field by field, floats compared exactly.
void expect_same(const Config& a, const Config& b) {
  EXPECT_EQ(a.run.name, b.run.name);
  EXPECT_EQ(a.run.dir, b.run.dir);
  EXPECT_EQ(a.run.seed, b.run.seed);

  EXPECT_EQ(a.model.name, b.model.name);
  EXPECT_EQ(a.model.input_size, b.model.input_size);
  EXPECT_EQ(a.model.in_channels, b.model.in_channels);
  EXPECT_EQ(a.model.num_classes, b.model.num_classes);
  EXPECT_EQ(a.model.depth, b.model.depth);
  EXPECT_EQ(a.model.hidden_size, b.model.hidden_size);
  EXPECT_EQ(a.model.num_heads, b.model.num_heads);
  EXPECT_EQ(a.model.patch_size, b.model.patch_size);
  EXPECT_EQ(a.model.mlp_ratio, b.model.mlp_ratio);
  EXPECT_EQ(a.model.init, b.model.init);
  ASSERT_EQ(a.model.routes.size(), b.model.routes.size());
  for (size_t i = 0; i < a.model.routes.size(); ++i)
    expect_same_route(a.model.routes[i], b.model.routes[i], i);

  EXPECT_EQ(a.diffusion.P_mean, b.diffusion.P_mean);
  EXPECT_EQ(a.diffusion.P_std, b.diffusion.P_std);
  EXPECT_EQ(a.diffusion.sigma_data, b.diffusion.sigma_data);
  EXPECT_EQ(a.diffusion.class_drop_prob, b.diffusion.class_drop_prob);

  EXPECT_EQ(a.data.paths, b.data.paths);
  EXPECT_EQ(a.data.prefetch_threads, b.data.prefetch_threads);
  EXPECT_EQ(a.data.prefetch_depth, b.data.prefetch_depth);

  EXPECT_EQ(a.train.global_batch, b.train.global_batch);
  EXPECT_EQ(a.train.micro_batch, b.train.micro_batch);
  EXPECT_EQ(a.train.watchdog_s, b.train.watchdog_s);
  EXPECT_EQ(a.train.steps, b.train.steps);
  EXPECT_EQ(a.train.precision, b.train.precision);
  EXPECT_EQ(a.train.grad_clip, b.train.grad_clip);
  EXPECT_EQ(a.train.log_every, b.train.log_every);
  EXPECT_EQ(a.train.device, b.train.device);
  EXPECT_EQ(a.train.threads, b.train.threads);

  EXPECT_EQ(a.optim.lr, b.optim.lr);
  EXPECT_EQ(a.optim.betas, b.optim.betas);
  EXPECT_EQ(a.optim.eps, b.optim.eps);
  EXPECT_EQ(a.optim.weight_decay, b.optim.weight_decay);
  EXPECT_EQ(a.optim.warmup_steps, b.optim.warmup_steps);

  EXPECT_EQ(a.ema.decay, b.ema.decay);

  EXPECT_EQ(a.checkpoint.every, b.checkpoint.every);
  EXPECT_EQ(a.checkpoint.keep_last, b.checkpoint.keep_last);
  EXPECT_EQ(a.checkpoint.keep_every, b.checkpoint.keep_every);
  EXPECT_EQ(a.checkpoint.resume, b.checkpoint.resume);

  EXPECT_EQ(a.dist.reshard_after_forward, b.dist.reshard_after_forward);
  EXPECT_EQ(a.dist.param_dtype, b.dist.param_dtype);
  EXPECT_EQ(a.dist.reduce_dtype, b.dist.reduce_dtype);

  EXPECT_EQ(a.eval.ranks, b.eval.ranks);
  EXPECT_EQ(a.eval.num_samples, b.eval.num_samples);
  EXPECT_EQ(a.eval.seeds, b.eval.seeds);
  EXPECT_EQ(a.eval.steps, b.eval.steps);
  EXPECT_EQ(a.eval.S_churn, b.eval.S_churn);
  EXPECT_EQ(a.eval.cfg_scales, b.eval.cfg_scales);
  EXPECT_EQ(a.eval.ref_stats, b.eval.ref_stats);
  EXPECT_EQ(a.eval.extractor, b.eval.extractor);
  EXPECT_EQ(a.eval.extractor_weights, b.eval.extractor_weights);
  EXPECT_EQ(a.eval.vae_weights, b.eval.vae_weights);
}

// A config in which every key differs from its default.
const char* const kFullFile = R"(
[run]
name = "full"
dir = "/scratch/runs"
seed = 7

[model]
name = "DiT-B/4"
input_size = 16
in_channels = 1
num_classes = 10
depth = 6
hidden_size = 192
num_heads = 6
patch_size = 4
mlp_ratio = 2.5
init = "reference"

[[model.routes]]
selection_ratio = 0.25
start_layer = 1
end_layer = 2

[[model.routes]]
selection_ratio = 0.75
start_layer = 3
end_layer = 4
x_T = 0.5
x_D_last = 0.5

[diffusion]
P_mean = -1.0
P_std = 1.4
sigma_data = 1.0
class_drop_prob = 0.2

[data]
paths = ["a.h5", "b.h5"]
prefetch_threads = 2
prefetch_depth = 3

[train]
global_batch = 64
steps = 1541
precision = "fp32"
grad_clip = 1.0
log_every = 10
device = "cpu"
threads = 2

[optim]
lr = 1e-3
betas = [0.9, 0.95]
eps = 1e-6
weight_decay = 0.01
warmup_steps = 100

[ema]
decay = 0.999

[checkpoint]
every = 500
keep_last = 2
keep_every = 0
resume = "never"

[dist]
reshard_after_forward = false
param_dtype = "fp32"
reduce_dtype = "bf16"

[eval]
ranks = 1
num_samples = 1000
seeds = "0-999"
steps = 18
cfg_scales = [1.0, 1.5]
ref_stats = "refs/mnist.npz"
extractor = "classifier"
extractor_weights = "weights/mnist_classifier.safetensors"
vae_weights = "weights/vae.safetensors"
)";

// ---- defaults and a full file -------------------------------------------------------------

TEST(Config, EmptyFileGivesTheDefaults) {
  Config c = parse_config("", "empty.toml");
  expect_same(c, Config{});
  EXPECT_NO_THROW(validate(Config{}));
  // Spot checks against the values of docs/config.md.
  EXPECT_EQ(c.model.name, "DiT-XL/2");
  EXPECT_EQ(c.model.init, "adaln_zero");
  EXPECT_TRUE(c.model.routes.empty());
  EXPECT_EQ(c.train.global_batch, 256);
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(c.eval.cfg_scales, (std::vector<double>{1.0}));
  EXPECT_EQ(c.checkpoint.resume, "auto");
}

TEST(Config, MissingKeysTakeTheDefaults) {
  Config c = parse_config("[train]\nsteps = 10\n[[model.routes]]\nend_layer = 3\n", "part.toml");
  Config want;
  want.train.steps = 10;
  want.model.routes.push_back(RouteConfig{});
  want.model.routes[0].end_layer = 3;
  expect_same(c, want);
  EXPECT_EQ(c.model.routes[0].selection_ratio, 0.5);
  EXPECT_EQ(c.model.routes[0].x_D_last, 1.0);
}

TEST(Config, FullFileSetsEveryKey) {
  Config c = parse_config(kFullFile, "full.toml");
  EXPECT_EQ(c.run.name, "full");
  EXPECT_EQ(c.run.dir, "/scratch/runs");
  EXPECT_EQ(c.run.seed, 7);
  EXPECT_EQ(c.model.name, "DiT-B/4");
  EXPECT_EQ(c.model.input_size, 16);
  EXPECT_EQ(c.model.in_channels, 1);
  EXPECT_EQ(c.model.num_classes, 10);
  EXPECT_EQ(c.model.depth, 6);
  EXPECT_EQ(c.model.hidden_size, 192);
  EXPECT_EQ(c.model.num_heads, 6);
  EXPECT_EQ(c.model.patch_size, 4);
  EXPECT_EQ(c.model.mlp_ratio, 2.5);
  EXPECT_EQ(c.model.init, "reference");
  ASSERT_EQ(c.model.routes.size(), 2u);
  EXPECT_EQ(c.model.routes[0].selection_ratio, 0.25);
  EXPECT_EQ(c.model.routes[0].start_layer, 1);
  EXPECT_EQ(c.model.routes[0].end_layer, 2);
  EXPECT_EQ(c.model.routes[0].x_T, 0.0);
  EXPECT_EQ(c.model.routes[0].x_D_last, 1.0);
  EXPECT_EQ(c.model.routes[1].selection_ratio, 0.75);
  EXPECT_EQ(c.model.routes[1].start_layer, 3);
  EXPECT_EQ(c.model.routes[1].end_layer, 4);
  EXPECT_EQ(c.model.routes[1].x_T, 0.5);
  EXPECT_EQ(c.model.routes[1].x_D_last, 0.5);
  EXPECT_EQ(c.diffusion.P_mean, -1.0);
  EXPECT_EQ(c.diffusion.P_std, 1.4);
  EXPECT_EQ(c.diffusion.sigma_data, 1.0);
  EXPECT_EQ(c.diffusion.class_drop_prob, 0.2);
  EXPECT_EQ(c.data.paths, (std::vector<std::string>{"a.h5", "b.h5"}));
  EXPECT_EQ(c.data.prefetch_threads, 2);
  EXPECT_EQ(c.data.prefetch_depth, 3);
  EXPECT_EQ(c.train.global_batch, 64);
  EXPECT_EQ(c.train.steps, 1541);
  EXPECT_EQ(c.train.precision, "fp32");
  EXPECT_EQ(c.train.grad_clip, 1.0);
  EXPECT_EQ(c.train.log_every, 10);
  EXPECT_EQ(c.train.device, "cpu");
  EXPECT_EQ(c.train.threads, 2);
  EXPECT_EQ(c.optim.lr, 1e-3);
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.9, 0.95}));
  EXPECT_EQ(c.optim.eps, 1e-6);
  EXPECT_EQ(c.optim.weight_decay, 0.01);
  EXPECT_EQ(c.optim.warmup_steps, 100);
  EXPECT_EQ(c.ema.decay, 0.999);
  EXPECT_EQ(c.checkpoint.every, 500);
  EXPECT_EQ(c.checkpoint.keep_last, 2);
  EXPECT_EQ(c.checkpoint.keep_every, 0);
  EXPECT_EQ(c.checkpoint.resume, "never");
  EXPECT_FALSE(c.dist.reshard_after_forward);
  EXPECT_EQ(c.dist.param_dtype, "fp32");
  EXPECT_EQ(c.dist.reduce_dtype, "bf16");
  EXPECT_EQ(c.eval.ranks, 1);
  EXPECT_EQ(c.eval.num_samples, 1000);
  EXPECT_EQ(c.eval.seeds, "0-999");
  EXPECT_EQ(c.eval.steps, 18);
  EXPECT_EQ(c.eval.cfg_scales, (std::vector<double>{1.0, 1.5}));
  EXPECT_EQ(c.eval.ref_stats, "refs/mnist.npz");
  EXPECT_EQ(c.eval.extractor, "classifier");
  EXPECT_EQ(c.eval.extractor_weights, "weights/mnist_classifier.safetensors");
  EXPECT_EQ(c.eval.vae_weights, "weights/vae.safetensors");
}

TEST(Config, IntegerIsTakenWhereAFloatIsExpected) {
  Config c = parse_config("[optim]\nlr = 1\nbetas = [0, 0.5]\n[eval]\ncfg_scales = [1, 2]\n", "x");
  EXPECT_EQ(c.optim.lr, 1.0);
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.0, 0.5}));
  EXPECT_EQ(c.eval.cfg_scales, (std::vector<double>{1.0, 2.0}));
}

TEST(Config, ResumeTakesAFolder) {
  Config c = parse_config("[checkpoint]\nresume = \"runs/a/ckpt/step_000100\"\n", "x");
  EXPECT_EQ(c.checkpoint.resume, "runs/a/ckpt/step_000100");
}

// ---- unknown keys -------------------------------------------------------------------------

TEST(ConfigErrors, UnknownKeyNamesFileKeyAndClosestKey) {
  EXPECT_EQ(error_of("[train]\nstpes = 5\n"),
            "configs/x.toml: unknown key 'train.stpes'; did you mean 'train.steps'?");
  EXPECT_EQ(error_of("[optim]\nbeta = [0.9, 0.99]\n"),
            "configs/x.toml: unknown key 'optim.beta'; did you mean 'optim.betas'?");
  EXPECT_EQ(error_of("[diffusion]\np_mean = 0.0\n"),
            "configs/x.toml: unknown key 'diffusion.p_mean'; did you mean 'diffusion.P_mean'?");
}

TEST(ConfigErrors, UnknownSectionSuggestsTheKeyInTheRightSection) {
  EXPECT_EQ(error_of("[tarin]\nsteps = 5\n"),
            "configs/x.toml: unknown key 'tarin.steps'; did you mean 'train.steps'?");
  EXPECT_EQ(error_of("[tarin]\n"), "configs/x.toml: unknown section [tarin]; did you mean [train]?");
  std::string msg = error_of("[nonsense]\n");
  EXPECT_NE(msg.find("unknown section [nonsense]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[checkpoint]"), std::string::npos) << msg;  // lists the sections
}

TEST(ConfigErrors, KeyInTheWrongSectionSuggestsWhereItBelongs) {
  EXPECT_EQ(error_of("[train]\nlr = 0.1\n"),
            "configs/x.toml: unknown key 'train.lr'; did you mean 'optim.lr'?");
  EXPECT_EQ(error_of("[train]\nbatch = 64\n"),
            "configs/x.toml: unknown key 'train.batch'; did you mean 'train.global_batch' or 'train.micro_batch'?");
  EXPECT_EQ(error_of("steps = 5\n"),
            "configs/x.toml: unknown key 'steps'; did you mean 'train.steps' or 'eval.steps'?");
  EXPECT_EQ(error_of("[model]\nstart_layer = 2\n"),
            "configs/x.toml: unknown key 'model.start_layer'; did you mean "
            "'model.routes.start_layer'?");
}

TEST(ConfigErrors, UnknownKeyWithoutAnyCloseOneListsTheSection) {
  std::string msg = error_of("[model]\nzzzzzzzz = 1\n");
  EXPECT_NE(msg.find("configs/x.toml: unknown key 'model.zzzzzzzz'; the keys of [model] are"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("mlp_ratio"), std::string::npos) << msg;
}

TEST(ConfigErrors, UnknownKeyInsideARoute) {
  EXPECT_EQ(error_of("[[model.routes]]\nstart_layr = 1\n"),
            "configs/x.toml: unknown key 'model.routes[0].start_layr'; did you mean "
            "'model.routes[0].start_layer'?");
  EXPECT_EQ(error_of("[[model.routes]]\nstart_layer = 1\nend_layer = 2\n"
                     "[[model.routes]]\nratio = 0.5\n"),
            "configs/x.toml: unknown key 'model.routes[1].ratio'; did you mean "
            "'model.routes[1].selection_ratio'?");
}

// ---- wrong types --------------------------------------------------------------------------

TEST(ConfigErrors, WrongTypeNamesKeyExpectedTypeAndValue) {
  EXPECT_EQ(error_of("[train]\nsteps = \"abc\"\n"),
            "configs/x.toml: key 'train.steps' must be an integer, got string \"abc\"");
  EXPECT_EQ(error_of("[train]\nsteps = 1.5\n"),
            "configs/x.toml: key 'train.steps' must be an integer, got float 1.5");
  EXPECT_EQ(error_of("[optim]\nlr = \"fast\"\n"),
            "configs/x.toml: key 'optim.lr' must be a number, got string \"fast\"");
  EXPECT_EQ(error_of("[run]\nname = 3\n"),
            "configs/x.toml: key 'run.name' must be a string, got integer 3");
  EXPECT_EQ(error_of("[dist]\nreshard_after_forward = \"yes\"\n"),
            "configs/x.toml: key 'dist.reshard_after_forward' must be true or false, got string "
            "\"yes\"");
  EXPECT_EQ(error_of("[model]\ndepth = 99999999999\n"),
            "configs/x.toml: key 'model.depth' must be an integer in [-2147483648, 2147483647], "
            "got integer 99999999999");
  EXPECT_EQ(error_of("train = 5\n"),
            "configs/x.toml: key 'train' must be a table (a [train] section), got integer 5");
}

TEST(ConfigErrors, ArraysCheckTheirElements) {
  EXPECT_EQ(error_of("[optim]\nbetas = [0.9, \"a\"]\n"),
            "configs/x.toml: key 'optim.betas[1]' must be a number, got string \"a\"");
  EXPECT_EQ(error_of("[optim]\nbetas = 0.9\n"),
            "configs/x.toml: key 'optim.betas' must be an array of numbers, got float 0.9");
  EXPECT_EQ(error_of("[eval]\ncfg_scales = [1.0, true]\n"),
            "configs/x.toml: key 'eval.cfg_scales[1]' must be a number, got boolean true");
  EXPECT_EQ(error_of("[data]\npaths = [\"a.h5\", 3]\n"),
            "configs/x.toml: key 'data.paths[1]' must be a string, got integer 3");
  EXPECT_EQ(error_of("[data]\npaths = \"a.h5\"\n"),
            "configs/x.toml: key 'data.paths' must be an array of strings, got string \"a.h5\"");
}

TEST(ConfigErrors, RoutesMustBeAnArrayOfTables) {
  EXPECT_EQ(error_of("[model]\nroutes = 5\n"),
            "configs/x.toml: key 'model.routes' must be an array of tables ([[model.routes]] "
            "sections), got integer 5");
  std::string msg = error_of("[model]\nroutes = [1]\n");
  EXPECT_NE(msg.find("key 'model.routes[0]' must be a table"), std::string::npos) << msg;
  EXPECT_EQ(error_of("[[model.routes]]\nstart_layer = 1.0\n"),
            "configs/x.toml: key 'model.routes[0].start_layer' must be an integer, got float 1.0");
}

TEST(ConfigErrors, SyntaxErrorNamesFileAndLine) {
  std::string msg = error_of("[run]\nname = \"a\"\n[train\n");
  EXPECT_EQ(msg.rfind("configs/x.toml:3:", 0), 0u) << msg;
  EXPECT_NE(msg.find("TOML syntax error"), std::string::npos) << msg;
  msg = error_of("[train]\nsteps = 1\nsteps = 2\n");  // a duplicate key
  EXPECT_EQ(msg.rfind("configs/x.toml:3:", 0), 0u) << msg;
}

// ---- ranges -------------------------------------------------------------------------------

struct RangeCase {
  const char* toml;      // a file that breaks exactly one rule
  const char* expected;  // the whole message
};

TEST(ConfigErrors, EveryRangeRuleNamesKeyAndWhatIsAllowed) {
  const std::vector<RangeCase> cases = {
      {"[run]\nname = \"\"", "key 'run.name' must be a non-empty name without '/', got \"\""},
      {"[run]\nname = \"a/b\"", "key 'run.name' must be a non-empty name without '/', got \"a/b\""},
      {"[run]\ndir = \"\"", "key 'run.dir' must be a non-empty folder, got \"\""},
      {"[model]\nname = \"\"", "key 'model.name' must be a model zoo name, e.g. \"DiT-XL/2\", got \"\""},
      {"[model]\ninput_size = 0", "key 'model.input_size' must be > 0, got 0"},
      {"[model]\nin_channels = -1", "key 'model.in_channels' must be > 0, got -1"},
      {"[model]\nnum_classes = -1",
       "key 'model.num_classes' must be >= 0 (0 = unconditional), got -1"},
      {"[model]\ndepth = -1", "key 'model.depth' must be >= 0 (0 = from the zoo name), got -1"},
      {"[model]\nhidden_size = -8",
       "key 'model.hidden_size' must be >= 0 (0 = from the zoo name), got -8"},
      {"[model]\nnum_heads = -1",
       "key 'model.num_heads' must be >= 0 (0 = from the zoo name), got -1"},
      {"[model]\npatch_size = -2",
       "key 'model.patch_size' must be >= 0 (0 = from the zoo name), got -2"},
      {"[model]\nmlp_ratio = 0", "key 'model.mlp_ratio' must be > 0, got 0.0"},
      {"[[model.routes]]\nselection_ratio = 1.0",
       "key 'model.routes[0].selection_ratio' must be in [0, 1), got 1.0"},
      {"[[model.routes]]\nselection_ratio = -0.1",
       "key 'model.routes[0].selection_ratio' must be in [0, 1), got -0.1"},
      {"[[model.routes]]\nstart_layer = -1\nend_layer = 2",
       "key 'model.routes[0].start_layer' must be >= 0, got -1"},
      {"[[model.routes]]\nstart_layer = 3\nend_layer = 2",
       "key 'model.routes[0].end_layer' must be >= model.routes[0].start_layer (3), got 2"},
      {"[[model.routes]]\nstart_layer = 1\nend_layer = 4\n[[model.routes]]\nstart_layer = 4\n"
       "end_layer = 6",
       "key 'model.routes[1].start_layer' must be > model.routes[0].end_layer (4): routes are "
       "listed in order of layers and must not overlap, got 4"},
      {"[[model.routes]]\nstart_layer = 5\nend_layer = 6\n[[model.routes]]\nstart_layer = 1\n"
       "end_layer = 2",
       "key 'model.routes[1].start_layer' must be > model.routes[0].end_layer (6): routes are "
       "listed in order of layers and must not overlap, got 1"},
      {"[[model.routes]]\nx_T = nan", "key 'model.routes[0].x_T' must be a finite number, got nan"},
      {"[diffusion]\nP_mean = inf", "key 'diffusion.P_mean' must be a finite number, got inf"},
      {"[diffusion]\nP_std = 0", "key 'diffusion.P_std' must be > 0, got 0.0"},
      {"[diffusion]\nsigma_data = -0.5", "key 'diffusion.sigma_data' must be > 0, got -0.5"},
      {"[diffusion]\nclass_drop_prob = 1.5",
       "key 'diffusion.class_drop_prob' must be in [0, 1], got 1.5"},
      {"[data]\npaths = [\"\"]",
       "key 'data.paths' must be HDF5 file paths (non-empty strings), got [\"\"]"},
      {"[data]\nprefetch_threads = 0", "key 'data.prefetch_threads' must be >= 1, got 0"},
      {"[data]\nprefetch_depth = 0", "key 'data.prefetch_depth' must be >= 1, got 0"},
      {"[train]\nglobal_batch = 0", "key 'train.global_batch' must be >= 1, got 0"},
      {"[train]\nsteps = -1", "key 'train.steps' must be >= 0, got -1"},
      {"[train]\nprecision = \"fp16\"",
       "key 'train.precision' must be \"fp32\" or \"bf16\", got \"fp16\""},
      {"[model]\ninit = \"zero\"",
       "key 'model.init' must be \"adaln_zero\" or \"reference\", got \"zero\""},
      {"[train]\ngrad_clip = -1.0", "key 'train.grad_clip' must be >= 0 (0 = off), got -1.0"},
      {"[train]\nlog_every = 0", "key 'train.log_every' must be >= 1, got 0"},
      {"[train]\ndevice = \"gpu\"",
       "key 'train.device' must be \"auto\", \"cpu\" or \"cuda\", got \"gpu\""},
      {"[train]\nthreads = -1",
       "key 'train.threads' must be >= 0 (0 = LibTorch's default), got -1"},
      {"[optim]\nlr = -1e-4", "key 'optim.lr' must be >= 0, got -1e-4"},
      {"[optim]\nbetas = [0.9]", "key 'optim.betas' must be two numbers in [0, 1), got [0.9]"},
      {"[optim]\nbetas = [0.9, 1.0]",
       "key 'optim.betas' must be two numbers in [0, 1), got [0.9, 1.0]"},
      {"[optim]\nbetas = [0.9, 0.99, 0.999]",
       "key 'optim.betas' must be two numbers in [0, 1), got [0.9, 0.99, 0.999]"},
      {"[optim]\neps = 0", "key 'optim.eps' must be > 0, got 0.0"},
      {"[optim]\nweight_decay = -0.1", "key 'optim.weight_decay' must be >= 0, got -0.1"},
      {"[optim]\nwarmup_steps = -5", "key 'optim.warmup_steps' must be >= 0, got -5"},
      {"[ema]\ndecay = 1.0001", "key 'ema.decay' must be in [0, 1], got 1.0001"},
      {"[checkpoint]\nevery = -1",
       "key 'checkpoint.every' must be >= 0 (0 = only at the end), got -1"},
      {"[checkpoint]\nkeep_last = 0", "key 'checkpoint.keep_last' must be >= 1, got 0"},
      {"[checkpoint]\nkeep_every = -1",
       "key 'checkpoint.keep_every' must be >= 0 (0 = none kept for good), got -1"},
      {"[checkpoint]\nresume = \"\"",
       "key 'checkpoint.resume' must be \"auto\", \"never\" or a checkpoint folder, got \"\""},
      {"[train]\nwatchdog_s = -1.0", "key 'train.watchdog_s' must be >= 0 (0 = off), got -1.0"},
      {"[train]\nmicro_batch = -4",
       "key 'train.micro_batch' must be >= 0 (0 = a rank's whole share of the global batch), got -4"},
      {"[train]\nrecompute = \"all\"",
       "key 'train.recompute' must be \"none\", \"norm\", \"mlp\", \"norm+mlp\" or \"blocks\", got \"all\""},
      {"[train]\nattention = \"sdpa\"",
       "key 'train.attention' must be \"auto\", \"cudnn\", \"flash\", \"efficient\", \"math\" or \"fused\", got \"sdpa\""},
      {"[train]\nfp32_attention = \"efficient\"",
       "key 'train.fp32_attention' must be \"products\", \"sdpa\" or \"fused\", got \"efficient\""},
      {"[dist]\nparam_dtype = \"fp16\"",
       "key 'dist.param_dtype' must be \"fp32\" or \"bf16\", got \"fp16\""},
      {"[dist]\nreduce_dtype = \"int8\"",
       "key 'dist.reduce_dtype' must be \"fp32\" or \"bf16\", got \"int8\""},
      {"[eval]\nranks = -1", "key 'eval.ranks' must be >= 0, got -1"},
      {"[eval]\nnum_samples = -1", "key 'eval.num_samples' must be >= 0, got -1"},
      {"[eval]\nseeds = \"5-3\"",
       "key 'eval.seeds' must be a list of seeds like \"0-63\" or \"1,5,7-9\", got \"5-3\""},
      {"[eval]\nsteps = 1", "key 'eval.steps' must be >= 2 (the Heun sampler's first and last steps), got 1"},
      {"[eval]\nS_churn = -1.0", "key 'eval.S_churn' must be >= 0 (0 = the deterministic sampler), got -1.0"},
      {"[eval]\ncfg_scales = []", "key 'eval.cfg_scales' must be a non-empty array of numbers, got []"},
      {"[eval]\nextractor = \"clip\"",
       "key 'eval.extractor' must be \"inception\" or \"classifier\", got \"clip\""},
  };
  for (const RangeCase& rc : cases) {
    EXPECT_EQ(error_of(rc.toml), std::string("configs/x.toml: ") + rc.expected) << rc.toml;
  }
}

TEST(ConfigErrors, BoundaryValuesAreAllowed) {
  Config c = parse_config(
      "[model]\nnum_classes = 0\n[[model.routes]]\nselection_ratio = 0.0\nstart_layer = 0\n"
      "end_layer = 0\n[[model.routes]]\nselection_ratio = 0.999\nstart_layer = 1\nend_layer = 1\n"
      "[diffusion]\nclass_drop_prob = 1.0\n[train]\nsteps = 0\ngrad_clip = 0.0\n"
      "[optim]\nlr = 0.0\nbetas = [0.0, 0.0]\n[ema]\ndecay = 1.0\n[checkpoint]\nevery = 0\n"
      "keep_every = 0\nkeep_last = 1\n[eval]\nranks = 0\nnum_samples = 0\nsteps = 2\n",
      "edges.toml");
  EXPECT_EQ(c.model.routes.size(), 2u);
  EXPECT_EQ(c.ema.decay, 1.0);
}

TEST(ConfigErrors, ValidateAloneNamesTheKey) {
  Config c;
  c.train.steps = -3;
  try {
    validate(c);
    FAIL() << "validate accepted train.steps = -3";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "key 'train.steps' must be >= 0, got -3");
  }
  Config r;
  r.model.routes = {RouteConfig{0.5, 2, 8}, RouteConfig{0.5, 8, 10}};
  EXPECT_THROW(validate(r), ConfigError);
  r.model.routes[1].start_layer = 9;
  EXPECT_NO_THROW(validate(r));
}

TEST(ConfigErrors, MissingFileIsNamed) {
  try {
    load_config("/nonexistent/dir/cfg.toml");
    FAIL() << "no error for a missing file";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'/nonexistent/dir/cfg.toml'"), std::string::npos)
        << e.what();
  }
}

// ---- overrides ----------------------------------------------------------------------------

TEST(ConfigOverrides, ValuesInTomlSyntax) {
  Config c = parse_config(kFullFile, "full.toml",
                          {"train.steps=10", "run.name=\"x\"", "optim.betas=[0.9,0.95]",
                           "optim.lr = 3e-4", "dist.reshard_after_forward=true",
                           "data.paths=[\"c.h5\"]", "eval.cfg_scales=[1, 1.5, 2.0]"});
  EXPECT_EQ(c.train.steps, 10);
  EXPECT_EQ(c.run.name, "x");
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.9, 0.95}));
  EXPECT_EQ(c.optim.lr, 3e-4);
  EXPECT_TRUE(c.dist.reshard_after_forward);
  EXPECT_EQ(c.data.paths, (std::vector<std::string>{"c.h5"}));
  EXPECT_EQ(c.eval.cfg_scales, (std::vector<double>{1.0, 1.5, 2.0}));
  EXPECT_EQ(c.train.global_batch, 64);  // the rest of the file stays
}

TEST(ConfigOverrides, BareWordIsAString) {
  Config c = parse_config("", "x", {"run.name=abc", "checkpoint.resume=runs/a/ckpt/step_000100",
                                    "eval.seeds=0-63", "run.dir=a=b"});
  EXPECT_EQ(c.run.name, "abc");
  EXPECT_EQ(c.checkpoint.resume, "runs/a/ckpt/step_000100");
  EXPECT_EQ(c.eval.seeds, "0-63");
  EXPECT_EQ(c.run.dir, "a=b");
  // An unquoted value that is TOML of another type is its text for a string key.
  c = parse_config("", "x", {"eval.seeds=5", "run.name=2024-01-01", "model.name=true"});
  EXPECT_EQ(c.eval.seeds, "5");
  EXPECT_EQ(c.run.name, "2024-01-01");
  EXPECT_EQ(c.model.name, "true");
}

TEST(ConfigOverrides, RoutesAsAWholeAndByIndex) {
  Config c = parse_config("", "x", {"model.routes=[{selection_ratio=0.5,start_layer=1,end_layer=4}]"});
  ASSERT_EQ(c.model.routes.size(), 1u);
  EXPECT_EQ(c.model.routes[0].selection_ratio, 0.5);
  EXPECT_EQ(c.model.routes[0].start_layer, 1);
  EXPECT_EQ(c.model.routes[0].end_layer, 4);
  EXPECT_EQ(c.model.routes[0].x_D_last, 1.0);

  // model.routes=[] turns the file's routes off.
  c = parse_config(kFullFile, "full.toml", {"model.routes=[]"});
  EXPECT_TRUE(c.model.routes.empty());

  // One key of an existing route.
  c = parse_config(kFullFile, "full.toml", {"model.routes[1].end_layer=5", "model.routes[0].x_T=0.25"});
  ASSERT_EQ(c.model.routes.size(), 2u);
  EXPECT_EQ(c.model.routes[1].end_layer, 5);
  EXPECT_EQ(c.model.routes[0].x_T, 0.25);
  EXPECT_EQ(c.model.routes[1].start_layer, 3);

  // A list set by one override and edited by the next.
  c = parse_config("", "x", {"model.routes=[{start_layer=2,end_layer=8},{start_layer=9,end_layer=10}]",
                             "model.routes[1].selection_ratio=0.3"});
  ASSERT_EQ(c.model.routes.size(), 2u);
  EXPECT_EQ(c.model.routes[1].selection_ratio, 0.3);
}

TEST(ConfigOverrides, LaterOverrideWins) {
  Config c = parse_config("[train]\nsteps = 1\n", "x", {"train.steps=2", "train.steps=3"});
  EXPECT_EQ(c.train.steps, 3);
}

TEST(ConfigOverrides, ErrorsNameTheOverride) {
  EXPECT_EQ(error_of_set({"train.stpes=5"}),
            "--set: unknown key 'train.stpes'; did you mean 'train.steps'?");
  EXPECT_EQ(error_of_set({"steps=5"}),
            "--set: unknown key 'steps'; did you mean 'train.steps' or 'eval.steps'?");
  EXPECT_EQ(error_of_set({"train.steps=abc"}),
            "--set: key 'train.steps' must be an integer, got string \"abc\"");
  EXPECT_EQ(error_of_set({"train.steps=-1"}), "--set: key 'train.steps' must be >= 0, got -1");
  EXPECT_EQ(error_of_set({"optim.betas=[0.9,\"x\"]"}),
            "--set: key 'optim.betas[1]' must be a number, got string \"x\"");
  EXPECT_EQ(error_of_set({"model.routes=[{selection_ratio=0.5,start_layr=1}]"}),
            "--set: unknown key 'model.routes[0].start_layr'; did you mean "
            "'model.routes[0].start_layer'?");
  EXPECT_EQ(error_of_set({"model.routes=[{start_layer=4,end_layer=1}]"}),
            "--set: key 'model.routes[0].end_layer' must be >= model.routes[0].start_layer (4), "
            "got 1");
  EXPECT_EQ(error_of_set({"model.routes[0].end_layr=3"}),
            "--set: unknown key 'model.routes[0].end_layr'; did you mean "
            "'model.routes[0].end_layer'?");
  std::string msg = error_of_set({"model.routes[0].end_layer=3"});
  EXPECT_EQ(msg.rfind("--set: cannot set 'model.routes[0].end_layer': the config has 0 route(s)", 0),
            0u)
      << msg;
  EXPECT_EQ(error_of_set({"train.steps"}),
            "--set: malformed override 'train.steps': expected key=value, e.g. train.steps=100");
  EXPECT_EQ(error_of_set({"=5"}), "--set: malformed override '=5': the key before '=' is empty");
  EXPECT_EQ(error_of_set({"train=5"}),
            "--set: override 'train=5' must set one key of [train], e.g. train.global_batch=...");
}

TEST(ConfigOverrides, FileErrorsStillNameTheFile) {
  // The override is fine; the error is in the file and must name it.
  EXPECT_EQ(error_of("[train]\nlog_every = 0\n", {"train.steps=5"}),
            "configs/x.toml: key 'train.log_every' must be >= 1, got 0");
  // The override fixes the file's bad value.
  EXPECT_NO_THROW(parse_config("[train]\nlog_every = 0\n", "x", {"train.log_every=5"}));
}

// ---- to_toml round trip -------------------------------------------------------------------

Config unusual_config() {
  Config c = parse_config(kFullFile, "full.toml");
  c.run.name = "tricky \"name\" \\ with\ttabs\nand é";
  c.run.seed = -9007199254740993LL;
  c.model.routes = {RouteConfig{0.1, 0, 1, 0.3, 0.7}, RouteConfig{1.0 / 3.0, 2, 5, -0.0, 1e-300},
                    RouteConfig{0.999999999999, 6, 6, 123456789.125, 2.0}};
  c.diffusion.P_mean = -1.2000000000000002;
  c.diffusion.P_std = 5e-324;  // the smallest subnormal
  c.optim.lr = 2.5e-5;
  c.optim.eps = 1e-15;
  c.optim.betas = {0.1 + 0.2, std::nextafter(1.0, 0.0)};
  c.ema.decay = 0.99990000000000001;
  c.train.grad_clip = 1e22;
  c.train.micro_batch = 24;
  c.train.watchdog_s = 90.5;
  c.eval.cfg_scales = {1.0, 1.5, 4.0, 1e-7};
  c.eval.seeds = "1,5,7-9";
  c.eval.S_churn = 0.25;
  c.data.paths = {"a b.h5", "c\\d.h5", "x'y.h5"};
  return c;
}

TEST(ConfigToToml, RoundTripIsExact) {
  Config c = unusual_config();
  ASSERT_NO_THROW(validate(c));
  const std::string text = to_toml(c);
  Config back = parse_config(text, "to_toml");
  expect_same(back, c);
  EXPECT_EQ(to_toml(back), text);
  // Also for the defaults (no routes).
  expect_same(parse_config(to_toml(Config{}), "to_toml"), Config{});
}

TEST(ConfigToToml, ListsEverySectionAndKey) {
  const std::string text = to_toml(unusual_config());
  for (const char* s : {"[run]", "[model]", "[[model.routes]]", "[diffusion]", "[data]", "[train]",
                        "[optim]", "[ema]", "[checkpoint]", "[dist]", "[eval]"})
    EXPECT_NE(text.find(std::string("\n") + s + "\n"), std::string::npos) << s;
  for (const char* k :
       {"name", "dir", "seed", "input_size", "in_channels", "num_classes", "depth", "hidden_size",
        "num_heads", "patch_size", "mlp_ratio", "selection_ratio", "start_layer", "end_layer",
        "x_T", "x_D_last", "P_mean", "P_std", "sigma_data", "class_drop_prob", "paths",
        "prefetch_threads", "prefetch_depth", "global_batch", "micro_batch", "steps", "precision", "grad_clip",
        "log_every", "device", "threads", "watchdog_s", "recompute", "fused_kernels", "fused_mlp", "attention", "lr", "betas", "eps", "weight_decay", "warmup_steps",
        "decay", "every", "keep_last", "keep_every", "resume", "reshard_after_forward",
        "param_dtype", "reduce_dtype", "ranks", "num_samples", "seeds", "S_churn", "cfg_scales",
        "ref_stats", "extractor", "extractor_weights", "vae_weights"})
    EXPECT_NE(text.find(std::string("\n") + k + " = "), std::string::npos) << k;
  EXPECT_NE(text.find("\nlr = 2.5e-5"), std::string::npos) << text;
  EXPECT_NE(text.find("\nmlp_ratio = 2.5"), std::string::npos) << text;
  // Three routes, in order, between [model] and [diffusion].
  size_t model = text.find("\n[model]\n"), diffusion = text.find("\n[diffusion]\n");
  size_t r0 = text.find("[[model.routes]]"), r2 = text.rfind("[[model.routes]]");
  EXPECT_LT(model, r0);
  EXPECT_LT(r2, diffusion);
}

// ---- the shipped configs ------------------------------------------------------------------

TEST(ConfigFiles, EveryShippedConfigParses) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(NT_SOURCE_DIR) / "configs";
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".toml") continue;
    names.push_back(entry.path().filename().string());
    SCOPED_TRACE(entry.path().string());
    Config c;
    ASSERT_NO_THROW(c = load_config(entry.path().string())) << [&] {
      try {
        load_config(entry.path().string());
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
      return std::string();
    }();
    // What it says round-trips through to_toml.
    expect_same(parse_config(to_toml(c), "to_toml"), c);
  }
  for (const char* want : {"tread_xl.toml", "dit_xl.toml", "tread_b.toml", "dit_b.toml"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want << " missing";
}

TEST(ConfigFiles, TheModelConfigsSayWhatTheyAre) {
  const std::string dir = std::string(NT_SOURCE_DIR) + "/configs/";
  Config txl = load_config(dir + "tread_xl.toml");
  EXPECT_EQ(txl.run.name, "tread_xl");
  EXPECT_EQ(txl.model.name, "DiT-XL/2");
  ASSERT_EQ(txl.model.routes.size(), 1u);
  EXPECT_EQ(txl.model.routes[0].selection_ratio, 0.5);
  EXPECT_EQ(txl.model.routes[0].start_layer, 2);
  EXPECT_EQ(txl.model.routes[0].end_layer, 24);
  EXPECT_EQ(txl.model.routes[0].x_T, 0.0);
  EXPECT_EQ(txl.model.routes[0].x_D_last, 1.0);
  EXPECT_EQ(txl.train.global_batch, 256);
  EXPECT_EQ(txl.train.precision, "bf16");
  EXPECT_TRUE(txl.train.fused_kernels);   // what the H200 measurements chose (docs/performance.md)
  EXPECT_EQ(txl.train.recompute, "mlp");  // the peak-memory target at batch 128 per GPU
  EXPECT_TRUE(txl.train.fused_mlp);      // faster on the H200 for both XL models
  EXPECT_EQ(txl.optim.lr, 1e-4);
  EXPECT_EQ(txl.ema.decay, 0.9999);
  EXPECT_EQ(txl.data.paths, (std::vector<std::string>{"latents/imagenet256_sd-vae-ft-ema.h5"}));
  EXPECT_EQ(txl.eval.ranks, 1);
  EXPECT_EQ(txl.eval.extractor, "inception");

  Config dxl = load_config(dir + "dit_xl.toml");
  EXPECT_EQ(dxl.model.name, "DiT-XL/2");
  EXPECT_TRUE(dxl.model.routes.empty());
  // dit_xl is tread_xl without the route (and its own run name).
  dxl.model.routes = txl.model.routes;
  dxl.run.name = txl.run.name;
  expect_same(dxl, txl);

  Config tb = load_config(dir + "tread_b.toml");
  EXPECT_EQ(tb.model.name, "DiT-B/2");
  ASSERT_EQ(tb.model.routes.size(), 1u);
  EXPECT_EQ(tb.model.routes[0].selection_ratio, 0.5);
  EXPECT_EQ(tb.model.routes[0].start_layer, 2);
  EXPECT_EQ(tb.model.routes[0].end_layer, 8);

  Config db = load_config(dir + "dit_b.toml");
  EXPECT_EQ(db.model.name, "DiT-B/2");
  EXPECT_TRUE(db.model.routes.empty());
  db.model.routes = tb.model.routes;
  db.run.name = tb.run.name;
  expect_same(db, tb);
}

TEST(ConfigFiles, LoadConfigAppliesOverrides) {
  const std::string path = std::string(NT_SOURCE_DIR) + "/configs/tread_b.toml";
  Config c = load_config(path, {"train.steps=100", "model.routes=[]"});
  EXPECT_EQ(c.train.steps, 100);
  EXPECT_TRUE(c.model.routes.empty());
  try {
    load_config(path, {"train.stpes=1"});
    FAIL() << "no error for an unknown override";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "--set: unknown key 'train.stpes'; did you mean 'train.steps'?");
  }
}

// ---- parse_int_list -----------------------------------------------------------------------

std::vector<int64_t> iota(int64_t a, int64_t b) {
  std::vector<int64_t> v;
  for (int64_t i = a; i <= b; ++i) v.push_back(i);
  return v;
}

TEST(ParseIntList, RangesAndLists) {
  EXPECT_EQ(parse_int_list("0-63"), iota(0, 63));
  EXPECT_EQ(parse_int_list("1,5,7-9"), (std::vector<int64_t>{1, 5, 7, 8, 9}));
  EXPECT_EQ(parse_int_list(" 1 , 5 , 7 - 9 "), (std::vector<int64_t>{1, 5, 7, 8, 9}));
  EXPECT_EQ(parse_int_list("42"), (std::vector<int64_t>{42}));
  EXPECT_EQ(parse_int_list("3-3"), (std::vector<int64_t>{3}));
  EXPECT_EQ(parse_int_list("100000-149999").size(), 50000u);
  EXPECT_EQ(parse_int_list("9000000000000000000"), (std::vector<int64_t>{9000000000000000000LL}));
}

TEST(ParseIntList, MalformedInputIsAnError) {
  for (const char* bad : {"a", "5-3", "", "   ", "1,,2", "1,", "-5", "1-", "1-2-3", "1.5",
                          "99999999999999999999", "0-999999999999"}) {
    EXPECT_THROW(parse_int_list(bad), ConfigError) << '"' << bad << '"';
  }
  try {
    parse_int_list("1,a");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'a'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"1,a\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nt
