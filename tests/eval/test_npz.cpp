// FID statistics files: .npz written by numpy (np.savez stored, np.savez_compressed deflated,
// float64/float32, big-endian), our writer round trip (and numpy reading it back), broken files
// with clear errors, and eval/fid_worker --stats A --ref B (exit codes, last line).
#include "eval/npz.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "eval/frechet.h"
#include "test_util.h"

namespace {

using nt::FeatureStats;
using nt::read_stats_npz;
using nt::write_stats_npz;
namespace fs = std::filesystem;

bool have_numpy() {
  return nt::test::run_command("/usr/bin/python3 -c 'import numpy'") == 0;
}

// Runs a Python snippet (numpy imported as np); a test failure with its output if it fails.
void python(const std::string& dir, const std::string& code) {
  const std::string script = dir + "/script.py";
  nt::test::write_text(script, "import numpy as np\n" + code);
  std::string out;
  ASSERT_EQ(nt::test::run_command("/usr/bin/python3 " + script, &out), 0) << out;
}

// The statistics Python writes: mu[i] = 0.25 i - 1, sigma[i][j] = 1/(1 + |i - j|) + 0.5 [i == j]
// + 0.001 i j (symmetric); D = 6.
const char* kPyStats =
    "D = 6\n"
    "mu = np.arange(D) * 0.25 - 1\n"
    "i, j = np.meshgrid(np.arange(D), np.arange(D), indexing='ij')\n"
    "sigma = 1.0 / (1 + abs(i - j)) + 0.5 * (i == j) + 0.001 * i * j\n";

at::Tensor expected_mu() { return torch::arange(6, torch::kFloat64) * 0.25 - 1; }
at::Tensor expected_sigma() {
  at::Tensor s = torch::empty({6, 6}, torch::kFloat64);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j)
      s[i][j] = 1.0 / (1 + std::abs(i - j)) + 0.5 * (i == j) + 0.001 * i * j;
  return s;
}

