// PrefetchLoader and the read paths: exactly the sampler's batches in order for any thread
// count and depth; coverage and identical global batches across rank counts; exact resume
// (mid-epoch, across an epoch boundary, on another rank count); moments through the loader;
// several files through pread; pread and H5Dread bit-identical; errors (truncated files, bad
// labels) reaching next() as DataError naming file, dataset and index; no hang on shutdown.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <set>

#include "core/rng.h"
#include "data/global_sampler.h"
#include "data/hdf5_check.h"
#include "data/latent_dataset.h"
#include "data/prefetch_loader.h"
#include "test_util.h"

namespace {

using nt::Batch;
using nt::DataError;
using nt::GlobalSampler;
using nt::H5Id;
using nt::LatentDataset;
using nt::LoaderState;
using nt::PrefetchLoader;


// ---- writing test files ----------------------------------------------------------------------

H5Id half_type() {
  H5Id t(H5Tcopy(H5T_IEEE_F32LE));
  H5Tset_fields(t.get(), 15, 10, 5, 0, 10);
  H5Tset_precision(t.get(), 16);
  H5Tset_size(t.get(), 2);
  H5Tset_ebias(t.get(), 15);
  return t;
}

struct File {
  std::string name = "latents";          // or "moments"
  std::vector<hsize_t> dims;              // [N,C,H,W]
  std::vector<float> values;              // float32 data (dtype float32)
  std::vector<uint16_t> halves;           // float16 bit patterns (dtype float16)
  std::vector<int64_t> labels;
  hid_t label_type = H5T_STD_I64LE;       // stored label type
  bool chunked = false;                   // chunked + gzip instead of contiguous
  int64_t num_classes = 10;
};

void write(const std::string& path, const File& f) {
  nt::h5_silence();
  H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  ASSERT_TRUE(file.valid()) << path;
  H5Id space(H5Screate_simple(4, f.dims.data(), nullptr));
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (f.chunked) {
    const hsize_t chunk[4] = {3, f.dims[1], f.dims[2], f.dims[3]};
    H5Pset_chunk(dcpl.get(), 4, chunk);
    H5Pset_deflate(dcpl.get(), 4);
  }
  const bool half = !f.halves.empty();
  H5Id type = half ? half_type() : H5Id(H5Tcopy(H5T_IEEE_F32LE));
  H5Id d(H5Dcreate2(file.get(), f.name.c_str(), type.get(), space.get(), H5P_DEFAULT, dcpl.get(),
                    H5P_DEFAULT));
  ASSERT_TRUE(d.valid());
  if (half)
    ASSERT_GE(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, f.halves.data()), 0);
  else
    ASSERT_GE(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, f.values.data()),
              0);
  const hsize_t n = f.labels.size();
  H5Id lspace(H5Screate_simple(1, &n, nullptr));
  H5Id lcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (f.chunked) {
    const hsize_t chunk = 4;
    H5Pset_chunk(lcpl.get(), 1, &chunk);
    H5Pset_deflate(lcpl.get(), 4);
  }
  H5Id l(H5Dcreate2(file.get(), "labels", f.label_type, lspace.get(), H5P_DEFAULT, lcpl.get(),
                    H5P_DEFAULT));
  ASSERT_GE(H5Dwrite(l.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, f.labels.data()),
            0);
  H5Id aspace(H5Screate(H5S_SCALAR));
  H5Id a(H5Acreate2(file.get(), "num_classes", H5T_STD_I64LE, aspace.get(), H5P_DEFAULT,
                    H5P_DEFAULT));
  H5Awrite(a.get(), H5T_NATIVE_INT64, &f.num_classes);
}

// n samples [c,h,w] whose values encode (first + i, j): every sample is distinct.
File indexed(int64_t n, int c, int h, int w, int64_t first = 0) {
  File f;
  f.dims = {hsize_t(n), hsize_t(c), hsize_t(h), hsize_t(w)};
  const int64_t row = int64_t(c) * h * w;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < row; ++j) f.values.push_back(float((first + i) * 1000 + j));
    f.labels.push_back((first + i) % 10);
  }
  return f;
}

std::string make_file(const std::string& name, const File& f) {
  const std::string path = nt::test::scratch_dir() + "/" + name;
  write(path, f);
  return path;
}

