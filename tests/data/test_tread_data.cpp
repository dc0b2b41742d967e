// The tread_data executable: help, exit codes, import-mnist, inspect and validate on good and
// bad files; every failure is exit code 1 with a message naming the file (never a crash).
#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <vector>

#include "data/hdf5_check.h"
#include "test_util.h"

namespace {

using nt::H5Id;
using nt::test::exe;
using nt::test::run_command;

const std::string kMnist = std::string(NT_SOURCE_DIR) + "/data/mnist10k/";

int tool(const std::string& args, std::string* out) {
  return run_command(exe("data/tread_data") + " " + args, out);
}

#define EXPECT_CONTAINS(text, part)                         \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "'" << (text) << "' lacks '" << (part) << "'"

// A float32 latents file [n,1,2,2] with the given values (n*4 of them), labels and 10 classes.
void write_small(const std::string& path, const std::vector<float>& values,
                 const std::vector<int64_t>& labels) {
  nt::h5_silence();
  H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid());
  const hsize_t dims[4] = {hsize_t(labels.size()), 1, 2, 2};
  ASSERT_EQ(values.size(), labels.size() * 4);
  H5Id space(H5Screate_simple(4, dims, nullptr));
  H5Id d(H5Dcreate2(file.get(), "latents", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                    H5P_DEFAULT));
  H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  H5Id lspace(H5Screate_simple(1, dims, nullptr));
  H5Id l(H5Dcreate2(file.get(), "labels", H5T_STD_I64LE, lspace.get(), H5P_DEFAULT, H5P_DEFAULT,
                    H5P_DEFAULT));
  H5Dwrite(l.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data());
  H5Id aspace(H5Screate(H5S_SCALAR));
  H5Id a(H5Acreate2(file.get(), "num_classes", H5T_STD_I64LE, aspace.get(), H5P_DEFAULT,
                    H5P_DEFAULT));
  const int64_t k = 10;
  H5Awrite(a.get(), H5T_NATIVE_INT64, &k);
}

TEST(TreadData, HelpAndUsageErrors) {
  std::string out;
  EXPECT_EQ(tool("--help", &out), 0);
  EXPECT_CONTAINS(out, "import-mnist");
  EXPECT_CONTAINS(out, "validate");
  for (const char* cmd : {"import-mnist", "inspect", "validate"}) {
    EXPECT_EQ(tool(std::string(cmd) + " --help", &out), 0) << cmd;
    EXPECT_CONTAINS(out, std::string("usage: tread_data ") + cmd);
  }
  EXPECT_EQ(tool("", &out), 1);
  EXPECT_CONTAINS(out, "usage:");
  EXPECT_EQ(tool("frobnicate", &out), 1);
  EXPECT_CONTAINS(out, "unknown command 'frobnicate'");
  EXPECT_EQ(tool("import-mnist --images a --labels b", &out), 1);
  EXPECT_CONTAINS(out, "--out");
  EXPECT_EQ(tool("inspect --bogus x.h5", &out), 1);
  EXPECT_CONTAINS(out, "bogus");
  EXPECT_EQ(tool("validate", &out), 1);
  EXPECT_CONTAINS(out, "at least one FILE");
}