std::string error_of(const std::string& path) {
  try {
    read_stats_npz(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Npz, ReadsNumpySavezAndSavezCompressed) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the inputs";
  const std::string dir = nt::test::scratch_dir();
  python(dir, std::string(kPyStats) +
                  "np.savez('" + dir + "/stored.npz', mu=mu, sigma=sigma)\n"
                  "np.savez_compressed('" + dir + "/deflated.npz', sigma=sigma, extra=np.ones(3), mu=mu)\n"
                  "np.savez('" + dir + "/f32.npz', mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))\n"
                  "np.savez_compressed('" + dir + "/big.npz', mu=mu.astype('>f8'), sigma=sigma.astype('>f4'))\n");
  for (const char* name : {"stored", "deflated", "big"}) {
    FeatureStats s = read_stats_npz(dir + "/" + name + ".npz");
    EXPECT_EQ(s.mu.scalar_type(), torch::kFloat64);
    EXPECT_EQ(s.sigma.scalar_type(), torch::kFloat64);
    EXPECT_TRUE(s.mu.equal(expected_mu())) << name;
    if (std::string(name) == "big")
      EXPECT_TRUE(s.sigma.equal(expected_sigma().to(torch::kFloat32).to(torch::kFloat64))) << name;
    else
      EXPECT_TRUE(s.sigma.equal(expected_sigma())) << name << "\n" << s.sigma;
  }
  FeatureStats f = read_stats_npz(dir + "/f32.npz");
  EXPECT_EQ(f.sigma.scalar_type(), torch::kFloat64);
  EXPECT_TRUE(f.sigma.equal(expected_sigma().to(torch::kFloat32).to(torch::kFloat64)));
  EXPECT_TRUE(f.mu.equal(expected_mu()));  // exactly representable in float32
}

TEST(Npz, WriterRoundTripAndNumpyReadsIt) {
  const std::string dir = nt::test::scratch_dir();
  torch::manual_seed(5);
  FeatureStats s;
  s.mu = torch::randn({17}, torch::kFloat64);
  at::Tensor a = torch::randn({17, 17}, torch::kFloat64);
  s.sigma = at::matmul(a, a.transpose(0, 1));
  const std::string path = dir + "/ours.npz";
  write_stats_npz(path, s);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  FeatureStats back = read_stats_npz(path);
  EXPECT_TRUE(back.mu.equal(s.mu));
  EXPECT_TRUE(back.sigma.equal(s.sigma));
  // float32 input is written as float64.
  FeatureStats s32{s.mu.to(torch::kFloat32), s.sigma.to(torch::kFloat32), 0};
  write_stats_npz(dir + "/ours32.npz", s32);
  EXPECT_TRUE(read_stats_npz(dir + "/ours32.npz").sigma.equal(s.sigma.to(torch::kFloat32).to(torch::kFloat64)));
  EXPECT_THROW(write_stats_npz(dir + "/bad.npz", FeatureStats{s.mu, s.sigma.slice(0, 0, 3), 0}),
               std::invalid_argument);

  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to read our file";
  // numpy reads our archive: same shapes, dtype and values (sums compared to the last bit).
  python(dir, "z = np.load('" + path + "')\n"
              "assert sorted(z.files) == ['mu', 'sigma'], z.files\n"
              "assert z['mu'].dtype == np.float64 and z['mu'].shape == (17,)\n"
              "assert z['sigma'].shape == (17, 17)\n"
              "open('" + dir + "/sums.txt', 'w').write(repr(float(z['sigma'][3, 5])) + ' ' + "
              "repr(float(z['mu'][16])))\n");
  char buf[128];
  std::snprintf(buf, sizeof(buf), "%.17g %.17g", s.sigma[3][5].item<double>(),
                s.mu[16].item<double>());
  double x1, x2, y1, y2;
  ASSERT_EQ(std::sscanf(nt::test::read_text(dir + "/sums.txt").c_str(), "%lf %lf", &x1, &x2), 2);
  ASSERT_EQ(std::sscanf(buf, "%lf %lf", &y1, &y2), 2);
  EXPECT_EQ(x1, y1);
  EXPECT_EQ(x2, y2);
}

TEST(Npz, BrokenFilesNameTheFileAndTheProblem) {
  const std::string dir = nt::test::scratch_dir();
  const std::string missing = dir + "/nowhere.npz";
  EXPECT_CONTAINS(error_of(missing), "nowhere.npz");
  EXPECT_CONTAINS(error_of(missing), "not found");

  nt::test::write_text(dir + "/text.npz", "this is not a zip archive\n");
  EXPECT_CONTAINS(error_of(dir + "/text.npz"), "text.npz");
  EXPECT_CONTAINS(error_of(dir + "/text.npz"), "not a readable .npz");

  // Truncated: our own archive cut in half.
  FeatureStats s{torch::randn({40}, torch::kFloat64), torch::eye(40, torch::kFloat64), 0};
  write_stats_npz(dir + "/whole.npz", s);
  const std::string whole = nt::test::read_text(dir + "/whole.npz");
  nt::test::write_text(dir + "/cut.npz", whole.substr(0, whole.size() / 2));
  EXPECT_CONTAINS(error_of(dir + "/cut.npz"), "cut.npz");

  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed for the other cases";
  python(dir, std::string(kPyStats) +
                  "np.savez('" + dir + "/nosigma.npz', mu=mu)\n"
                  "np.savez('" + dir + "/shape.npz', mu=mu, sigma=sigma[:, :5])\n"
                  "np.savez('" + dir + "/mu2d.npz', mu=sigma, sigma=sigma)\n"
                  "np.savez('" + dir + "/ints.npz', mu=np.arange(6), sigma=sigma)\n"
                  "np.savez_compressed('" + dir + "/deflated.npz', mu=mu, sigma=np.ones((300, 300)))\n");
  EXPECT_CONTAINS(error_of(dir + "/nosigma.npz"), "nosigma.npz");
  EXPECT_CONTAINS(error_of(dir + "/nosigma.npz"), "no array 'sigma'");
  EXPECT_CONTAINS(error_of(dir + "/shape.npz"), "sigma is [6, 5]");
  EXPECT_CONTAINS(error_of(dir + "/mu2d.npz"), "'mu'");
  EXPECT_CONTAINS(error_of(dir + "/mu2d.npz"), "1 dimension");
  EXPECT_CONTAINS(error_of(dir + "/ints.npz"), "float32 or float64");
  // A deflated member whose compressed bytes are damaged: the error names the file.
  std::string bytes = nt::test::read_text(dir + "/deflated.npz");
  const size_t at = bytes.find("sigma.npy");
  ASSERT_NE(at, std::string::npos);
  for (size_t k = at + 60; k < at + 120 && k < bytes.size(); ++k) bytes[k] = char(bytes[k] ^ 0x5a);
  nt::test::write_text(dir + "/damaged.npz", bytes);
  const std::string err = error_of(dir + "/damaged.npz");
  EXPECT_CONTAINS(err, "damaged.npz");
  EXPECT_LACKS(err, "(no error)");
}

// ---- eval/fid_worker ------------------------------------------------------------------------

std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

TEST(FidWorker, StatsAgainstRefPrintsFidLast) {
  const std::string worker = nt::test::exe("eval/fid_worker");
  ASSERT_TRUE(fs::exists(worker)) << worker << " is not built (cmake --build . --target fid_worker)";
  const std::string dir = nt::test::scratch_dir();
  torch::manual_seed(11);
  at::Tensor a = torch::randn({10, 10}, torch::kFloat64), b = torch::randn({10, 4}, torch::kFloat64);
  FeatureStats s1{torch::randn({10}, torch::kFloat64), at::matmul(a, a.transpose(0, 1)), 0};
  FeatureStats s2{torch::zeros({10}, torch::kFloat64), at::matmul(b, b.transpose(0, 1)), 0};
  write_stats_npz(dir + "/a.npz", s1);
  write_stats_npz(dir + "/b.npz", s2);

  auto r = nt::test::tool("eval/fid_worker", "--stats " + dir + "/a.npz --ref " + dir + "/b.npz", dir);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const std::string line = last_line(r.out);
  ASSERT_EQ(line.rfind("fid: ", 0), 0u) << r.out;
  const double fid = std::stod(line.substr(5));
  EXPECT_NEAR(fid, nt::frechet_distance(s1, s2), 1e-6 * std::abs(fid));
  EXPECT_GT(fid, 1.0);

  auto same = nt::test::tool("eval/fid_worker", "--stats " + dir + "/a.npz --ref " + dir + "/a.npz", dir);
  ASSERT_EQ(same.rc, 0) << same.err;
  EXPECT_NEAR(std::stod(last_line(same.out).substr(5)), 0.0, 1e-6);

  auto help = nt::test::tool("eval/fid_worker", "--help", dir);
  EXPECT_EQ(help.rc, 0);
  EXPECT_CONTAINS(help.out, "--stats");
  EXPECT_CONTAINS(help.out, "--ref");
}

TEST(FidWorker, ErrorsExitOneOnStderr) {
  const std::string worker = nt::test::exe("eval/fid_worker");
  ASSERT_TRUE(fs::exists(worker)) << worker << " is not built (cmake --build . --target fid_worker)";
  const std::string dir = nt::test::scratch_dir();
  write_stats_npz(dir + "/a.npz",
                  FeatureStats{torch::zeros({3}, torch::kFloat64), torch::eye(3, torch::kFloat64), 0});
  write_stats_npz(dir + "/d4.npz",
                  FeatureStats{torch::zeros({4}, torch::kFloat64), torch::eye(4, torch::kFloat64), 0});

  auto missing = nt::test::tool("eval/fid_worker", "--stats " + dir + "/a.npz --ref " + dir + "/no.npz", dir);
  EXPECT_EQ(missing.rc, 1);
  EXPECT_CONTAINS(missing.err, "no.npz");
  EXPECT_LACKS(missing.out, "fid:");

  auto dims = nt::test::tool("eval/fid_worker", "--stats " + dir + "/a.npz --ref " + dir + "/d4.npz", dir);
  EXPECT_EQ(dims.rc, 1);
  EXPECT_CONTAINS(dims.err, "D = 3");

  auto none = nt::test::tool("eval/fid_worker", "", dir);
  EXPECT_EQ(none.rc, 1);
  EXPECT_CONTAINS(none.err, "--ref");

  auto unknown = nt::test::tool("eval/fid_worker", "--bogus", dir);
  EXPECT_EQ(unknown.rc, 1);
  EXPECT_CONTAINS(unknown.err, "bogus");

  // The other modes name what is missing: the run folder, the checkpoint, make-ref's data.
  const std::pair<const char*, const char*> modes[] = {
      {"--run-dir runs/x", "runs/x"}, {"--checkpoint ckpt", "ckpt"}, {"--make-ref", "--data"}};
  for (const auto& [mode, named] : modes) {
    auto r = nt::test::tool("eval/fid_worker", mode, dir);
    EXPECT_EQ(r.rc, 1) << mode;
    EXPECT_CONTAINS(r.err, named);
  }
}

}  // namespace