uint64_t seed_of(int64_t epoch) { return nt::mix_seed(7, static_cast<uint64_t>(epoch)); }

// The batches a reference computes with the sampler and a synchronous read.
struct Ref {
  at::Tensor x, y;
  LoaderState at, after;
};
std::vector<Ref> reference(const LatentDataset& ds, const GlobalSampler& s, LoaderState st,
                           int count) {
  std::vector<Ref> out;
  for (int k = 0; k < count; ++k) {
    Ref r;
    r.at = st;
    ds.read(s.indices(st), seed_of(st.epoch), &r.x, &r.y);
    st = s.next(st);
    r.after = st;
    out.push_back(r);
  }
  return out;
}

std::vector<Batch> take(PrefetchLoader& loader, int count) {
  std::vector<Batch> out;
  for (int k = 0; k < count; ++k) out.push_back(loader.next());
  return out;
}

template <typename F>
std::string data_error(F&& f) {
  return nt::test::thrown_message<DataError>(std::forward<F>(f));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- order and thread independence -----------------------------------------------------------

TEST(PrefetchLoader, YieldsTheSamplersBatchesInOrderForAnyThreadsAndDepth) {
  const std::string path = make_file("a.h5", indexed(103, 2, 3, 3));
  LatentDataset ds({path});
  EXPECT_EQ(ds.info().read_path, "pread");
  GlobalSampler sampler(103, 12, 5);  // 8 batches per epoch: 20 batches cross two boundaries
  const std::vector<Ref> ref = reference(ds, sampler, {}, 20);
  for (int threads : {1, 2, 4}) {
    for (int depth : {1, 3}) {
      PrefetchLoader loader(ds, sampler, {}, threads, depth, seed_of, /*pin_memory=*/true);
      EXPECT_EQ(loader.pinned(), at::globalContext().hasCUDA());
      for (int k = 0; k < 20; ++k) {
        Batch b = loader.next();
        ASSERT_EQ(b.epoch, ref[k].at.epoch) << threads << "/" << depth << " batch " << k;
        ASSERT_EQ(b.batch, ref[k].at.batch);
        ASSERT_EQ(b.state.epoch, ref[k].after.epoch);
        ASSERT_EQ(b.state.batch, ref[k].after.batch);
        ASSERT_TRUE(at::equal(b.x, ref[k].x)) << threads << "/" << depth << " batch " << k;
        ASSERT_TRUE(at::equal(b.y, ref[k].y));
        ASSERT_GE(b.wait_seconds, 0.0);
      }
    }
  }
  EXPECT_EQ(ref[7].after.epoch, 1);  // the boundary really was crossed
  EXPECT_EQ(ref[7].after.batch, 0);
}

TEST(PrefetchLoader, RejectsBadArguments) {
  const std::string path = make_file("a.h5", indexed(20, 1, 2, 2));
  LatentDataset ds({path});
  GlobalSampler sampler(20, 4, 1);
  EXPECT_THROW(PrefetchLoader(ds, sampler, {}, 0, 2, seed_of, false), std::invalid_argument);
  EXPECT_THROW(PrefetchLoader(ds, sampler, {}, 1, 0, seed_of, false), std::invalid_argument);
  EXPECT_THROW(PrefetchLoader(ds, sampler, LoaderState{0, 5}, 1, 2, seed_of, false),
               std::invalid_argument);  // 5 batches per epoch: batch 5 does not exist
}

// ---- ranks -----------------------------------------------------------------------------------

TEST(PrefetchLoader, RanksCoverEachEpochDisjointlyAndCompletely) {
  // Labels hold the sample index (num_classes = N) so y names the samples read.
  File f = indexed(50, 1, 2, 2);
  for (int64_t i = 0; i < 50; ++i) f.labels[i] = i;
  f.num_classes = 50;
  LatentDataset ds({make_file("a.h5", f)});
  const int64_t B = 12;  // 4 batches per epoch, 48 of 50 samples used
  for (int world = 1; world <= 4; ++world) {
    if (B % world) continue;
    std::set<int64_t> seen;
    int64_t count = 0;
    for (int rank = 0; rank < world; ++rank) {
      GlobalSampler s(50, B, 3, rank, world);
      PrefetchLoader loader(ds, s, {}, 2, 2, seed_of, false);
      for (int k = 0; k < 4; ++k) {
        Batch b = loader.next();
        ASSERT_EQ(b.epoch, 0);
        ASSERT_EQ(b.y.numel(), B / world);
        for (int64_t i = 0; i < b.y.numel(); ++i) {
          seen.insert(b.y[i].item<int64_t>());
          ++count;
        }
      }
    }
    EXPECT_EQ(count, 48) << "W=" << world;
    EXPECT_EQ(seen.size(), 48u) << "W=" << world << ": ranks overlap";
    // The two unused samples are the last two of the epoch's permutation.
    const std::vector<int64_t>& perm = GlobalSampler(50, B, 3).permutation(0);
    EXPECT_EQ(seen.count(perm[48]) + seen.count(perm[49]), 0u);
  }
}

// Rank parts of W ranks, concatenated per step, from `start`.
std::vector<std::pair<at::Tensor, at::Tensor>> concatenated(const LatentDataset& ds, int64_t B,
                                                            int world, LoaderState start,
                                                            int steps, LoaderState* end) {
  std::vector<std::vector<Batch>> parts;
  for (int rank = 0; rank < world; ++rank) {
    GlobalSampler s(ds.info().size, B, 11, rank, world);
    PrefetchLoader loader(ds, s, start, 1 + rank % 3, 2, seed_of, false);
    parts.push_back(take(loader, steps));
  }
  std::vector<std::pair<at::Tensor, at::Tensor>> out;
  for (int k = 0; k < steps; ++k) {
    std::vector<at::Tensor> xs, ys;
    for (int rank = 0; rank < world; ++rank) {
      xs.push_back(parts[rank][k].x);
      ys.push_back(parts[rank][k].y);
      EXPECT_EQ(parts[rank][k].state.epoch, parts[0][k].state.epoch);
      EXPECT_EQ(parts[rank][k].state.batch, parts[0][k].state.batch);
    }
    out.emplace_back(at::cat(xs), at::cat(ys));
  }
  if (end) *end = parts[0].back().state;
  return out;
}

TEST(PrefetchLoader, SameGlobalBatchesForOneTwoAndThreeRanks) {
  LatentDataset ds({make_file("a.h5", indexed(75, 2, 2, 2))});
  const int64_t B = 12;  // 6 batches per epoch; 9 steps cross a boundary
  auto one = concatenated(ds, B, 1, {}, 9, nullptr);
  for (int world : {2, 3}) {
    auto many = concatenated(ds, B, world, {}, 9, nullptr);
    for (int k = 0; k < 9; ++k) {
      EXPECT_TRUE(at::equal(many[k].first, one[k].first)) << "W=" << world << " step " << k;
      EXPECT_TRUE(at::equal(many[k].second, one[k].second)) << "W=" << world << " step " << k;
    }
  }
}

// ---- resume ----------------------------------------------------------------------------------

TEST(PrefetchLoader, ResumesExactlyMidEpochAndAcrossAnEpochBoundary) {
  LatentDataset ds({make_file("a.h5", indexed(40, 1, 3, 3))});
  GlobalSampler s(40, 8, 2);  // 5 batches per epoch
  std::vector<Batch> full;
  {
    PrefetchLoader loader(ds, s, {}, 3, 3, seed_of, false);
    full = take(loader, 14);
  }
  // Resume after batch k: 1 (mid-epoch), 4 (its state is the next epoch's start), 6.
  for (int k : {1, 4, 6}) {
    if (k == 4) {
      EXPECT_EQ(full[k].state.epoch, 1);
      EXPECT_EQ(full[k].state.batch, 0);
    }
    PrefetchLoader resumed(ds, s, full[k].state, 2, 1, seed_of, false);
    for (int j = k + 1; j < 14; ++j) {
      Batch b = resumed.next();
      ASSERT_EQ(b.epoch, full[j].epoch) << "resumed after " << k;
      ASSERT_EQ(b.batch, full[j].batch);
      ASSERT_TRUE(at::equal(b.x, full[j].x)) << "resumed after " << k << ", batch " << j;
      ASSERT_TRUE(at::equal(b.y, full[j].y));
    }
  }
}

TEST(PrefetchLoader, ResumesOnAnotherRankCount) {
  LatentDataset ds({make_file("a.h5", indexed(60, 1, 2, 3))});
  const int64_t B = 12;  // 5 batches per epoch
  auto reference_run = concatenated(ds, B, 1, {}, 12, nullptr);
  LoaderState saved;
  concatenated(ds, B, 2, {}, 4, &saved);  // a run on 2 ranks, checkpointed after 4 steps
  EXPECT_EQ(saved.epoch, 0);
  EXPECT_EQ(saved.batch, 4);
  auto resumed = concatenated(ds, B, 3, saved, 8, nullptr);  // continued on 3 ranks
  for (int k = 0; k < 8; ++k) {
    EXPECT_TRUE(at::equal(resumed[k].first, reference_run[4 + k].first)) << "step " << 4 + k;
    EXPECT_TRUE(at::equal(resumed[k].second, reference_run[4 + k].second)) << "step " << 4 + k;
  }
}

// ---- moments ---------------------------------------------------------------------------------

TEST(PrefetchLoader, MomentsAreReproducibleThroughTheLoader) {
  File f;
  f.name = "moments";
  f.dims = {30, 4, 3, 3};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int i = 0; i < 30 * 36; ++i) f.values.push_back(normal(rng));
  for (int i = 0; i < 30; ++i) f.labels.push_back(i % 10);
  LatentDataset ds({make_file("m.h5", f)});
  ASSERT_TRUE(ds.info().moments);
  GlobalSampler s(30, 6, 4);
  const std::vector<Ref> ref = reference(ds, s, {}, 8);  // crosses into epoch 1
  std::vector<Batch> a, b;
  {
    PrefetchLoader loader(ds, s, {}, 1, 1, seed_of, false);
    a = take(loader, 8);
  }
  {
    PrefetchLoader loader(ds, s, {}, 4, 3, seed_of, false);
    b = take(loader, 8);
  }
  for (int k = 0; k < 8; ++k) {
    EXPECT_TRUE(at::equal(a[k].x, ref[k].x)) << k;
    EXPECT_TRUE(at::equal(b[k].x, ref[k].x)) << k;
  }
  // Epochs draw different noise for the same sample (the seed depends on the epoch).
  at::Tensor x0, x1, y;
  ds.read({3}, seed_of(0), &x0, &y);
  ds.read({3}, seed_of(1), &x1, &y);
  EXPECT_FALSE(at::equal(x0, x1));
}

