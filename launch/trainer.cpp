// Training loop (see launch/trainer.h).
#include "launch/trainer.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/blas_advice.h"
#include "core/checkpoint.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/rng.h"
#include "data/global_sampler.h"
#include "data/latent_dataset.h"
#include "data/prefetch_loader.h"
#include "dist/adamw.h"
#include "dist/communicator.h"
#include "dist/flat_layout.h"
#include "dist/sharded_params.h"
#include "dist/sharded_checkpoint.h"
#include "dist/model_io.h"
#include "eval/eval_rank.h"
#include "dist/topology.h"
#include "launch/stop_signal.h"
#include "launch/watchdog.h"
#include "models/attention_backend.h"
#include "models/autocast.h"
#include "models/blas_backend.h"
#include "models/edm.h"
#include "models/fp32_attention.h"
#include "models/fused_kernels.h"
#include "models/gelu_mlp.h"
#include "models/linear_backward.h"
#include "models/product_forms.h"
#include "models/zoo.h"

namespace fs = std::filesystem;

namespace nt {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

std::string human_time(double s) {
  char buf[64];
  const long t = static_cast<long>(s);
  std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

// Everything a step changes, and a checkpoint saves. With W trainer ranks each unit's flat
// buffer is split into W contiguous shards (dist/sharded_params.h): the optimizer, its moments
// and the EMA live on this rank's fp32 shard only; the full parameters (in the compute dtype,
// dist.param_dtype) are gathered after every update and the full gradients reduce-scattered
// (averaged, in dist.reduce_dtype) into the shard. W = 1 is the same code.
struct TrainState {
  DiT model{nullptr};
  Communicator* comm = nullptr;               // trainers' control communicator (CPU tensors); null for one process
  int rank = 0, world = 1;
  ShardingOptions sharding;                   // the gather and reduce dtypes, resharding
  std::unique_ptr<ShardedParams> sharded;     // the model's parameters, sharded over `device_comm`
  std::vector<at::Tensor> ema;                // this rank's EMA shards [padded / W], fp32
  AdamWState opt;                             // moments of the shard
  at::Generator gen;                          // the same on every rank: draws for the global batch
  LoaderState loader;
  int64_t step = 0;
  at::Tensor last_local_loss;                 // this rank's mean loss of the last step: [1] float64
  const FlatLayout& layout() const { return sharded->layout(); }
  std::vector<at::Tensor>& params() { return sharded->params(); }
};

// What the parameters are gathered in and the gradients reduced in. dist.param_dtype and
// dist.reduce_dtype apply where training computes in bf16 (train.precision = "bf16" on CUDA); an
// fp32 run gathers and reduces in fp32. The root unit (embedders, final layer: a few MB, always
// gathered) and the blocks that run outside autocast stay fp32, so a bf16 gather changes no
// forward value: autocast would have rounded those weights to bf16 anyway.
ShardingOptions sharding_options(const Config& cfg, const DiTConfig& mc, bool bf16_compute, Communicator* device_comm) {
  ShardingOptions o;
  const auto param = bf16_compute && cfg.dist.param_dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  o.reduce_dtype = bf16_compute && cfg.dist.reduce_dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  o.param_dtypes.push_back(at::kFloat);  // root
  for (bool fp32 : fp32_blocks(mc)) o.param_dtypes.push_back(fp32 ? at::kFloat : param);
  o.reshard_after_forward = device_comm && device_comm->size() > 1 && cfg.dist.reshard_after_forward;
  return o;
}

// `device_comm`: the communicator of the parameter collectives (NCCL for CUDA tensors), or null to
// use `comm`.
TrainState make_state(const Config& cfg, const DiTConfig& mc, const c10::Device& device, Communicator* comm,
                      Communicator* device_comm, bool bf16_compute) {
  TrainState s;
  s.comm = comm;
  s.rank = comm ? comm->rank() : 0;
  s.world = comm ? comm->size() : 1;
  if (!device_comm) device_comm = comm;
  s.model = DiT(mc);
  auto init_gen = make_generator(c10::Device(c10::kCPU), mix_seed(cfg.run.seed, 0x696e6974ull));
  s.model->initialize_weights(&init_gen);  // identical on every rank
  s.model->to(device);
  s.sharding = sharding_options(cfg, mc, bf16_compute, device_comm);
  s.sharded = std::make_unique<ShardedParams>(*s.model, device_comm, s.sharding);
  for (const auto& p : s.params()) s.ema.push_back(p.clone());
  s.opt = adamw_init(s.params());
  // Training randomness (sigma, noise, label drop, routing) is drawn on the CPU whatever the
  // device: a CUDA run draws what a CPU run draws, and checkpoints resume on either. Its seed is
  // its own: mix_seed(seed, 0) is epoch 0's permutation's (data/global_sampler.h), and the same
  // mt19937 stream would make the first steps' draws functions of the bits that chose their
  // samples.
  s.gen = make_generator(c10::Device(c10::kCPU), mix_seed(cfg.run.seed, 0x747261696eull));  // "train"
  return s;
}

void barrier(TrainState& s) {
  if (s.comm) s.comm->barrier();
}

// The same decision on every rank: rank 0's choice of the checkpoint to resume from.
std::string broadcast_string(TrainState& s, const std::string& text) {
  if (!s.comm) return text;
  auto len = torch::tensor({static_cast<int64_t>(text.size())}, torch::kLong);
  s.comm->broadcast(len, 0);
  if (len.item<int64_t>() == 0) return std::string();
  auto bytes = torch::zeros({len.item<int64_t>()}, torch::kUInt8);
  if (s.rank == 0) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  s.comm->broadcast(bytes, 0);
  return std::string(static_cast<const char*>(bytes.data_ptr()), bytes.numel());
}

// Every trainer rank's `text` (at most 255 bytes, no NUL), in rank order, on every rank.
std::vector<std::string> all_gather_strings(TrainState& s, const std::string& text) {
  if (!s.comm) return {text};
  constexpr int64_t kLen = 256;
  TORCH_CHECK(static_cast<int64_t>(text.size()) < kLen, "all_gather_strings: text too long");
  auto all = torch::zeros({s.world, kLen}, torch::kLong);  // [W, kLen]: each rank fills its row, a sum gathers
  auto a = all.accessor<int64_t, 2>();
  for (size_t i = 0; i < text.size(); ++i) a[s.rank][static_cast<int64_t>(i)] = static_cast<unsigned char>(text[i]);
  s.comm->all_reduce(all);
  std::vector<std::string> out(static_cast<size_t>(s.world));
  for (int64_t r = 0; r < s.world; ++r)
    for (int64_t i = 0; i < kLen && a[r][i] != 0; ++i) out[static_cast<size_t>(r)].push_back(static_cast<char>(a[r][i]));
  return out;
}

void save_checkpoint(const Config& cfg, const std::string& config_toml, const std::string& ckpt_root,
                     TrainState& s, const DatasetInfo& data) {
  std::string tmp;
  if (s.rank == 0) tmp = begin_checkpoint(ckpt_root, s.step);
  tmp = broadcast_string(s, tmp);  // the folder exists before any rank writes into it
  save_rank_shards(tmp, s.rank, s.layout(),
                   {{"param", s.params()}, {"exp_avg", s.opt.exp_avg}, {"exp_avg_sq", s.opt.exp_avg_sq}, {"ema", s.ema}},
                   {{"train", generator_state(s.gen)}});
  // Each rank makes its own file durable and hashes it (in parallel, on its own node); rank 0
  // collects the digests: every rank file is complete before it writes the manifest.
  const std::vector<std::string> digests =
      all_gather_strings(s, seal_checkpoint_file((fs::path(tmp) / rank_file_name(s.rank)).string()));
  if (s.rank != 0) {
    barrier(s);
    return;
  }
  std::map<std::string, std::string> sealed;
  for (int r = 0; r < static_cast<int>(digests.size()); ++r) sealed[rank_file_name(r)] = digests[r];
  {
    std::ofstream out(fs::path(tmp) / "config.toml");
    out << config_toml;
  }
  nlohmann::json m;
  m["format"] = "nano-tread-checkpoint/1";
  m["world_size"] = s.layout().world;
  m["model"] = dit_config_to_json(s.model->cfg);
  m["layout"] = s.layout().to_json();
  m["loader"] = {{"epoch", s.loader.epoch}, {"batch", s.loader.batch}};
  m["optimizer"] = {{"step", s.opt.step}};
  m["data"] = data_info_to_json(data);
  m["rng"] = {{"train", "rng.train in each rank file"}};
  commit_checkpoint(ckpt_root, s.step, m, sealed);
  apply_retention(ckpt_root, cfg.checkpoint.keep_last, cfg.checkpoint.keep_every);
  barrier(s);  // no rank moves on before the checkpoint is published
}

// The checkpoint to resume from ("" for none), the same on every trainer rank. Rank 0 lists the
// candidates (checkpoint.resume = "auto": the run's checkpoints, newest first; a folder: that one)
// and every rank takes its list. For each, every rank checks the digests of the files it will read
// (resume_files: in parallel, so no rank hashes the whole checkpoint), and the first that every
// rank accepts is taken. The rank that refuses one names the file and why; "auto" then falls back
// to the previous checkpoint, and a named folder is an error on every rank.
std::string choose_resume(const Config& cfg, const std::string& ckpt_root, TrainState& s) {
  if (cfg.checkpoint.resume == "never") return "";
  const bool automatic = cfg.checkpoint.resume == "auto";
  std::string listed;  // one folder per line
  if (s.rank == 0) {
    if (automatic) {
      warn_incomplete_checkpoints(ckpt_root, [](const std::string& w) { log_warn(w); });
      for (const auto& [step, dir] : list_checkpoints(ckpt_root)) listed += dir + "\n";
    } else {
      listed = cfg.checkpoint.resume + "\n";
    }
  }
  std::istringstream in(broadcast_string(s, listed));
  for (std::string dir; std::getline(in, dir);) {
    std::string why;
    try {
      const auto m = read_manifest(dir);
      verify_checkpoint_files(dir, m, resume_files(m, s.layout(), s.rank));
    } catch (const std::exception& e) {
      why = e.what();
    }
    bool accepted = why.empty();
    if (s.comm) {  // accepted by every rank: refused by none
      auto refused = torch::tensor({static_cast<int64_t>(!accepted)}, torch::kLong);
      s.comm->all_reduce(refused, Communicator::Op::max);
      accepted = refused.item<int64_t>() == 0;
    }
    if (accepted) return dir;
    if (!automatic)
      throw CheckpointError(why.empty() ? "checkpoint.resume '" + dir +
                                              "' was refused by another trainer rank (its error names the file)"
                                        : why);
    if (!why.empty()) log_warn(why + "; falling back to the previous checkpoint");
  }
  return "";
}

// Loads checkpoint `dir`, whose files choose_resume() checked.
void load_checkpoint(const std::string& dir, TrainState& s, const c10::Device& device) {
  const CheckpointReadLock reading(dir);
  const auto m = read_manifest(dir);
  check_same_architecture(m.at("model"), s.model->cfg, dir);
  const std::vector<std::string> kinds = {"param", "ema", "exp_avg", "exp_avg_sq"};
  std::map<std::string, std::vector<at::Tensor>> shards;
  at::Tensor rng;
  if (auto own = load_rank_shards(dir, m, s.layout(), s.rank, kinds, device, /*verify=*/false)) {
    // The same units (any W): each rank reads its part of the files that hold its shards.
    if (!own->rng.count("train")) throw CheckpointError("'" + dir + "': rank file without 'rng.train'");
    shards = std::move(own->buffers);
    rng = own->rng.at("train");
  } else {
    // Other units (not written for this model's layout): reassemble by name, then shard.
    auto full = load_full_tensors(dir, m, kinds);  // one read per rank file
    for (const auto& kind : kinds) shards[kind] = shard_from_full(full.at(kind), s.layout(), s.rank, device, dir);
    rng = load_rng_state(dir, m, s.rank, "train");
  }
  torch::NoGradGuard no_grad;
  for (size_t u = 0; u < s.params().size(); ++u) s.params()[u].copy_(shards.at("param")[u]);
  s.ema = shards.at("ema");
  s.opt.exp_avg = shards.at("exp_avg");
  s.opt.exp_avg_sq = shards.at("exp_avg_sq");
  s.opt.step = m.at("optimizer").at("step").get<int64_t>();
  s.sharded->refresh();
  set_generator_state(s.gen, rng);
  s.loader.epoch = m.at("loader").at("epoch").get<int64_t>();
  s.loader.batch = m.at("loader").at("batch").get<int64_t>();
  s.step = m.at("step").get<int64_t>();
}

// checkpoint.init_from: a new run's parameters and EMA, and for a training state its AdamW moments
// and update count, from a file; the data order and the training randomness start afresh.
InitState init_from_file(const Config& cfg, TrainState& s, const c10::Device& device) {
  const std::string& path = cfg.checkpoint.init_from;
  InitState st = read_init_state(path, s.model);
  const std::string where = "checkpoint.init_from '" + path + "'";
  torch::NoGradGuard no_grad;
  auto params = shard_from_init(st, "param", s.layout(), s.rank, device);  // this rank's part of the file only
  for (size_t u = 0; u < s.params().size(); ++u) s.params()[u].copy_(params[u]);
  s.ema = shard_from_init(st, "ema", s.layout(), s.rank, device);
  if (st.training_state) {
    s.opt.exp_avg = shard_from_init(st, "exp_avg", s.layout(), s.rank, device);
    s.opt.exp_avg_sq = shard_from_init(st, "exp_avg_sq", s.layout(), s.rank, device);
    s.opt.step = s.step = st.step;
  }
  s.sharded->refresh();
  if (s.rank == 0 && st.training_state) {  // the optimizer settings the state was made with, where recorded
    const std::vector<std::pair<std::string, double>> ours = {
        {"lr", cfg.optim.lr}, {"beta1", cfg.optim.betas[0]}, {"beta2", cfg.optim.betas[1]},
        {"eps", cfg.optim.eps}, {"weight_decay", cfg.optim.weight_decay}};
    for (const auto& [key, value] : ours) {
      auto it = st.file.metadata.find(key);
      if (it == st.file.metadata.end()) continue;
      const double theirs = std::strtod(it->second.c_str(), nullptr);
      if (std::abs(theirs - value) > 1e-12 * std::max(std::abs(theirs), std::abs(value)))
        log_warn(where + " was trained with " + key + " = " + it->second + "; this run uses " + fmt("%.6g", value) +
                 " (optim." + (key.rfind("beta", 0) == 0 ? std::string("betas") : key) + ")");
    }
  }
  return st;
}

// CUDA matrix products: with train.precision = "bf16" TF32 is allowed for what stays fp32, as the
// reference's train.py sets; "fp32" means fp32 (TF32 off, also in cuDNN convolutions). The
// attention kernels train.attention allows (models/attention_backend.h); a choice that cannot
// apply is named in the log (rank 0). The form of the linear layers' weight-gradient products
// (train.product_forms, models/product_forms.h); attention on fp32 inputs (train.fp32_attention,
// models/fp32_attention.h); the library LibTorch's products go through (train.blas,
// models/blas_backend.h).
void set_cuda_math(const Config& cfg, const c10::Device& device, int rank) {
  set_product_form_policy(cfg.train.product_forms == "tall" ? FormPolicy::tall : FormPolicy::direct);
  set_fp32_attention(cfg.train.fp32_attention == "sdpa"    ? Fp32AttentionKind::sdpa
                     : cfg.train.fp32_attention == "fused" ? Fp32AttentionKind::fused
                                                           : Fp32AttentionKind::products);
  if (cfg.train.attention != "auto" && (!device.is_cuda() || !set_attention_backend(cfg.train.attention)) && rank == 0)
    log_warn("train.attention = \"" + cfg.train.attention + "\": " +
             (device.is_cuda() ? std::string("this LibTorch (before 2.4) has no kernel switches")
                               : "it chooses CUDA kernels; this run is on " + device.str()) +
             "; its attention runs as it would with \"auto\"");
  if (cfg.train.attention == "fused" && device.is_cuda() && !fused_kernels_built() && rank == 0)
    log_warn("train.attention = \"fused\": this build has no own CUDA kernels (nvcc was not found); its attention "
             "runs as it would with \"auto\"");
  if (cfg.train.fp32_attention == "fused" && device.is_cuda() && !fused_kernels_built() && rank == 0)
    log_warn("train.fp32_attention = \"fused\": this build has no own CUDA kernels (nvcc was not found); attention "
             "on fp32 inputs runs as it would with \"products\"");
  if (cfg.train.blas != "auto" && (!device.is_cuda() || !set_blas_backend(cfg.train.blas)) && rank == 0)
    log_warn("train.blas = \"" + cfg.train.blas + "\": " +
             (device.is_cuda() ? std::string("this LibTorch (before 2.3) has no BLAS switch")
                               : "it chooses the CUDA products' library; this run is on " + device.str()) +
             "; its products run as they would with \"auto\"");
  if (!device.is_cuda()) return;
  const bool tf32 = cfg.train.precision == "bf16";
  at::globalContext().setAllowTF32CuBLAS(tf32);
  at::globalContext().setAllowTF32CuDNN(tf32);
}

c10::Device pick_device(const Config& cfg, int gpu = 0) {
  if (cfg.train.device == "cuda" || (cfg.train.device == "auto" && torch::cuda::is_available())) {
    if (!torch::cuda::is_available())
      throw std::runtime_error("train.device = \"cuda\" but this LibTorch sees no CUDA device; use \"cpu\" or \"auto\"");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(std::max(gpu, 0)));
  }
  return c10::Device(c10::kCPU);
}

// The images each forward/backward of a rank takes: train.micro_batch, or all `rows` of its share.
int64_t micro_rows(const Config& cfg, int64_t rows) {
  return cfg.train.micro_batch > 0 ? std::min(cfg.train.micro_batch, rows) : rows;
}

// How many micro-batches a step of each of `world` trainer ranks takes; throws when
// train.micro_batch does not divide a rank's share of the global batch.
int64_t micro_batches(const Config& cfg, int world) {
  const int64_t rows = cfg.train.global_batch / world, m = micro_rows(cfg, rows);
  if (rows % m != 0)
    throw std::runtime_error("train.micro_batch = " + std::to_string(m) + " does not divide the " +
                             std::to_string(rows) + " images each of the " + std::to_string(world) +
                             " trainer rank(s) takes per step (train.global_batch = " +
                             std::to_string(cfg.train.global_batch) + "); use a divisor of " +
                             std::to_string(rows) + ", or 0 for no micro-batches");
  return rows / m;
}

// What a step logs: the global batch's mean loss ([1]) and the gradients' global norm (0-dim),
// float64, on the compute device, read by the loop when it logs or checkpoints: without gradient
// clipping a step never waits for the GPU. With clipping they are read within the step (the clip
// needs the norm; with several ranks, after one all-reduce of the squared norm and the loss).
// Without clipping:
//   - on one process updating in place, the gradients stay as backward left them until the next
//     step begins: grad_norm is undefined, and grad_norm_now() computes it from them when the loop
//     logs (the same values; no pass over the gradients in steps that do not log);
//   - with several ranks (`ranks_pending`), loss is this rank's own mean loss and local_sq its
//     squared gradient norm; the loop sums its interval's losses and the last step's local_sq over
//     the ranks in one all-reduce when it logs or checkpoints (the same values up to the order of
//     the float64 additions; no step waits for the GPU).
struct StepLog {
  at::Tensor loss;
  at::Tensor grad_norm;
  at::Tensor local_sq;
  bool ranks_pending = false;
};

// The last step's gradient norm where it left it undefined (see StepLog).
at::Tensor grad_norm_now(const TrainState& s) { return sum_of_squares_tensor(s.sharded->backward_grads()).sqrt(); }

// One optimizer step on this rank's rows x [b,C,H,W], y [b] of the global batch. With
// train.micro_batch m < b the rows go through forward and backward m at a time and the gradients
// accumulate (each micro-batch's mean loss weighted m / b): every micro-batch draws the step's
// randomness for the whole global batch from the same generator state and keeps its own rows, so
// M micro-batches train what one batch trains (to rounding).
StepLog train_step(const Config& cfg, TrainState& s, const at::Tensor& x, const at::Tensor& y, bool autocast) {
  const EDMLossParams lp{cfg.diffusion.P_mean, cfg.diffusion.P_std, cfg.diffusion.sigma_data};
  s.model->train();
  const int64_t b = x.size(0), m = micro_rows(cfg, b), micros = b / m;
  const at::Tensor step_rng = micros > 1 ? generator_state(s.gen) : at::Tensor();
  // On CUDA the optimizer's kernel (dist/adamw.h: adamw_ema_fused) wherever it is built: the same
  // arithmetic on any number of ranks, with or without micro-batches. With the own kernels, one
  // process and no micro-batches it also reads the gradients as backward left them and writes the
  // bf16 compute copies, instead of the casts to fp32 shards and back (the same values).
  const bool fused_update = !s.params().empty() && s.params()[0].is_cuda() && adamw_ema_fused_available(true);
  const bool in_place = micros == 1 && cfg.train.fused_kernels && s.sharded->updates_in_place() && fused_update;
  at::Tensor loss_sum;  // [1] double, on the compute device (read once, after the last backward)
  for (int64_t i = 0; i < micros; ++i) {
    if (i > 0) set_generator_state(s.gen, step_rng);  // the same draws; each micro-batch keeps its rows
    ForwardOptions hooks;
    hooks.block = {parse_recompute(cfg.train.recompute), cfg.train.fused_kernels, cfg.train.fused_mlp,
                   cfg.train.recompute_blocks};
    s.sharded->begin_step(hooks, /*accumulate=*/i > 0);
    const BatchSlice slice{s.rank * b + i * m, s.world * b};  // this micro-batch's rows of the global batch
    if (autocast) set_cuda_autocast(true);
    auto loss = edm_loss(s.model, x.narrow(0, i * m, m), y.narrow(0, i * m, m), lp, cfg.diffusion.class_drop_prob,
                         s.gen, slice, hooks)
                    .mean();
    if (autocast) set_cuda_autocast(false);
    {
      const WeightGradsInPlace grads_in_place(cfg.train.weight_grads_in_place);  // models/linear_backward.h
      (micros > 1 ? loss / static_cast<double>(micros) : loss).backward();
    }
    if (!in_place) s.sharded->end_backward();
    const at::Tensor l = loss.detach().to(at::kDouble).reshape({1});
    loss_sum = i == 0 ? l : loss_sum + l;
  }
  if (micros > 1) loss_sum = loss_sum / static_cast<double>(micros);
  const std::vector<at::Tensor>& grads = in_place ? s.sharded->backward_grads() : s.sharded->grads();
  // The norm waits for the loop where the gradients outlive the step (see StepLog).
  const bool norm_later = in_place && !s.comm && cfg.train.grad_clip <= 0;
  at::Tensor sq = norm_later ? at::Tensor() : sum_of_squares_tensor(grads);  // 0-dim float64
  s.last_local_loss = loss_sum;
  const bool ranks_pending = s.comm && cfg.train.grad_clip <= 0;  // see StepLog
  if (s.comm && !ranks_pending) {  // one all-reduce for the global squared norm and the logged loss
    auto both = torch::tensor({sq.item<double>(), loss_sum.item<double>()}, torch::kDouble);
    s.comm->all_reduce(both);
    sq = both[0];
    loss_sum = both[1].reshape({1});
  }
  const at::Tensor grad_norm = norm_later || ranks_pending ? at::Tensor() : sq.sqrt();
  const double norm = cfg.train.grad_clip > 0 ? grad_norm.item<double>() : 0.0;  // read only to clip
  AdamWParams ap{cfg.optim.lr, cfg.optim.betas[0], cfg.optim.betas[1], cfg.optim.eps, cfg.optim.weight_decay};
  if (cfg.optim.warmup_steps > 0)
    ap.lr *= std::min(1.0, static_cast<double>(s.step + 1) / static_cast<double>(cfg.optim.warmup_steps));
  if (fused_update) {
    const double scale = cfg.train.grad_clip > 0 ? clip_coefficient(norm, cfg.train.grad_clip) : 1.0;
    const std::vector<at::Tensor> no_copies;  // not in place: refresh() casts the shards
    adamw_ema_fused(s.params(), grads, s.opt, ap, s.ema, cfg.ema.decay, scale,
                    in_place ? s.sharded->compute_copies() : no_copies);
    if (in_place)
      s.sharded->updated_in_place();
    else
      s.sharded->refresh();
  } else {
    if (cfg.train.grad_clip > 0) clip_by_norm(grads, norm, cfg.train.grad_clip);
    adamw_step(s.params(), grads, s.opt, ap);
    ema_update(s.ema, s.params(), cfg.ema.decay);
    s.sharded->refresh();
  }
  s.step += 1;
  if (ranks_pending) return {loss_sum, grad_norm, sq, true};
  return {loss_sum / static_cast<double>(s.world), grad_norm};
}

double current_lr(const Config& cfg, int64_t step) {
  if (cfg.optim.warmup_steps <= 0) return cfg.optim.lr;
  return cfg.optim.lr * std::min(1.0, static_cast<double>(step + 1) / static_cast<double>(cfg.optim.warmup_steps));
}

void check_data_matches(const DatasetInfo& d, const DiTConfig& mc, const Config& cfg) {
  if (d.channels != mc.in_channels || d.height != mc.input_size || d.width != mc.input_size)
    throw std::runtime_error("the data samples are [" + std::to_string(d.channels) + "," + std::to_string(d.height) +
                             "," + std::to_string(d.width) + "] but the model expects model.in_channels = " +
                             std::to_string(mc.in_channels) + " and model.input_size = " + std::to_string(mc.input_size));
  if (mc.num_classes > 0 && d.num_classes > mc.num_classes)
    throw std::runtime_error("the data have num_classes = " + std::to_string(d.num_classes) +
                             " but model.num_classes = " + std::to_string(mc.num_classes));
  if (d.size < cfg.train.global_batch)
    throw std::runtime_error("train.global_batch = " + std::to_string(cfg.train.global_batch) + " exceeds the " +
                             std::to_string(d.size) + " samples of the data");
}

}  // namespace

