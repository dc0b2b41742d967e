// The command lines of tread_run, tread_sample and tread_export: --help, and every bad input
// ends with exit code 1 and one clear line on stderr (never a crash); --print-config, --set,
// --dry-run, and what a run leaves in its folder.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using nt::test::exe;
using nt::test::run_command;
using nt::test::read_text;
using nt::test::tool;
using nt::test::write_text;
using Result = nt::test::ToolResult;


// A failure as users should see it: exit code 1, one line on stderr holding every part,
// nothing that looks like a crash or a LibTorch backtrace.
void expect_clean_error(const Result& r, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.rc, 1) << "stdout: " << r.out << "\nstderr: " << r.err;
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  EXPECT_FALSE(err.empty()) << "no message on stderr";
  EXPECT_EQ(err.find('\n'), std::string::npos) << "expected one line, got:\n" << r.err;
  for (const auto& p : parts) EXPECT_CONTAINS(r.err, p);
  for (const char* crash : {"terminate called", "Segmentation", "Aborted", "Exception raised from", "frame #"})
    EXPECT_EQ(r.err.find(crash), std::string::npos) << r.err;
}

// The 10k bundled digits at 8x8 through the real importer.
std::string import_digits(const std::string& dir) {
  const std::string src = std::string(NT_SOURCE_DIR) + "/data/mnist10k/";
  const std::string out = dir + "/mnist8.h5";
  std::string log;
  const int rc = run_command(exe("data/tread_data") + " import-mnist --images " + src + "images-idx3-ubyte.gz --labels " +
                                 src + "labels-idx1-ubyte.gz --out " + out + " --size 8",
                             &log);
  EXPECT_EQ(rc, 0) << log;
  return out;
}

// A tiny valid config (2 blocks, 32 wide, 4 tokens); tests change it with --set.
std::string config_text(const std::string& dir, const std::string& data) {
  std::ostringstream s;
  s << "[run]\nname = \"cli\"\ndir = \"" << dir << "/runs\"\n"
    << "[model]\nname = \"DiT-S/4\"\ninput_size = 8\nin_channels = 1\nnum_classes = 10\n"
    << "depth = 2\nhidden_size = 32\nnum_heads = 2\npatch_size = 4\n"
    << "[data]\npaths = [\"" << data << "\"]\n"
    << "[train]\nglobal_batch = 4\nsteps = 3\nprecision = \"fp32\"\nlog_every = 1\ndevice = \"cpu\"\nthreads = 1\n"
    << "[checkpoint]\nevery = 2\nkeep_last = 2\nkeep_every = 0\n";
  return s.str();
}

std::string write_config(const std::string& dir, const std::string& data, const std::string& text_override = "") {
  const std::string path = dir + "/cfg.toml";
  write_text(path, text_override.empty() ? config_text(dir, data) : text_override);
  return path;
}

TEST(Cli, HelpExitsZero) {
  const std::string dir = nt::test::scratch_dir();
  for (const auto& [name, expect] : std::vector<std::pair<std::string, std::string>>{
           {"launch/tread_run", "--config"},
           {"launch/tread_sample", "--checkpoint"},
           {"launch/tread_export", "--out"},
           {"data/tread_data", "import-mnist"}}) {
    Result r = tool(name, "--help", dir);
    EXPECT_EQ(r.rc, 0) << name << ": " << r.err;
    EXPECT_CONTAINS(r.out, expect);
  }
  Result s = tool("launch/tread_sample", "-h", dir);
  EXPECT_EQ(s.rc, 0) << s.err;
}

TEST(Cli, RunConfigErrors) {
  const std::string dir = nt::test::scratch_dir();
  expect_clean_error(tool("launch/tread_run", "", dir), {"--config"});
  expect_clean_error(tool("launch/tread_run", "--no-such-option", dir), {"no-such-option"});
  expect_clean_error(tool("launch/tread_run", "--config " + dir + "/missing.toml", dir), {dir + "/missing.toml"});

  const std::string good = config_text(dir, dir + "/data.h5");
  // An unknown key: named, with the closest valid one.
  std::string typo = good;
  typo.replace(typo.find("steps = 3"), 9, "stpes = 3");
  const std::string cfg = write_config(dir, "", typo);
  Result r = tool("launch/tread_run", "--config " + cfg + " --print-config", dir);
  expect_clean_error(r, {"train.stpes", "train.steps"});
  // A wrong type.
  std::string wrong = good;
  wrong.replace(wrong.find("steps = 3"), 9, "steps = \"three\"");
  write_config(dir, "", wrong);
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --print-config", dir), {"train.steps"});
  // Wrong through --set, and an unknown key through --set.
  write_config(dir, "", good);
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --set train.steps=many --print-config", dir),
                     {"train.steps"});
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --set optim.learning_rate=1 --print-config", dir),
                     {"optim.learning_rate"});
  // An out-of-range value.
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --set train.global_batch=0 --print-config", dir),
                     {"train.global_batch"});
}