// ---- files and read paths --------------------------------------------------------------------

TEST(PrefetchLoader, ConcatenatesSeveralFilesThroughPread) {
  const std::string dir = nt::test::scratch_dir();
  const std::vector<int64_t> sizes = {7, 13, 4};
  std::vector<std::string> paths;
  int64_t first = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    paths.push_back(dir + "/part" + std::to_string(k) + ".h5");
    write(paths.back(), indexed(sizes[k], 2, 2, 2, first));
    first += sizes[k];
  }
  write(dir + "/whole.h5", indexed(24, 2, 2, 2));
  LatentDataset parts(paths), whole({dir + "/whole.h5"});
  EXPECT_EQ(parts.info().size, 24);
  EXPECT_EQ(parts.info().read_path, "pread");
  GlobalSampler s(24, 8, 9);
  PrefetchLoader a(parts, s, {}, 2, 2, seed_of, false), b(whole, s, {}, 1, 1, seed_of, false);
  for (int k = 0; k < 7; ++k) {
    Batch ba = a.next(), bb = b.next();
    ASSERT_TRUE(at::equal(ba.x, bb.x)) << k;
    ASSERT_TRUE(at::equal(ba.y, bb.y)) << k;
    // And the values name the global index: x[.,0,0,0] = 1000 * index.
    const std::vector<int64_t> idx = s.indices({ba.epoch, ba.batch});
    for (size_t i = 0; i < idx.size(); ++i)
      ASSERT_EQ(ba.x[i][0][0][0].item<float>(), float(idx[i] * 1000));
  }
}