TrainSummary train(const Config& cfg, const std::string& config_toml, Communicator* comm, int gpu,
                   EvalPublisher* publisher, Communicator* device_comm) {
  if (cfg.train.threads > 0) at::set_num_threads(cfg.train.threads);
  const c10::Device device = pick_device(cfg, gpu);
  set_cuda_math(cfg, device, comm ? comm->rank() : 0);
  const bool autocast = cfg.train.precision == "bf16" && device.is_cuda();
  if (cfg.train.precision == "bf16" && !device.is_cuda())
    log_info("precision bf16 applies to CUDA; this CPU run computes in fp32");
  const DiTConfig mc = resolve_model(cfg.model);
  // train.attention = "fused" where its kernels cannot take this model: said once, not silently.
  if (cfg.train.attention == "fused" && device.is_cuda() && fused_kernels_built() && (comm ? comm->rank() : 0) == 0 &&
      (!autocast || !fused_attention_supports_shape(mc.tokens(), mc.hidden_size / mc.num_heads)))
    log_warn("train.attention = \"fused\": its kernels take bf16 (train.precision = \"bf16\"), " +
             fused_attention_limits() + "; this run (" +
             cfg.train.precision + ", " + std::to_string(mc.tokens()) + " tokens, head width " +
             std::to_string(mc.hidden_size / mc.num_heads) +
             ") takes LibTorch's attention where they cannot, as with \"auto\"");
  if (cfg.train.fp32_attention == "fused" && device.is_cuda() && fused_kernels_built() &&
      (comm ? comm->rank() : 0) == 0 && !fused_attention_supports_shape(mc.tokens(), mc.hidden_size / mc.num_heads))
    log_warn("train.fp32_attention = \"fused\": its kernels take " + fused_attention_limits() + "; this model (" +
             std::to_string(mc.tokens()) + " tokens, head width " + std::to_string(mc.hidden_size / mc.num_heads) +
             ") takes fp32 products instead, as with \"products\"");
  if (cfg.data.paths.empty()) throw std::runtime_error("data.paths is empty: name at least one HDF5 file");
  LatentDataset data(cfg.data.paths);
  check_data_matches(data.info(), mc, cfg);
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->size() : 1;
  if (device_comm && device_comm->size() != world)
    throw std::runtime_error("the device communicator has " + std::to_string(device_comm->size()) +
                             " ranks but the trainers are " + std::to_string(world));
  const std::string collectives = device_comm ? device_comm->backend() : comm ? comm->backend() : "none";
  if (world > 1 && device.is_cuda() && collectives != "nccl")
    throw std::runtime_error("several trainer ranks on CUDA need the NCCL communicator, and this build has none "
                             "(configure with nccl.h and libnccl found); train on one GPU, or on CPUs "
                             "(train.device = \"cpu\")");
  if (world > 1 && !device.is_cuda() && collectives == "nccl")
    throw std::runtime_error("the NCCL communicator moves CUDA tensors, but this run trains on " + device.str());
  if (cfg.train.global_batch % world != 0)
    throw std::runtime_error("train.global_batch = " + std::to_string(cfg.train.global_batch) +
                             " is not divisible by the " + std::to_string(world) + " trainer ranks");
  const int64_t micros = micro_batches(cfg, world);
  GlobalSampler sampler(data.info().size, cfg.train.global_batch, static_cast<uint64_t>(cfg.run.seed), rank, world);

  const fs::path run_dir = fs::path(cfg.run.dir) / cfg.run.name;
  const std::string ckpt_root = (run_dir / "ckpt").string();
  if (rank == 0) fs::create_directories(ckpt_root);
  TrainState s = make_state(cfg, mc, device, comm, device_comm, autocast);
  const ModelCost cost = model_cost(mc);

  const std::string resume_dir = choose_resume(cfg, ckpt_root, s);  // every rank loads the same checkpoint
  bool imported_state = false;
  if (!resume_dir.empty()) {
    load_checkpoint(resume_dir, s, device);
    log_info("resumed from " + resume_dir + " at step " + std::to_string(s.step) +
             (world > 1 ? " on " + std::to_string(world) + " trainer ranks" : "") +
             (cfg.checkpoint.init_from.empty() ? "" : " (checkpoint.init_from applies only to a run's start)"));
  } else if (!cfg.checkpoint.init_from.empty()) {
    const InitState st = init_from_file(cfg, s, device);
    imported_state = st.training_state;
    log_info("initialised from " + cfg.checkpoint.init_from +
             (st.training_state ? ": a training state after " + std::to_string(st.step) +
                                      " updates (parameters, EMA, AdamW moments); the data order starts afresh"
                                : ": weights (parameters and EMA); AdamW starts afresh"));
  }
  if (rank == 0) {  // saved once the resume check passed: a refused checkpoint leaves the config as it was
    std::ofstream out(run_dir / "config.toml");
    out << config_toml;
    if (!out) throw std::runtime_error("cannot write '" + (run_dir / "config.toml").string() + "'");
  }
  if (imported_state) {  // the run's first checkpoint: later resumes need the imported file no more
    save_checkpoint(cfg, config_toml, ckpt_root, s, data.info());
    log_info("checkpoint " + (fs::path(ckpt_root) / checkpoint_name(s.step)).string() + " (the imported state)");
    if (publisher) publisher->published(s.step);  // its FID is where the continued run starts from
  }

  log_info("model " + cfg.model.name + " depth " + std::to_string(mc.depth) + " width " + std::to_string(mc.hidden_size) +
           ", " + std::to_string(cost.params) + " parameters, " + fmt("%.3f", cost.train_flops() / 1e9) +
           " GFLOP per training image; " + std::to_string(data.info().size) + " samples; device " + device.str());
  if (rank == 0 && device.is_cpu()) {  // once the run is set up: errors before it stay one line
    const std::string advice = blas_kernel_advice();
    if (!advice.empty()) log_warn(advice);
  }
  {  // what a rank holds: parameters and gradients (dist/sharded_params.h), sharded AdamW moments and EMA
    double shard_mb = 0;
    for (const auto& p : s.params()) shard_mb += p.numel() * 4.0 / 1e6;
    log_info(std::to_string(world) + " trainer rank(s); per rank: " + s.sharded->memory_summary() +
             ", AdamW moments " + fmt("%.1f MB", 2 * shard_mb) + ", EMA " + fmt("%.1f MB", shard_mb));
    const ShardingOptions& so = s.sharding;
    int bf16_units = 0;
    for (auto d : so.param_dtypes) bf16_units += d == at::kBFloat16;
    log_info(std::string("parameters gathered in ") + (bf16_units ? "bf16" : "fp32") +
             (bf16_units ? " (" + std::to_string(bf16_units) + " of " + std::to_string(so.param_dtypes.size()) +
                               " units; the root and the blocks run outside autocast stay fp32)"
                         : "") +
             ", gradients reduced in " + (so.reduce_dtype == at::kBFloat16 ? "bf16" : "fp32") +
             (autocast ? "" : " (fp32 compute: dist.param_dtype and dist.reduce_dtype apply to bf16 compute on CUDA)"));
    if (micros > 1)
      log_info(std::to_string(micros) + " micro-batches of " + std::to_string(cfg.train.global_batch / world / micros) +
               " images per rank and step (train.micro_batch): gradients accumulate in fp32 shards");
  }
  if (rank == 0 && cfg.train.fused_kernels && (!device.is_cuda() || !fused_kernels_built()))
    log_warn(std::string("train.fused_kernels: ") +
             (device.is_cuda() ? "this build has no CUDA kernels (nvcc was not found when it was configured)"
                               : "the kernels run on CUDA; this run is on " + device.str()) +
             "; LibTorch's ops run instead");
  if (rank == 0 && cfg.train.fused_mlp && (!autocast || !gelu_mlp_cublaslt_built()))
    log_warn(std::string("train.fused_mlp: ") +
             (!autocast ? "the cuBLASLt products serve bf16 compute on CUDA; this run computes in fp32 on " +
                              device.str()
                        : std::string("this build has no cuBLASLt (not found when it was configured)")) +
             "; each MLP runs LibTorch's ops in one node");
  MetricsSink metrics, rank_metrics;  // rank 0's global records; optionally each rank's own
  if (rank == 0) metrics.open((run_dir / "metrics.jsonl").string());
  if (cfg.train.rank_metrics) {
    barrier(s);  // rank 0 created the run folder
    rank_metrics.open((run_dir / ("metrics.rank" + std::to_string(rank) + ".jsonl")).string());
  }
  TrainSummary summary;
  summary.start_step = s.step;
  const auto t_start = Clock::now();
  auto t_interval = Clock::now();
  // The interval's losses add up where they were computed (float64, read when the loop logs or
  // checkpoints: a step does not wait for the GPU to finish the one before).
  at::Tensor loss_sum, rank_loss_sum, last_norm, last_sq;
  bool ranks_pending = false;  // the steps' StepLog::ranks_pending (the same in every step of a run)
  double wait_sum = 0;
  int64_t interval_steps = 0, interval_first = s.step + 1;
  std::string last_ckpt;
  const int64_t B = cfg.train.global_batch;

  // Reader threads prefetch this rank's part of the next global batches, in order, from the
  // loader position of the (resumed) state.
  // A rank that sees no step done for train.watchdog_s seconds ends the job (launch/watchdog.h).
  Watchdog watchdog(cfg.train.watchdog_s, [](const std::string& message) { abort_job(message); });
  PrefetchLoader loader(data, sampler, s.loader, cfg.data.prefetch_threads, cfg.data.prefetch_depth,
                        [&](int64_t epoch) { return mix_seed(cfg.run.seed, static_cast<uint64_t>(epoch)); },
                        /*pin_memory=*/device.is_cuda());
  while (s.step < cfg.train.steps) {
    watchdog.progress("in step " + std::to_string(s.step + 1));
    Batch batch = loader.next();
    const at::Tensor x = batch.x.to(device, /*non_blocking=*/true), y = batch.y.to(device, /*non_blocking=*/true);
    s.loader = batch.state;
    wait_sum += batch.wait_seconds;
    const double lr = current_lr(cfg, s.step);
    const StepLog step_log = train_step(cfg, s, x, y, autocast);
    loss_sum = interval_steps == 0 ? step_log.loss : loss_sum + step_log.loss;
    rank_loss_sum = interval_steps == 0 ? s.last_local_loss : rank_loss_sum + s.last_local_loss;
    last_norm = step_log.grad_norm;
    last_sq = step_log.local_sq;
    ranks_pending = step_log.ranks_pending;
    ++interval_steps;

    int signal = stop_requested();
    if (comm) {  // the ranks agree to stop at the same step
      auto flag = torch::tensor({static_cast<int64_t>(signal)}, torch::kLong);
      comm->all_reduce(flag, Communicator::Op::max);
      signal = static_cast<int>(flag.item<int64_t>());
    }
    const bool last = s.step == cfg.train.steps || signal != 0;
    const bool log_now = s.step % cfg.train.log_every == 0 || last;
    const bool checkpoint_now = (cfg.checkpoint.every > 0 && s.step % cfg.checkpoint.every == 0) || last;
    double mean_loss = 0;                 // of the interval so far
    at::Tensor interval_loss = loss_sum;  // the sum of the interval's global mean losses
    if ((log_now || checkpoint_now) && ranks_pending) {  // every rank: the same steps
      auto both = torch::tensor({loss_sum.item<double>(), last_sq.item<double>()}, torch::kDouble);
      comm->all_reduce(both);
      interval_loss = both[0].reshape({1}) / static_cast<double>(s.world);
      last_norm = both[1].sqrt();
    }
    if (log_now || checkpoint_now) {  // a non-finite loss ends the run before it logs or writes a checkpoint
      mean_loss = interval_loss.item<double>() / static_cast<double>(interval_steps);
      if (!std::isfinite(mean_loss))
        throw std::runtime_error("the loss became " + std::to_string(mean_loss) + " at a step from " +
                                 std::to_string(interval_first) + " to " + std::to_string(s.step) +
                                 "; lower optim.lr or set train.grad_clip");
    }
    if (log_now) {
      const double norm = (last_norm.defined() ? last_norm : grad_norm_now(s)).item<double>();
      const double dt = seconds_since(t_interval);
      const double img_s = interval_steps * B / dt;
      const double eta = (cfg.train.steps - s.step) * dt / interval_steps;
      log_info("step " + std::to_string(s.step) + "/" + std::to_string(cfg.train.steps) + " loss " + fmt("%.4f", mean_loss) +
               " lr " + fmt("%.3g", lr) + " grad_norm " + fmt("%.3f", norm) + " img/s " + fmt("%.1f", img_s) +
               " data_wait " + fmt("%.1f%%", 100 * wait_sum / dt) + " eta " + human_time(eta));
      metrics.write({{"step", s.step}, {"loss", mean_loss}, {"lr", lr}, {"grad_norm", norm}, {"img_per_s", img_s},
                     {"data_wait_s", wait_sum}, {"data_wait_share", wait_sum / dt}, {"epoch", s.loader.epoch},
                     {"tflops", img_s * cost.train_flops() / 1e12}, {"elapsed_s", seconds_since(t_start)}});
      rank_metrics.write({{"step", s.step}, {"rank", rank},
                          {"local_loss", rank_loss_sum.item<double>() / static_cast<double>(interval_steps)},
                          {"data_wait_s", wait_sum}, {"step_time_s", dt / interval_steps}});
      summary.last_loss = mean_loss;
      wait_sum = 0;
      interval_steps = 0;
      interval_first = s.step + 1;
      t_interval = Clock::now();
    }
    if (checkpoint_now) {
      watchdog.progress("writing checkpoint " + std::to_string(s.step));
      save_checkpoint(cfg, config_toml, ckpt_root, s, data.info());
      last_ckpt = (fs::path(ckpt_root) / checkpoint_name(s.step)).string();
      log_info("checkpoint " + last_ckpt);
      if (publisher) publisher->published(s.step);  // non-blocking: training goes on
    }
    if (signal != 0) {
      summary.stopped_by_signal = signal;
      log_info("stopped by signal " + std::to_string(signal) + " at step " + std::to_string(s.step) +
               "; run the same command again to resume");
      break;
    }
  }
  if (publisher) publisher->finished(s.step, summary.stopped_by_signal != 0);
  summary.end_step = s.step;
  summary.checkpoint = last_ckpt;
  const double total = seconds_since(t_start);
  summary.img_per_s = total > 0 ? (s.step - summary.start_step) * B / total : 0;
  log_info("done: step " + std::to_string(s.step) + " in " + human_time(total));
  return summary;
}

