// Config schema: the TOML sections and keys of docs/config.md, typed and validated.
//
//   Config c = load_config("configs/quickstart.toml", {"train.steps=100"});
//   std::cout << to_toml(c);                 // the resolved config, as saved with a run
//
// Unknown keys are errors that name the key and the closest valid one; a wrong type or an out
// of range value names the key and what is allowed. Errors are thrown as nt::ConfigError.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace nt {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One TREAD route: at block start_layer a random floor(T*selection_ratio) tokens per sample
// are set aside; they rejoin after block end_layer (inclusive) with the value
// x_T * (tokens after the embedder) + x_D_last * (tokens before start_layer).
// The reference CompVis/tread is x_T = 0, x_D_last = 1; the nano variant may set both.
struct RouteConfig {
  double selection_ratio = 0.5;  // [0, 1)
  int start_layer = 0;           // [0, depth)
  int end_layer = 0;             // [start_layer, depth)
  double x_T = 0.0;
  double x_D_last = 1.0;
};

struct RunConfig {
  std::string name = "run";
  std::string dir = "runs";
  int64_t seed = 0;
};

struct ModelConfig {
  std::string name = "DiT-XL/2";  // model zoo: DiT-{S,B,L,XL}/{2,4,8}
  int input_size = 32;            // latent H = W
  int in_channels = 4;
  int num_classes = 1000;
  // Custom sizes: 0 takes the value of the zoo entry `name`.
  int depth = 0;
  int hidden_size = 0;
  int num_heads = 0;
  int patch_size = 0;
  double mlp_ratio = 4.0;
  // A fresh model's adaLN and final linears: "adaln_zero" zeroes them (the DiT paper, the design
  // card); "reference" keeps the xavier draws every linear gets, as CompVis/tread's
  // initialize_weights leaves them (it re-initialises every nn.Linear after the blocks zeroed
  // theirs). The other parameters, and the random draws, are the same in both.
  std::string init = "adaln_zero";
  std::vector<RouteConfig> routes;  // [[model.routes]]; none -> plain DiT
};

struct DiffusionConfig {
  double P_mean = -1.2;
  double P_std = 1.2;
  double sigma_data = 0.5;
  double class_drop_prob = 0.1;
};

struct DataConfig {
  std::vector<std::string> paths;  // HDF5 files, concatenated in order
  int prefetch_threads = 4;
  int prefetch_depth = 8;
};

struct TrainConfig {
  int64_t global_batch = 256;
  int64_t micro_batch = 0;         // images per forward/backward on a trainer rank; 0 = its whole share of the batch
  int64_t steps = 400000;
  std::string precision = "bf16";  // "fp32" | "bf16" (autocast; CUDA only, fp32 on CPU)
  double grad_clip = 0.0;          // global-norm clipping; 0 = off
  int64_t log_every = 100;
  std::string device = "auto";     // "auto" | "cpu" | "cuda"
  int threads = 0;                 // intra-op CPU threads; 0 = LibTorch's default
  bool rank_metrics = false;       // every trainer rank also writes metrics.rank<R>.jsonl
  double watchdog_s = 1800;        // no step or checkpoint done for this long: end the job (0 = never)
  std::string recompute = "none";  // "none" | "norm" | "mlp" | "norm+mlp" | "blocks": recomputed in backward
  int recompute_blocks = -1;  // `recompute` in blocks 0 .. recompute_blocks - 1 only; -1: all
  bool fused_kernels = false;      // the project's own CUDA kernels (LayerNorm + modulate) on CUDA
  bool fused_mlp = false;          // each MLP's GELU in its products' cuBLASLt epilogues on CUDA
  std::string attention = "auto";  // "auto" | "cudnn" | "flash" | "efficient" | "math" | "fused": the CUDA attention kernel
  std::string product_forms = "tall";  // "direct" | "tall": the form of a linear layer's weight gradient on CUDA
  bool weight_grads_in_place = true;   // CUDA weight-gradient products add into the gradient buffers themselves
  std::string fp32_attention = "products";  // "products" | "sdpa" | "fused": CUDA attention on fp32 inputs
  std::string blas = "auto";                // "auto" | "cublas" | "cublaslt": LibTorch's CUDA products
};

struct OptimConfig {
  double lr = 1e-4;
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;  // step s uses lr * min(1, (s + 1) / warmup_steps); 0: lr throughout
};

struct EmaConfig {
  double decay = 0.9999;
};

struct CheckpointConfig {
  int64_t every = 5000;
  int64_t keep_last = 3;       // >= 1
  int64_t keep_every = 50000;  // 0 = none kept for good
  std::string resume = "auto"; // "auto" | "never" | a checkpoint folder
  std::string init_from;       // "" | a safetensors file a new run starts from (weights or a training state)
};

struct DistConfig {
  bool reshard_after_forward = true;
  std::string param_dtype = "bf16";   // "fp32" | "bf16"
  std::string reduce_dtype = "fp32";  // "fp32" | "bf16"
};

struct EvalConfig {
  int ranks = 0;
  int64_t num_samples = 50000;
  std::string seeds = "100000-149999";
  int steps = 40;
  double S_churn = 0.0;  // EDM stochasticity of the Heun sampler (0 = deterministic), as the reference's eval.S_churn
  std::vector<double> cfg_scales = {1.0};
  std::string ref_stats;
  std::string extractor = "inception";  // "inception" | "classifier"
  std::string extractor_weights;
  std::string vae_weights;
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DiffusionConfig diffusion;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  EmaConfig ema;
  CheckpointConfig checkpoint;
  DistConfig dist;
  EvalConfig eval;
};

// Parses TOML text (source names the file in messages), applies overrides "a.b=value"
// (value in TOML syntax; a bare word is taken as a string), validates, and returns it.
Config parse_config(const std::string& toml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
// Reads the file (error naming it if missing) and calls parse_config.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The resolved config as TOML, every key present; parse_config(to_toml(c)) == c.
std::string to_toml(const Config& c);
// Range and consistency checks (also run by parse_config); throws ConfigError.
void validate(const Config& c);

// "0-63", "1,5,7-9" -> list of integers; throws ConfigError on malformed input.
std::vector<int64_t> parse_int_list(const std::string& s);

}  // namespace nt
