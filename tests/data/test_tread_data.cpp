// The tread_data executable: help, exit codes, import-mnist, inspect and validate on good and
// bad files; every failure is exit code 1 with a message naming the file (never a crash).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "data/hdf5_check.h"
#include "data/latent_dataset.h"
#include "test_util.h"

namespace {

using nt::H5Id;
using nt::test::exe;
using nt::test::run_command;

const std::string kMnist = std::string(NT_SOURCE_DIR) + "/data/mnist10k/";

int tool(const std::string& args, std::string* out) {
  return run_command(exe("data/tread_data") + " " + args, out);
}


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
  for (const char* cmd : {"import-mnist", "inspect", "validate", "import-npy", "bench"}) {
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

// ---- import-npy ------------------------------------------------------------------------------

// Writes the .npy/.npz test files with the Python standard library only (struct, zipfile), as
// numpy lays them out: magic, version, little-endian header length, the header dict padded
// with spaces to a multiple of 64 bytes and ended by a newline, then the C-order data.
// Sample i, element j of the data holds i * 0.5 + j * 0.25 - 3 (exact in float16).
const char* kNpyWriter = R"PY(
import struct, sys, zipfile, os
out = sys.argv[1]

def npy(descr, shape, data, version=1, fortran=False):
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, 'True' if fortran else 'False',
        ''.join('%d, ' % d for d in shape).rstrip(' ') if len(shape) != 1 else '%d,' % shape[0])
    pre = 10 if version == 1 else 12
    pad = 64 - (pre + len(header) + 1) % 64
    header = header + ' ' * (pad % 64) + '\n'
    head = b'\x93NUMPY' + bytes([version, 0])
    head += struct.pack('<H', len(header)) if version == 1 else struct.pack('<I', len(header))
    return head + header.encode('latin1') + data

def values(n, row, fmt):
    return b''.join(struct.pack(fmt, i * 0.5 + j * 0.25 - 3) for i in range(n) for j in range(row))

def ints(labels, fmt):
    return b''.join(struct.pack(fmt, v) for v in labels)

def save(name, blob):
    with open(os.path.join(out, name), 'wb') as f:
        f.write(blob)

def savez(name, members, compressed):
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(os.path.join(out, name), 'w', compression=mode) as z:
        for key, blob in members:
            z.writestr(key + '.npy', blob)

N, C, H, W = 6, 2, 3, 4
row = C * H * W
labels = [i % 4 for i in range(N)]
lat32 = npy('<f4', (N, C, H, W), values(N, row, '<f'))
lat16 = npy('<f2', (N, C, H, W), values(N, row, '<e'))
save('lat32.npy', lat32)
save('lat64v2.npy', npy('<f8', (N, C, H, W), values(N, row, '<d'), version=2))
save('lat32be.npy', npy('>f4', (N, C, H, W), values(N, row, '>f'), version=3))
save('lab.npy', npy('<i8', (N,), ints(labels, '<q')))
save('lab_u1.npy', npy('|u1', (N,), ints(labels, '<B')))
savez('stored.npz', [('latents', lat16), ('labels', npy('<i4', (N,), ints(labels, '<i')))], False)
savez('deflated.npz', [('arr_0', lat32), ('arr_1', npy('<i2', (N,), ints(labels, '<h')))], True)
save('moments.npy', npy('<f4', (N, 2 * C, H, W), values(N, 2 * row, '<f')))
# bad inputs
save('fortran.npy', npy('<f4', (N, C, H, W), values(N, row, '<f'), fortran=True))
save('rank3.npy', npy('<f4', (N, C, H * W), values(N, row, '<f')))
save('lab5.npy', npy('<i8', (5,), ints(labels[:5], '<q')))
save('labfloat.npy', npy('<f4', (N,), ints(labels, '<f')))
save('labbig.npy', npy('<i8', (N,), ints([0, 1, 9, 2, -1, 3], '<q')))
save('badmagic.npy', b'NUMPY!' + lat32[6:])
save('cut.npy', lat32[:len(lat32) - 10])
save('complex.npy', npy('<c8', (N,), b'\0' * 8 * N))
savez('onlyone.npz', [('stuff', lat32)], True)
)PY";