bool trains_on_cuda(const Config& cfg) { return pick_device(cfg).is_cuda(); }

void dry_run(const Config& cfg) {
  const DiTConfig mc = resolve_model(cfg.model);
  DiT model(mc);
  const ModelCost cost = model_cost(mc);
  int64_t counted = 0;
  for (const auto& p : model->parameters())
    if (p.requires_grad()) counted += p.numel();
  std::printf("model: %s (depth %d, hidden %d, heads %d, patch %d, %d tokens, %zu routes)\n", cfg.model.name.c_str(),
              mc.depth, mc.hidden_size, mc.num_heads, mc.patch_size, mc.tokens(), mc.routes.size());
  std::printf("parameters: %lld\n", static_cast<long long>(counted));
  std::printf("GFLOP per image: forward %.4f (eval %.4f), training step %.4f\n", cost.forward_flops / 1e9,
              cost.forward_flops_eval / 1e9, cost.train_flops() / 1e9);
  for (const auto& path : cfg.data.paths) {
    if (!fs::exists(path)) {
      std::printf("data: '%s' does not exist (yet)\n", path.c_str());
      continue;
    }
    LatentDataset data({path});
    check_data_matches(data.info(), mc, cfg);
    std::printf("data: %s: %lld samples [%d,%d,%d], %s\n", path.c_str(), static_cast<long long>(data.info().size),
                data.info().channels, data.info().height, data.info().width, data.info().latent_space.c_str());
  }
  if (!cfg.checkpoint.init_from.empty()) {
    const InitState st = read_init_state(cfg.checkpoint.init_from, model);
    std::printf("init_from: %s: %s\n", cfg.checkpoint.init_from.c_str(),
                st.training_state ? ("a training state after " + std::to_string(st.step) + " updates").c_str()
                                  : "weights (parameters and EMA)");
  }
  std::printf("dry run ok\n");
}

