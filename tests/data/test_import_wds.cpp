// tread_data import-wds: the reference's WebDataset shards (tar files of <key>.latent.npy and
// <key>.cls members) written by Python's tarfile in its default (pax) and GNU formats, with long
// keys, extra members and a shard the --match filter leaves out -> the same values and classes in
// shard order; --prescaled keeps the values, marked prescaled, so that training reads the shards'
// values bit for bit; bad shards end with exit code 1, a message naming the shard and the sample, and no file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "data/latent_dataset.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using nt::test::exe;
using nt::test::run_command;

int tool(const std::string& args, std::string* out) {
  return run_command(exe("data/tread_data") + " " + args, out);
}

// The shards, made with the Python standard library (tarfile, struct): sample i holds a float16
// latent [2, 3, 4] whose element j is i * 0.5 + j * 0.25 - 3 (exact in float16) and class i % 4;
// or, in the float32 "scaled" shard, 0.18215 times that.
const char* kShardWriter = R"PY(
import io, os, struct, sys, tarfile
out = sys.argv[1]

def npy(descr, shape, data):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, ', '.join(map(str, shape)))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + ' ' * (pad % 64) + '\n'
    return b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header.encode('latin1') + data

C, H, W = 2, 3, 4
def latent(i, fmt='<e', descr='<f2', scale=1.0, shape=(C, H, W)):
    n = shape[0] * shape[1] * shape[2]
    return npy(descr, shape, b''.join(struct.pack(fmt, scale * (i * 0.5 + j * 0.25 - 3)) for j in range(n)))

def shard(name, members, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(os.path.join(out, name), 'w', format=fmt) as t:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))

def sample(key, i, **kw):
    return [(key + '.latent.npy', latent(i, **kw)), (key + '.cls', str(i % 4).encode())]

long_key = 'deep/' + 'k' * 120
os.makedirs(os.path.join(out, 'wds'))
shard('wds/ImageNetTrain-train-000000.tar',
      sample('a/000', 0) + sample('a/001', 1) + [('a/001.json', b'{}')] + sample(long_key + '2', 2) + sample('a/003', 3))
shard('wds/ImageNetTrain-train-000001.tar', sample(long_key + '4', 4) + sample('b/005', 5), tarfile.GNU_FORMAT)
shard('wds/ImageNetVal-000000.tar', sample('v/000', 7))
shard('scaled.tar', sum((sample('s%d' % i, i, fmt='<f', descr='<f4', scale=0.18215) for i in range(6)), []))
# bad shards
shard('nocls.tar', sample('x0', 0) + [('x1.latent.npy', latent(1))])
shard('shape.tar', sample('x0', 0) + sample('x1', 1, shape=(2, 3, 5)))
shard('label.tar', [('x0.latent.npy', latent(0)), ('x0.cls', b'cat')])
shard('twice.tar', sample('x0', 0) + [('x0.cls', b'1')])
shard('rank.tar', [('x0.latent.npy', npy('<f2', (24,), b'\0' * 48)), ('x0.cls', b'0')])
whole = open(os.path.join(out, 'wds/ImageNetTrain-train-000000.tar'), 'rb').read()
open(os.path.join(out, 'cut.tar'), 'wb').write(whole[:1500])
import gzip
open(os.path.join(out, 'packed.tar'), 'wb').write(gzip.compress(whole))
)PY";

std::string write_shards(const std::string& dir) {
  std::ofstream(dir + "/make_shards.py") << kShardWriter;
  std::string out;
  EXPECT_EQ(run_command("python3 " + dir + "/make_shards.py " + dir, &out), 0) << out;
  return dir;
}

float value(int64_t i, int64_t j) { return static_cast<float>(i * 0.5 + j * 0.25 - 3); }

TEST(ImportWds, TheReferencesShardsInOrder) {
  const std::string dir = write_shards(nt::test::scratch_dir());
  std::string out;
  ASSERT_EQ(tool("import-wds --shards " + dir + "/wds --match ImageNetTrain-train --out " + dir +
                     "/a.h5 --latent-space sd-vae-ft-ema --num-classes 10",
                 &out),
            0)
      << out;
  EXPECT_CONTAINS(out, "6 samples from 2 shard(s), /latents [6,2,3,4] float16, 10 classes, 1 other member(s) ignored");
  nt::LatentDataset ds({dir + "/a.h5"});
  EXPECT_EQ(ds.info().size, 6);
  EXPECT_EQ(ds.info().dtype, "float16");
  EXPECT_EQ(ds.info().latent_space, "sd-vae-ft-ema");
  EXPECT_EQ(ds.info().num_classes, 10);
  EXPECT_CONTAINS(ds.info().source, "2 WebDataset shard(s)");
  at::Tensor x, y;
  ds.read({0, 1, 2, 3, 4, 5}, 0, &x, &y);
  const int64_t keys[] = {0, 1, 2, 3, 4, 5};  // the Val shard (sample 7) is not matched
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(y[i].item<int64_t>(), keys[i] % 4) << i;
    for (int64_t j = 0; j < 24; ++j)
      ASSERT_EQ(x[i].reshape({-1})[j].item<float>(), value(keys[i], j)) << "sample " << i << " element " << j;
  }
  // Shards named one by one: the same file, in the order given.
  ASSERT_EQ(tool("import-wds --shards " + dir + "/wds/ImageNetTrain-train-000001.tar " + dir +
                     "/wds/ImageNetTrain-train-000000.tar --out " + dir + "/b.h5",
                 &out),
            0)
      << out;
  nt::LatentDataset b({dir + "/b.h5"});
  b.read({0, 2}, 0, &x, &y);
  EXPECT_EQ(x[0].reshape({-1})[0].item<float>(), value(4, 0));
  EXPECT_EQ(x[1].reshape({-1})[0].item<float>(), value(0, 0));
  EXPECT_EQ(b.info().num_classes, 4);  // the largest class + 1
}