std::string write_npy_files(const std::string& dir) {
  std::ofstream(dir + "/make_npy.py") << kNpyWriter;
  std::string out;
  EXPECT_EQ(run_command("python3 " + dir + "/make_npy.py " + dir, &out), 0) << out;
  return dir;
}

// Reads a written dataset back and checks the values against the generator's formula.
void check_imported(const std::string& h5, const std::string& dtype, int64_t classes) {
  nt::LatentDataset ds({h5});
  const nt::DatasetInfo& info = ds.info();
  EXPECT_EQ(info.size, 6);
  EXPECT_EQ(info.channels, 2);
  EXPECT_EQ(info.height, 3);
  EXPECT_EQ(info.width, 4);
  EXPECT_EQ(info.dtype, dtype);
  EXPECT_EQ(info.num_classes, classes);
  EXPECT_EQ(info.read_path, "pread");
  at::Tensor x, y;
  ds.read({0, 1, 2, 3, 4, 5}, 0, &x, &y);
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(y[i].item<int64_t>(), i % 4) << h5;
    for (int64_t j = 0; j < 24; ++j)
      ASSERT_EQ(x[i].reshape({-1})[j].item<float>(), float(i * 0.5 + j * 0.25 - 3))
          << h5 << " sample " << i << " element " << j;
  }
}