TEST(TreadData, ImportInspectValidateMnist) {
  const std::string dir = nt::test::scratch_dir();
  const std::string h5 = dir + "/mnist16.h5";
  std::string out;
  ASSERT_EQ(tool("import-mnist --images " + kMnist + "images-idx3-ubyte.gz --labels " + kMnist +
                     "labels-idx1-ubyte.gz --out " + h5 + " --size 16",
                 &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "10000 samples, [1,16,16] float32");

  ASSERT_EQ(tool("inspect " + h5, &out), 0) << out;
  EXPECT_CONTAINS(out, "samples      10000");
  EXPECT_CONTAINS(out, "/latents [10000,1,16,16]");
  EXPECT_CONTAINS(out, "latent space pixels");
  EXPECT_CONTAINS(out, "downsampled to 16x16");
  EXPECT_CONTAINS(out, "0:1001 1:1127 2:991 3:1032 4:980 5:863 6:1014 7:1070 8:944 9:978");
  EXPECT_CONTAINS(out, "channel 0: mean -0.");  // mostly background (-1)

  ASSERT_EQ(tool("validate " + h5, &out), 0) << out;
  EXPECT_CONTAINS(out, "ok: 10000 samples");
  ASSERT_EQ(tool("validate " + h5 + " " + h5, &out), 0) << out;
  EXPECT_CONTAINS(out, "ok: 20000 samples in 2 files");

  EXPECT_EQ(tool("import-mnist --images " + kMnist + "images-idx3-ubyte.gz --labels " + kMnist +
                     "labels-idx1-ubyte.gz --out " + dir + "/x.h5 --size 12",
                 &out),
            1);
  EXPECT_CONTAINS(out, "size 12");
  EXPECT_EQ(tool("import-mnist --images " + kMnist + "labels-idx1-ubyte.gz --labels " + kMnist +
                     "images-idx3-ubyte.gz --out " + dir + "/x.h5",
                 &out),
            1);
  EXPECT_CONTAINS(out, "magic");
}

TEST(TreadData, ValidateFindsBadValuesAndLabels) {
  const std::string dir = nt::test::scratch_dir();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> values(6 * 4, 0.5f);
  write_small(dir + "/good.h5", values, {0, 1, 2, 3, 4, 5});
  values[2 * 4 + 1] = nan;
  values[5 * 4 + 3] = -inf;
  write_small(dir + "/nan.h5", values, {0, 1, 2, 3, 4, 5});
  write_small(dir + "/labels.h5", std::vector<float>(6 * 4, 0.5f), {0, 1, 12, 3, -2, 5});
  std::string out;

  EXPECT_EQ(tool("validate " + dir + "/good.h5", &out), 0) << out;
  EXPECT_CONTAINS(out, "ok: 6 samples");

  EXPECT_EQ(tool("validate " + dir + "/good.h5 " + dir + "/nan.h5", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/nan.h5'");
  EXPECT_CONTAINS(out, "2 sample(s) with NaN or Inf in /latents, at indices 2 5");

  EXPECT_EQ(tool("validate " + dir + "/labels.h5", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/labels.h5'");
  EXPECT_CONTAINS(out, "at indices 2 (label 12) 4 (label -2)");

  EXPECT_EQ(tool("inspect " + dir + "/labels.h5", &out), 1);  // reading stops at a bad label
  EXPECT_CONTAINS(out, "label 12 of sample 2");
}

TEST(TreadData, MissingBrokenAndMismatchedFiles) {
  const std::string dir = nt::test::scratch_dir();
  std::string out;
  EXPECT_EQ(tool("validate " + dir + "/none.h5", &out), 1);
  EXPECT_CONTAINS(out, "data file '" + dir + "/none.h5' not found");
  EXPECT_EQ(tool("inspect " + dir + "/none.h5", &out), 1);
  EXPECT_CONTAINS(out, "not found");
  {
    std::ofstream(dir + "/text.h5") << "hello\n";
  }
  EXPECT_EQ(tool("validate " + dir + "/text.h5", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/text.h5' is not an HDF5 file");
  EXPECT_EQ(tool("inspect " + dir + "/text.h5", &out), 1);
  EXPECT_CONTAINS(out, "is not an HDF5 file");
  {  // a damaged HDF5 file: our one-line message, no HDF5 error-stack dump
    write_small(dir + "/whole.h5", std::vector<float>(400, 0.f), std::vector<int64_t>(100, 1));
    std::ifstream in(dir + "/whole.h5", std::ios::binary);
    std::string head(1000, '\0');
    in.read(head.data(), head.size());
    std::ofstream(dir + "/cut.h5", std::ios::binary) << head;
  }
  EXPECT_EQ(tool("validate " + dir + "/cut.h5", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/cut.h5'");
  EXPECT_CONTAINS(out, "HDF5 call H5Fopen(");
  EXPECT_EQ(out.find("HDF5-DIAG"), std::string::npos) << out;

  // Same per-file content, different sample shape: each validates alone, not together.
  write_small(dir + "/a.h5", std::vector<float>(8, 0.f), {1, 2});
  {
    nt::h5_silence();
    H5Id file(H5Fcreate((dir + "/b.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    const hsize_t dims[4] = {2, 2, 2, 2};
    std::vector<float> v(16, 0.f);
    std::vector<int64_t> l = {1, 2};
    H5Id space(H5Screate_simple(4, dims, nullptr));
    H5Id d(H5Dcreate2(file.get(), "latents", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                      H5P_DEFAULT, H5P_DEFAULT));
    H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Id lspace(H5Screate_simple(1, dims, nullptr));
    H5Id ld(H5Dcreate2(file.get(), "labels", H5T_STD_I64LE, lspace.get(), H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT));
    H5Dwrite(ld.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, l.data());
    H5Id aspace(H5Screate(H5S_SCALAR));
    H5Id a(H5Acreate2(file.get(), "num_classes", H5T_STD_I64LE, aspace.get(), H5P_DEFAULT,
                      H5P_DEFAULT));
    const int64_t k = 10;
    H5Awrite(a.get(), H5T_NATIVE_INT64, &k);
  }
  EXPECT_EQ(tool("validate " + dir + "/b.h5", &out), 0) << out;
  EXPECT_EQ(tool("validate " + dir + "/a.h5 " + dir + "/b.h5", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/a.h5' and '" + dir + "/b.h5' differ in sample shape");
  EXPECT_EQ(tool("inspect " + dir + "/a.h5 " + dir + "/b.h5", &out), 1);
  EXPECT_CONTAINS(out, "differ in sample shape");
}

}  // namespace