// "{slurm_job_id}" in run.name becomes the Slurm job id, or "local" outside Slurm.
TEST(Cli, RunNameTakesTheSlurmJobId) {
  const std::string dir = nt::test::scratch_dir();
  const std::string cfg = dir + "/c.toml";
  write_text(cfg, config_text(dir, dir + "/d.h5"));
  const std::string cmd = exe("launch/tread_run") + " --config " + cfg + " --set 'run.name=x_{slurm_job_id}' --print-config";
  std::string out;
  ASSERT_EQ(nt::test::run_command("SLURM_JOB_ID=4242 " + cmd, &out), 0) << out;
  EXPECT_CONTAINS(out, "name = \"x_4242\"");
  ASSERT_EQ(nt::test::run_command("env -u SLURM_JOB_ID " + cmd, &out), 0) << out;
  EXPECT_CONTAINS(out, "name = \"x_local\"");
}

TEST(Cli, RunDataErrors) {
  const std::string dir = nt::test::scratch_dir();
  // Missing data file.
  const std::string missing = dir + "/nope.h5";
  std::string cfg = write_config(dir, missing);
  expect_clean_error(tool("launch/tread_run", "--config " + cfg, dir), {missing});
  // A text file posing as HDF5.
  const std::string text = dir + "/fake.h5";
  write_text(text, "these are not latents\n");
  cfg = write_config(dir, text);
  expect_clean_error(tool("launch/tread_run", "--config " + cfg, dir), {text, "HDF5"});
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --dry-run", dir), {text});
  // Data of another shape than the model: 8x8x1 digits for a 4-channel model, and for a
  // 16x16 model.
  const std::string digits = import_digits(dir);
  cfg = write_config(dir, digits);
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --set model.in_channels=4", dir),
                     {"model.in_channels"});
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --set model.input_size=16", dir),
                     {"model.input_size"});
  expect_clean_error(tool("launch/tread_run", "--config " + cfg + " --set model.input_size=16 --dry-run", dir),
                     {"model.input_size"});
  // Nothing was trained by any of these.
  EXPECT_FALSE(fs::exists(dir + "/runs/cli/ckpt/latest"));
}