BenchResult benchmark(const Config& cfg, int warmup_steps, int timed_steps,
                      const std::function<void(const std::function<void(int)>&)>& after) {
  if (cfg.train.threads > 0) at::set_num_threads(cfg.train.threads);
  const c10::Device device = pick_device(cfg);
  set_cuda_math(cfg, device, 0);
  const bool autocast = cfg.train.precision == "bf16" && device.is_cuda();
  const DiTConfig mc = resolve_model(cfg.model);
  TrainState s = make_state(cfg, mc, device, nullptr, nullptr, autocast);
  const int64_t B = cfg.train.global_batch;
  micro_batches(cfg, 1);
  auto data_gen = make_generator(c10::Device(c10::kCPU), 1234);
  auto x = at::randn({B, mc.in_channels, mc.input_size, mc.input_size}, data_gen).to(device);
  auto y = (mc.num_classes > 0 ? at::randint(0, mc.num_classes, {B}, data_gen, at::TensorOptions().dtype(at::kLong))
                               : at::zeros({B}, at::TensorOptions().dtype(at::kLong)))
               .to(device);
  auto sync = [&] { if (device.is_cuda()) torch::cuda::synchronize(); };
  for (int i = 0; i < warmup_steps; ++i) train_step(cfg, s, x, y, autocast);
  sync();
  BenchResult r;
  const auto t0 = Clock::now();
  at::Tensor first_loss, last_loss;  // read after the timing: a step does not wait for the GPU
  for (int i = 0; i < timed_steps; ++i) {
    last_loss = train_step(cfg, s, x, y, autocast).loss;
    if (i == 0) first_loss = last_loss;
  }
  sync();
  const double dt = seconds_since(t0);
  if (timed_steps > 0) {
    r.first_loss = first_loss.item<double>();
    r.last_loss = last_loss.item<double>();
  }
  const ModelCost cost = model_cost(mc);
  r.device = device.str();
  r.batch = B;
  r.params = cost.params;
  r.train_flop = cost.train_flops();
  r.step_s = dt / timed_steps;
  r.img_per_s = timed_steps * B / dt;
  r.tflops = r.img_per_s * r.train_flop / 1e12;
  std::printf("benchmark: %s batch %lld, %d steps in %.3f s, threads %d, device %s\n", cfg.model.name.c_str(),
              static_cast<long long>(B), timed_steps, dt, at::get_num_threads(), device.str().c_str());
  std::printf("TFLOP/s: %.4f\n", r.tflops);
  std::printf("img/s: %.2f\n", r.img_per_s);
  if (after) {
    after([&](int n) {
      for (int i = 0; i < n; ++i) train_step(cfg, s, x, y, autocast);
      sync();
    });
  }
  return r;
}

}  // namespace nt