// Random float16 bit patterns: normals, subnormals, zeros of both signs, and the largest.
std::vector<uint16_t> random_halves(size_t n) {
  std::mt19937 rng(3);
  std::vector<uint16_t> h;
  for (size_t k = 0; k < n; ++k) {
    uint16_t v = static_cast<uint16_t>(rng());
    if ((v & 0x7C00) == 0x7C00) v &= 0xFBFF;  // no Inf/NaN (the loader passes them on anyway)
    h.push_back(v);
  }
  h[0] = 0x0001;  // smallest subnormal
  h[1] = 0x8000;  // -0
  h[2] = 0x7BFF;  // 65504
  h[3] = 0x03FF;  // largest subnormal
  return h;
}

void check_paths_identical(bool half, hid_t label_type) {
  const std::string dir = nt::test::scratch_dir();
  File f;
  f.dims = {23, 3, 4, 5};
  const size_t n = 23 * 60;
  if (half) {
    f.halves = random_halves(n);
  } else {
    std::mt19937 rng(5);
    for (size_t k = 0; k < n; ++k) {
      uint32_t bits = rng();
      if ((bits & 0x7F800000u) == 0x7F800000u) bits &= 0xBFFFFFFFu;  // finite only
      float v;
      std::memcpy(&v, &bits, 4);
      f.values.push_back(v);
    }
  }
  for (int i = 0; i < 23; ++i) f.labels.push_back((i * 7) % 10);
  f.label_type = label_type;
  write(dir + "/contiguous.h5", f);
  f.chunked = true;
  write(dir + "/chunked.h5", f);
  LatentDataset a({dir + "/contiguous.h5"}), b({dir + "/chunked.h5"});
  // Big-endian labels are converted by HDF5 (H5Dread) even when contiguous.
  const bool big_endian = H5Tget_order(label_type) == H5T_ORDER_BE;
  ASSERT_EQ(a.info().read_path, big_endian ? "H5Dread" : "pread");
  ASSERT_EQ(b.info().read_path, "H5Dread");
  GlobalSampler s(23, 5, 8);
  PrefetchLoader la(a, s, {}, 2, 3, seed_of, false), lb(b, s, {}, 2, 3, seed_of, false);
  for (int k = 0; k < 9; ++k) {
    Batch x = la.next(), y = lb.next();
    ASSERT_EQ(x.x.numel(), y.x.numel());
    ASSERT_EQ(std::memcmp(x.x.data_ptr<float>(), y.x.data_ptr<float>(), x.x.numel() * 4), 0)
        << "batch " << k << " differs bitwise";
    ASSERT_TRUE(at::equal(x.y, y.y));
  }
  // The values are the stored ones: float16 decoded exactly (c10::Half), float32 as is.
  std::vector<int64_t> all(23);
  for (int i = 0; i < 23; ++i) all[i] = i;
  at::Tensor x, y;
  a.read(all, 0, &x, &y);
  const float* p = x.data_ptr<float>();
  for (size_t k = 0; k < n; ++k) {
    const float expect =
        half ? static_cast<float>(c10::Half(f.halves[k], c10::Half::from_bits())) : f.values[k];
    ASSERT_EQ(std::memcmp(&p[k], &expect, 4), 0) << "element " << k;
  }
  for (int i = 0; i < 23; ++i) ASSERT_EQ(y[i].item<int64_t>(), (i * 7) % 10);
}