TEST(TreadData, ImportNpyAndNpz) {
  const std::string dir = write_npy_files(nt::test::scratch_dir());
  std::string out;
  ASSERT_EQ(tool("import-npy --latents " + dir + "/lat32.npy --labels " + dir +
                     "/lab.npy --out " + dir + "/a.h5 --latent-space sd-vae-ft-ema "
                     "--scale-factor 1 --shift-factor 0",
                 &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "6 samples, /latents [6,2,3,4] float32, 4 classes (the largest label + 1");
  check_imported(dir + "/a.h5", "float32", 4);
  EXPECT_EQ(nt::LatentDataset({dir + "/a.h5"}).info().latent_space, "sd-vae-ft-ema");
  EXPECT_CONTAINS(nt::LatentDataset({dir + "/a.h5"}).info().source, "lat32.npy");

  // float64 (version 2 header) becomes float32; big-endian (version 3) is swapped; uint8 labels.
  ASSERT_EQ(tool("import-npy --latents " + dir + "/lat64v2.npy --labels " + dir +
                     "/lab_u1.npy --out " + dir + "/b.h5 --num-classes 7",
                 &out),
            0)
      << out;
  check_imported(dir + "/b.h5", "float32", 7);
  ASSERT_EQ(tool("import-npy --latents " + dir + "/lat32be.npy --labels " + dir +
                     "/lab.npy --out " + dir + "/c.h5",
                 &out),
            0)
      << out;
  check_imported(dir + "/c.h5", "float32", 4);

  // np.savez (stored members named latents/labels): float16 stays float16.
  ASSERT_EQ(tool("import-npy --latents " + dir + "/stored.npz --out " + dir + "/d.h5", &out), 0)
      << out;
  check_imported(dir + "/d.h5", "float16", 4);
  // np.savez_compressed with positional arrays arr_0, arr_1 (deflated).
  ASSERT_EQ(tool("import-npy --latents " + dir + "/deflated.npz --out " + dir + "/e.h5", &out),
            0)
      << out;
  check_imported(dir + "/e.h5", "float32", 4);
  ASSERT_EQ(tool("import-npy --latents " + dir + "/deflated.npz --latents-key arr_0 --labels " +
                     dir + "/stored.npz --labels-key labels --out " + dir + "/f.h5",
                 &out),
            0)
      << out;
  check_imported(dir + "/f.h5", "float32", 4);

  // Moments: (N, 2C, H, W) -> /moments, samples of C channels.
  ASSERT_EQ(tool("import-npy --moments --latents " + dir + "/moments.npy --labels " + dir +
                     "/lab.npy --out " + dir + "/m.h5 --num-classes 4",
                 &out),
            0)
      << out;
  nt::LatentDataset m({dir + "/m.h5"});
  EXPECT_TRUE(m.info().moments);
  EXPECT_EQ(m.info().channels, 2);  // (N, 2C=4, H, W)
  EXPECT_EQ(tool("validate " + dir + "/m.h5 " + dir + "/a.h5", &out), 1);  // they differ
  EXPECT_EQ(tool("validate " + dir + "/c.h5 " + dir + "/e.h5", &out), 0) << out;
  EXPECT_CONTAINS(out, "ok: 12 samples in 2 files");
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.h5.tmp"));
}

TEST(TreadData, ImportNpyBadInputs) {
  const std::string dir = write_npy_files(nt::test::scratch_dir());
  struct Case {
    std::string args, expect;
  };
  const std::string lab = " --labels " + dir + "/lab.npy";
  const std::vector<Case> cases = {
      {"--latents " + dir + "/fortran.npy" + lab, "Fortran order"},
      {"--latents " + dir + "/rank3.npy" + lab, "expected rank 4"},
      {"--latents " + dir + "/lat32.npy --labels " + dir + "/lab5.npy", "holds 5 labels"},
      {"--latents " + dir + "/lat32.npy --labels " + dir + "/labfloat.npy",
       "labels must be integers"},
      {"--latents " + dir + "/lat32.npy --labels " + dir + "/labbig.npy --num-classes 5",
       "at indices 2 (label 9) 4 (label -1)"},
      {"--latents " + dir + "/badmagic.npy" + lab, "is not a .npy array"},
      {"--latents " + dir + "/cut.npy" + lab, "is truncated"},
      {"--latents " + dir + "/complex.npy" + lab, "dtype '<c8' is not supported"},
      {"--latents " + dir + "/labfloat.npy" + lab, "expected rank 4"},
      {"--latents " + dir + "/lab.npy" + lab, "latents must be floats"},
      {"--latents " + dir + "/none.npy" + lab, "not found"},
      {"--latents " + dir + "/onlyone.npz", "holds only 'stuff'"},
      {"--latents " + dir + "/stored.npz --latents-key nope", "has no array 'nope'"},
      {"--latents " + dir + "/lat32.npy", "--labels is needed"},
      {"--latents " + dir + "/labfloat.npy --labels " + dir + "/lat32.npy --moments",
       "expected rank 4, (N, 2C, H, W)"},
      {"--latents " + dir + "/badmagic.npy.npz" + lab, "not found"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(tool("import-npy " + c.args + " --out " + dir + "/o.h5", &out), 1) << c.args;
    EXPECT_CONTAINS(out, c.expect);
    EXPECT_FALSE(std::filesystem::exists(dir + "/o.h5")) << c.args;
    EXPECT_FALSE(std::filesystem::exists(dir + "/o.h5.tmp")) << c.args;
  }
  std::string out;
  {
    std::ofstream(dir + "/notzip.npz") << "not a zip archive\n";
  }
  EXPECT_EQ(tool("import-npy --latents " + dir + "/notzip.npz --out " + dir + "/o.h5", &out), 1);
  EXPECT_CONTAINS(out, "is not a readable .npz (zip) archive");
}

// ---- bench and bad inputs through the loader ------------------------------------------------

TEST(TreadData, BenchPrintsSamplesPerSecondLast) {
  const std::string dir = nt::test::scratch_dir();
  std::vector<float> values(200 * 4);
  std::vector<int64_t> labels(200);
  for (int i = 0; i < 200; ++i) labels[i] = i % 10;
  write_small(dir + "/a.h5", values, labels);
  std::string out;
  ASSERT_EQ(tool("bench " + dir + "/a.h5 --batch 32 --threads 2 --seconds 0.3", &out), 0) << out;
  EXPECT_CONTAINS(out, "read path pread");
  EXPECT_CONTAINS(out, "samples/s, consumer waited");
  const size_t last = out.rfind("samples/s: ");
  ASSERT_NE(last, std::string::npos) << out;
  EXPECT_EQ(out.find('\n', last), out.size() - 1) << "samples/s is not the last line: " << out;
  EXPECT_GT(std::stod(out.substr(last + 11)), 0.0);

  EXPECT_EQ(tool("bench " + dir + "/a.h5 --batch 300 --threads 2 --seconds 1", &out), 1);
  EXPECT_CONTAINS(out, "fewer than one global batch");
  EXPECT_EQ(tool("bench " + dir + "/a.h5 --batch 30 --world 4 --seconds 1", &out), 1);
  EXPECT_CONTAINS(out, "not divisible");
}

TEST(TreadData, BadInputsThroughTheLoaderExitOne) {
  const std::string dir = nt::test::scratch_dir();
  std::string out;
  // A label out of range: the loader's error names the file, the sample and the batch.
  std::vector<int64_t> labels(64, 3);
  labels[17] = 10;
  write_small(dir + "/label.h5", std::vector<float>(64 * 4, 0.5f), labels);
  EXPECT_EQ(tool("bench " + dir + "/label.h5 --batch 64 --threads 2 --seconds 1", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/label.h5'");
  EXPECT_CONTAINS(out, "label 10 of sample 17");
  EXPECT_CONTAINS(out, "data loader: reading global batch 0 of epoch 0");
  // Non-HDF5, missing dataset, wrong rank, truncated: exit 1 naming the file.
  {
    std::ofstream(dir + "/text.h5") << "hello\n";
  }
  EXPECT_EQ(tool("bench " + dir + "/text.h5 --batch 4 --seconds 1", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/text.h5' is not an HDF5 file");
  {
    nt::h5_silence();
    H5Id file(H5Fcreate((dir + "/nolabels.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    const hsize_t dims[4] = {8, 1, 2, 2};
    H5Id space(H5Screate_simple(4, dims, nullptr));
    H5Id d(H5Dcreate2(file.get(), "latents", H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                      H5P_DEFAULT, H5P_DEFAULT));
    H5Id rank2(H5Fcreate((dir + "/rank2.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    H5Id space2(H5Screate_simple(2, dims, nullptr));
    H5Id d2(H5Dcreate2(rank2.get(), "latents", H5T_IEEE_F32LE, space2.get(), H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT));
    H5Id d3(H5Dcreate2(rank2.get(), "labels", H5T_STD_I64LE, space2.get(), H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT));
  }
  EXPECT_EQ(tool("bench " + dir + "/nolabels.h5 --batch 4 --seconds 1", &out), 1);
  EXPECT_CONTAINS(out, "'" + dir + "/nolabels.h5' has no /labels dataset");
  EXPECT_EQ(tool("validate " + dir + "/rank2.h5", &out), 1);
  EXPECT_CONTAINS(out, "/latents has shape [8,1] (rank 2); expected rank 4");
  std::vector<float> v(500 * 4, 0.25f);
  write_small(dir + "/cut.h5", v, std::vector<int64_t>(500, 1));
  std::filesystem::resize_file(dir + "/cut.h5", std::filesystem::file_size(dir + "/cut.h5") - 3000);
  for (const std::string cmd : {"validate", "inspect", "bench --seconds 1"}) {
    EXPECT_EQ(tool(cmd + " " + dir + "/cut.h5", &out), 1) << cmd;
    EXPECT_CONTAINS(out, "'" + dir + "/cut.h5'");
    EXPECT_CONTAINS(out, "truncated");
  }
}

}  // namespace