// The reference trains on latents times the VAE's scaling factor: --prescaled stores them as they
// are with prescaled = 1 and scale_factor 0.18215, so that the loader hands training the shards'
// values bit for bit, and samples decode as x / 0.18215.
TEST(ImportWds, PrescaledLatentsTrainOnTheSameValues) {
  const std::string dir = write_shards(nt::test::scratch_dir());
  std::string out;
  ASSERT_EQ(tool("import-wds --shards " + dir + "/scaled.tar --out " + dir + "/s.h5 --latent-space sd-vae-ft-ema "
                 "--scale-factor 0.18215 --prescaled",
                 &out),
            0)
      << out;
  nt::LatentDataset ds({dir + "/s.h5"});
  EXPECT_EQ(ds.info().dtype, "float32");
  EXPECT_DOUBLE_EQ(ds.info().scale_factor, 0.18215);
  EXPECT_TRUE(ds.info().prescaled);
  at::Tensor x, y;
  ds.read({0, 1, 2, 3, 4, 5}, 0, &x, &y);  // x as the shards hold it
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 24; ++j) {
      const float v = static_cast<float>(0.18215 * (i * 0.5 + j * 0.25 - 3));  // what the shard holds
      ASSERT_EQ(x[i].reshape({-1})[j].item<float>(), v) << "sample " << i << " element " << j;
    }
  ASSERT_EQ(tool("inspect " + dir + "/s.h5", &out), 0) << out;
  EXPECT_CONTAINS(out, "x = v (prescaled); samples decode as x / 0.18215");
  // Without --prescaled the values are stored as they are (and scaled again by the loader).
  ASSERT_EQ(tool("import-wds --shards " + dir + "/scaled.tar --out " + dir + "/t.h5 --scale-factor 0.18215", &out), 0)
      << out;
  nt::LatentDataset t({dir + "/t.h5"});
  t.read({1}, 0, &x, &y);
  EXPECT_NEAR(x[0].reshape({-1})[1].item<float>(), 0.18215 * 0.18215 * value(1, 1), 1e-6);
}

TEST(ImportWds, BadShardsNameTheShardAndTheSample) {
  const std::string dir = write_shards(nt::test::scratch_dir());
  struct Case {
    std::string shards, message;
  };
  const Case cases[] = {
      {"nocls.tar", "nocls.tar', sample 'x1' has no .cls member"},
      {"shape.tar", "shape.tar', sample 'x1': a latent of shape (2, 3, 5)"},
      {"label.tar", "label.tar', sample 'x0' (.cls): the class 'cat' is not an integer"},
      {"twice.tar", "twice.tar', sample 'x0' has two .cls members"},
      {"rank.tar", "rank.tar', sample 'x0': a latent has shape (24,); expected (C, H, W)"},
      {"cut.tar", "cut.tar' is truncated"},
      {"packed.tar", "packed.tar' is gzip-compressed; decompress it first"},
      {"missing.tar", "shard '" + dir + "/missing.tar' not found"},
      {"wds --match Nothing", "holds no .tar shard whose name contains 'Nothing'"},
  };
  for (const Case& c : cases) {
    std::string out;
    EXPECT_EQ(tool("import-wds --shards " + dir + "/" + c.shards + " --out " + dir + "/bad.h5", &out), 1) << c.shards;
    EXPECT_CONTAINS(out, c.message);
    EXPECT_FALSE(fs::exists(dir + "/bad.h5")) << c.shards;
    EXPECT_FALSE(fs::exists(dir + "/bad.h5.tmp")) << c.shards;
  }
  std::string out;
  EXPECT_EQ(tool("import-wds --shards " + dir + "/wds --match Train --out " + dir + "/bad.h5 --num-classes 3", &out), 1);
  EXPECT_CONTAINS(out, "sample 'a/003': class 3 is outside [0, num_classes=3)");
}

}  // namespace