TEST(Cli, PrintConfigParsesBackWithOverrides) {
  const std::string dir = nt::test::scratch_dir();
  const std::string cfg = write_config(dir, dir + "/data.h5");
  Result r = tool("launch/tread_run",
                  "--config " + cfg + " --set train.steps=77 --set run.name=other --set 'optim.betas=[0.8, 0.95]' "
                  "--print-config",
                  dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  nt::Config c;
  ASSERT_NO_THROW(c = nt::parse_config(r.out, "printed config")) << r.out;
  EXPECT_EQ(c.train.steps, 77);
  EXPECT_EQ(c.run.name, "other");
  EXPECT_EQ(c.optim.betas, (std::vector<double>{0.8, 0.95}));
  EXPECT_EQ(c.model.hidden_size, 32);
  EXPECT_EQ(c.train.device, "cpu");
  EXPECT_EQ(nt::to_toml(c), r.out) << "printing the printed config changes nothing";
  // Without overrides the file's values.
  Result plain = tool("launch/tread_run", "--config " + cfg + " --print-config", dir);
  ASSERT_EQ(plain.rc, 0) << plain.err;
  EXPECT_EQ(nt::parse_config(plain.out, "printed").train.steps, 3);
}

TEST(Cli, DryRunPrintsSizeAndCost) {
  const std::string dir = nt::test::scratch_dir();
  const std::string cfg = write_config(dir, import_digits(dir));
  Result r = tool("launch/tread_run", "--config " + cfg + " --dry-run", dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_CONTAINS(r.out, "parameters:");
  EXPECT_CONTAINS(r.out, "GFLOP per image");
  EXPECT_CONTAINS(r.out, "10000 samples");
  EXPECT_FALSE(fs::exists(dir + "/runs/cli/ckpt")) << "a dry run trains nothing";
}

// tread_bench: one JSON record per run with the fields gpu-check's records carry (here on the CPU:
// no CUDA peak, the resident peak instead), appended to --jsonl; bad inputs are clean errors.
TEST(Cli, BenchAppendsOneRecordPerRun) {
  const std::string dir = nt::test::scratch_dir();
  const std::string cfg = write_config(dir, import_digits(dir));
  const std::string out = dir + "/bench.jsonl";
  const std::string common = "--config " + cfg + " --steps 2 --warmup 1 --jsonl " + out + " --commit abc123 ";
  Result r = tool("launch/tread_bench", common + "--label whole", dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  r = tool("launch/tread_bench", common + "--label micro --set train.micro_batch=2", dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  std::istringstream lines(read_text(out));
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(lines, line);) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u);
  for (const auto& j : records) {
    for (const char* key : {"model", "tread", "batch", "precision", "img_per_s", "tflops", "mfu", "peak_mem_gb",
                            "peak_rss_gb", "device", "torch", "commit", "date", "micro_batch", "label"})
      EXPECT_TRUE(j.contains(key)) << key << " in " << j.dump();
    EXPECT_EQ(j.at("model"), "DiT-S/4");
    EXPECT_EQ(j.at("batch"), 4);
    EXPECT_EQ(j.at("precision"), "fp32");
    EXPECT_EQ(j.at("device"), "cpu");
    EXPECT_EQ(j.at("commit"), "abc123");
    EXPECT_TRUE(j.at("peak_mem_gb").is_null());
    EXPECT_GT(j.at("img_per_s").get<double>(), 0);
    EXPECT_GT(j.at("mfu").get<double>(), 0);
    EXPECT_GT(j.at("peak_rss_gb").get<double>(), 0.01);
  }
  EXPECT_EQ(records[0].at("micro_batch"), 0);
  EXPECT_EQ(records[1].at("micro_batch"), 2);
  EXPECT_EQ(records[1].at("label"), "micro");
  expect_clean_error(tool("launch/tread_bench", "--config " + cfg + " --set train.micro_batch=3", dir),
                     {"train.micro_batch = 3 does not divide the 4 images"});
  expect_clean_error(tool("launch/tread_bench", "--config " + cfg + " --steps 0", dir), {"--steps must be >= 1"});
}

TEST(Cli, RunFolderAndCheckpointErrors) {
  const std::string dir = nt::test::scratch_dir();
  const std::string cfg = write_config(dir, import_digits(dir));
  Result run = tool("launch/tread_run", "--config " + cfg, dir);
  ASSERT_EQ(run.rc, 0) << run.out << run.err;
  const std::string run_dir = dir + "/runs/cli";
  // The resolved config, which parses back to the run's settings.
  ASSERT_TRUE(fs::exists(run_dir + "/config.toml"));
  const nt::Config saved = nt::parse_config(read_text(run_dir + "/config.toml"), "config.toml");
  EXPECT_EQ(saved.train.steps, 3);
  EXPECT_EQ(saved.model.depth, 2);
  // metrics.jsonl: one line per step (log_every 1) with the documented keys.
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    ++n;
    for (const char* key : {"step", "loss", "lr", "grad_norm", "img_per_s"}) EXPECT_TRUE(j.contains(key)) << key << ": " << line;
    EXPECT_EQ(j.at("step").get<int64_t>(), n);
    EXPECT_TRUE(j.at("loss").is_number());
    EXPECT_GT(j.at("img_per_s").get<double>(), 0);
  }
  EXPECT_EQ(n, 3);
  // Checkpoints at 2 and 3 (the last step).
  const std::string ck = run_dir + "/ckpt/step_00000003";
  ASSERT_TRUE(fs::exists(ck + "/manifest.json"));
  EXPECT_TRUE(fs::exists(run_dir + "/ckpt/step_00000002/manifest.json"));

  // tread_sample: bad arguments.
  expect_clean_error(tool("launch/tread_sample", "--checkpoint " + ck + " --out x.h5", dir), {"--seeds"});
  expect_clean_error(tool("launch/tread_sample", "--checkpoint " + ck + " --seeds 0-3 --out x.jpg", dir), {"x.jpg"});
  expect_clean_error(tool("launch/tread_sample", "--checkpoint " + ck + " --seeds 0-3 --classes 0-2 --steps 3 --out " +
                              dir + "/x.h5",
                          dir),
                     {"classes"});
  // A missing checkpoint folder.
  expect_clean_error(
      tool("launch/tread_sample", "--checkpoint " + run_dir + "/ckpt/step_00000099 --seeds 0-3 --out " + dir + "/x.h5", dir),
      {"step_00000099"});
  // tread_export: a folder without its manifest.
  const std::string incomplete = run_dir + "/ckpt/step_00000002";
  fs::remove(incomplete + "/manifest.json");
  expect_clean_error(tool("launch/tread_export", "--checkpoint " + incomplete + " --out " + dir + "/w.safetensors", dir),
                     {"manifest.json"});
  EXPECT_FALSE(fs::exists(dir + "/w.safetensors"));
  expect_clean_error(tool("launch/tread_export", "--checkpoint " + ck + " --out " + dir + "/w.safetensors --weights best", dir),
                     {"best"});
  // A corrupted rank file: named by tread_sample and tread_export.
  const std::string rank = ck + "/rank_00000.safetensors";
  std::string bytes = read_text(rank);
  ASSERT_GT(bytes.size(), 64u);
  bytes[bytes.size() - 5] = static_cast<char>(bytes[bytes.size() - 5] ^ 1);
  write_text(rank, bytes);
  expect_clean_error(tool("launch/tread_sample", "--checkpoint " + ck + " --seeds 0-3 --out " + dir + "/x.h5", dir), {rank});
  expect_clean_error(tool("launch/tread_export", "--checkpoint " + ck + " --out " + dir + "/w.safetensors", dir), {rank});
  EXPECT_FALSE(fs::exists(dir + "/x.h5"));
  // tread_sample with --weights that do not fit the config.
  write_text(dir + "/bad.safetensors", "not safetensors at all");
  expect_clean_error(tool("launch/tread_sample",
                          "--config " + cfg + " --weights " + dir + "/bad.safetensors --seeds 0-1 --out " + dir + "/y.h5", dir),
                     {dir + "/bad.safetensors"});
}

}  // namespace