TEST(ReadPaths, PreadAndH5DreadAreBitIdenticalFloat16) { check_paths_identical(true, H5T_STD_U8LE); }
TEST(ReadPaths, PreadAndH5DreadAreBitIdenticalFloat32) {
  check_paths_identical(false, H5T_STD_I16LE);
}
TEST(ReadPaths, LabelTypesOfAnyWidth) {
  for (hid_t t : {H5T_STD_I8LE, H5T_STD_U16LE, H5T_STD_I32LE, H5T_STD_U32LE, H5T_STD_U64LE,
                  H5T_STD_I64BE}) {
    SCOPED_TRACE(t);
    check_paths_identical(false, t);
  }
}

// ---- errors ----------------------------------------------------------------------------------

TEST(PrefetchLoader, TruncatedFileAfterOpeningNamesFileDatasetAndSample) {
  const std::string dir = nt::test::scratch_dir();
  for (bool chunked : {false, true}) {
    SCOPED_TRACE(chunked ? "chunked" : "contiguous");
    File f = indexed(64, 4, 8, 8);
    f.chunked = chunked;
    const std::string path = dir + (chunked ? "/chunked.h5" : "/contiguous.h5");
    write(path, f);
    LatentDataset ds({path});
    // Cut the file in the middle of the data, after it was opened.
    const auto size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, chunked ? size / 3 : size / 2);
    GlobalSampler s(64, 64, 1);  // one batch: every sample
    PrefetchLoader loader(ds, s, {}, 2, 2, seed_of, false);
    std::string msg = data_error([&] { loader.next(); });
    EXPECT_CONTAINS(msg, "'" + path + "'");
    EXPECT_CONTAINS(msg, "/latents");
    EXPECT_CONTAINS(msg, "sample");
    EXPECT_CONTAINS(msg, "global batch 0 of epoch 0");
    if (!chunked) {
      EXPECT_CONTAINS(msg, "truncated");
    }
    // The loader is finished: the error comes again, and destruction does not hang.
    std::string again = data_error([&] { loader.next(); });
    EXPECT_EQ(again, msg);
  }
  // Truncated before opening: opening fails with a message naming the file.
  File f = indexed(64, 4, 8, 8);
  write(dir + "/cut.h5", f);
  std::filesystem::resize_file(dir + "/cut.h5", std::filesystem::file_size(dir + "/cut.h5") / 2);
  std::string msg = data_error([&] { LatentDataset ds({dir + "/cut.h5"}); });
  EXPECT_CONTAINS(msg, "'" + dir + "/cut.h5'");
  EXPECT_CONTAINS(msg, "truncated");
}

TEST(PrefetchLoader, BadLabelReachesNextInOrder) {
  File f = indexed(20, 1, 2, 2);
  f.labels[13] = 10;  // num_classes is 10
  const std::string path = make_file("bad.h5", f);
  LatentDataset ds({path});
  GlobalSampler s(20, 4, 6);
  // Which batch holds sample 13?
  int64_t bad_batch = -1;
  for (int64_t g = 0; g < 5; ++g)
    for (int64_t i : s.indices({0, g}))
      if (i == 13) bad_batch = g;
  ASSERT_GE(bad_batch, 0);
  PrefetchLoader loader(ds, s, {}, 3, 4, seed_of, false);
  for (int64_t g = 0; g < bad_batch; ++g) EXPECT_EQ(loader.next().batch, g);  // good ones first
  std::string msg = data_error([&] { loader.next(); });
  EXPECT_CONTAINS(msg, "'" + path + "'");
  EXPECT_CONTAINS(msg, "label 10 of sample 13");
  EXPECT_CONTAINS(msg, "/labels");
  EXPECT_CONTAINS(msg, "global batch " + std::to_string(bad_batch));
}

TEST(PrefetchLoader, DestructorDoesNotHang) {
  const std::string dir = nt::test::scratch_dir();
  write(dir + "/a.h5", indexed(200, 1, 4, 4));
  LatentDataset ds({dir + "/a.h5"});
  GlobalSampler s(200, 8, 1);
  auto t0 = std::chrono::steady_clock::now();
  {  // a full queue nobody consumes
    PrefetchLoader loader(ds, s, {}, 4, 2, seed_of, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  {  // consumed once, then dropped with readers waiting
    PrefetchLoader loader(ds, s, {}, 3, 5, seed_of, false);
    loader.next();
  }
  {  // never started reading
    PrefetchLoader loader(ds, s, {}, 2, 1, seed_of, false);
  }
  EXPECT_LT(seconds_since(t0), 5.0);

  // Failing readers nobody asks: the readers stop, the destructor returns.
  File f = indexed(200, 1, 4, 4);
  write(dir + "/b.h5", f);
  LatentDataset bad({dir + "/b.h5"});
  std::filesystem::resize_file(dir + "/b.h5", 4096);
  t0 = std::chrono::steady_clock::now();
  {
    PrefetchLoader loader(bad, s, {}, 4, 3, seed_of, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  {
    PrefetchLoader loader(bad, s, {}, 2, 8, seed_of, false);
    EXPECT_THROW(loader.next(), DataError);
  }
  EXPECT_LT(seconds_since(t0), 5.0);
}

}  // namespace
