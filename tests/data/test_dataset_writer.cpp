// DatasetWriter: files read back by LatentDataset (float32 and float16 rows streamed in blocks,
// moments, labels, attributes), the stored HDF5 types and layouts (contiguous and allocated:
// the loader's pread path), the three string kinds, one-shot datasets, the temporary file
// (removed when not committed, replaced by commit) and errors that name the file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <stdexcept>

#include "data/dataset_writer.h"
#include "data/hdf5_check.h"
#include "data/latent_dataset.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using nt::DataError;
using nt::DatasetWriter;
using nt::H5Id;
using nt::LatentDataset;
using nt::TextType;

template <typename F>
std::string data_error(F&& f) {
  return nt::test::thrown_message<DataError>(std::forward<F>(f));
}

// Values exact in float16: sample i, element j holds i * 0.5 + j * 0.25 - 3.
at::Tensor values(int64_t n, int64_t c, int64_t h, int64_t w) {
  at::Tensor i = at::arange(n, at::kFloat).view({n, 1});
  at::Tensor j = at::arange(c * h * w, at::kFloat).view({1, c * h * w});
  return (i * 0.5f + j * 0.25f - 3.0f).view({n, c, h, w});  // [N,C,H,W]
}

// Reads every sample of `path` through LatentDataset (normalised x and labels).
void read_all(const std::string& path, at::Tensor* x, at::Tensor* y) {
  LatentDataset ds({path});
  std::vector<int64_t> all(static_cast<size_t>(ds.info().size));
  for (size_t k = 0; k < all.size(); ++k) all[k] = static_cast<int64_t>(k);
  ds.read(all, 0, x, y);
}

// The open file, a dataset's type and layout, an attribute's type.
struct Opened {
  H5Id file;
  explicit Opened(const std::string& path) {
    nt::h5_silence();
    H5Id fapl = nt::h5_read_access(path);  // as LatentDataset opens it
    file = H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()));
    EXPECT_TRUE(file.valid()) << path;
  }
  H5Id dataset(const char* name) const { return H5Id(H5Dopen2(file.get(), name, H5P_DEFAULT)); }
  H5Id attr_type(const char* name) const {
    H5Id attr(H5Aopen(file.get(), name, H5P_DEFAULT));
    return H5Id(H5Aget_type(attr.get()));
  }
};

H5D_layout_t layout_of(hid_t dset) {
  H5Id dcpl(H5Dget_create_plist(dset));
  return H5Pget_layout(dcpl.get());
}

// ---- round trips through LatentDataset ----------------------------------------------------

TEST(DatasetWriter, Float32RowsInBlocksReadBackByLatentDataset) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/a.h5";
  const at::Tensor v = values(5, 2, 3, 4);  // [5,2,3,4]
  {
    DatasetWriter w(path, "latents", {5, 2, 3, 4}, at::kFloat);
    EXPECT_EQ(w.tmp_path(), path + ".tmp");
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    EXPECT_FALSE(fs::exists(path));
    w.write_rows(3, v.narrow(0, 3, 2));  // blocks in any order
    w.write_rows(0, v.narrow(0, 0, 3).to(at::kDouble));  // converted to float32
    w.write_rows(5, v.narrow(0, 0, 0));                  // nothing, at the end
    w.write_labels({4, 0, 3, 1, 2});
    w.set_int_attr("num_classes", 7);
    w.set_double_attr("scale_factor", 2.0);
    w.set_double_attr("shift_factor", 0.5);
    w.set_string_attr("latent_space", "sd-vae-ft-ema");
    w.set_string_attr("source", "unit test \xc3\xa9");  // UTF-8
    w.commit();
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  LatentDataset ds({path});
  const nt::DatasetInfo& info = ds.info();
  EXPECT_EQ(info.size, 5);
  EXPECT_EQ(info.channels, 2);
  EXPECT_EQ(info.height, 3);
  EXPECT_EQ(info.width, 4);
  EXPECT_FALSE(info.moments);
  EXPECT_EQ(info.num_classes, 7);
  EXPECT_EQ(info.scale_factor, 2.0);
  EXPECT_EQ(info.shift_factor, 0.5);
  EXPECT_EQ(info.latent_space, "sd-vae-ft-ema");
  EXPECT_EQ(info.source, "unit test \xc3\xa9");
  EXPECT_EQ(info.dtype, "float32");
  EXPECT_EQ(info.read_path, "pread");
  at::Tensor x, y;
  read_all(path, &x, &y);
  EXPECT_TRUE(torch::equal(x, (v - 0.5f) * 2.0f));
  EXPECT_TRUE(torch::equal(y, torch::tensor({4, 0, 3, 1, 2}, at::kLong)));
}

TEST(DatasetWriter, Float16FromHalfOrFloatRows) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/h.h5";
  const at::Tensor v = values(4, 1, 2, 2);  // [4,1,2,2], exact in float16
  {
    DatasetWriter w(path, "latents", {4, 1, 2, 2}, at::kHalf);
    w.write_rows(0, v.narrow(0, 0, 2).to(at::kHalf));  // binary16 as it is
    w.write_rows(2, v.narrow(0, 2, 2));                 // float32, converted
    w.write_labels({0, 1, 0, 1});
    w.set_int_attr("num_classes", 2);
    w.commit();
  }
  LatentDataset ds({path});
  EXPECT_EQ(ds.info().dtype, "float16");
  EXPECT_EQ(ds.info().read_path, "pread");
  at::Tensor x, y;
  read_all(path, &x, &y);
  EXPECT_TRUE(torch::equal(x, v));

  // IEEE binary16 little-endian, as h5py stores numpy's float16.
  Opened f(path);
  H5Id d = f.dataset("latents");
  H5Id type(H5Dget_type(d.get()));
  EXPECT_EQ(H5Tget_class(type.get()), H5T_FLOAT);
  EXPECT_EQ(H5Tget_size(type.get()), 2u);
  EXPECT_EQ(H5Tget_order(type.get()), H5T_ORDER_LE);
  EXPECT_EQ(H5Tget_ebias(type.get()), 15u);
  size_t spos, epos, esize, mpos, msize;
  ASSERT_GE(H5Tget_fields(type.get(), &spos, &epos, &esize, &mpos, &msize), 0);
  EXPECT_EQ(spos, 15u);
  EXPECT_EQ(epos, 10u);
  EXPECT_EQ(esize, 5u);
  EXPECT_EQ(mpos, 0u);
  EXPECT_EQ(msize, 10u);
}

TEST(DatasetWriter, MomentsAreReadAsMoments) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/m.h5";
  {
    DatasetWriter w(path, "moments", {3, 4, 2, 2}, at::kFloat);
    w.write_rows(0, values(3, 4, 2, 2));
    w.write_labels({0, 0, 0});
    w.set_int_attr("num_classes", 1);
    w.commit();
  }
  LatentDataset ds({path});
  EXPECT_TRUE(ds.info().moments);
  EXPECT_EQ(ds.info().channels, 2);
  EXPECT_EQ(ds.info().size, 3);
}

// ---- stored types and layouts -------------------------------------------------------------

TEST(DatasetWriter, StoredTypesLayoutsAndStringKinds) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/t.h5";
  {
    DatasetWriter w(path, "samples", {2, 1, 1, 3}, at::kFloat);
    w.write_rows(0, values(2, 1, 1, 3));
    w.write_labels({5, 6});
    w.write_dataset("seeds", torch::tensor({10, 11}, at::kLong));
    w.write_dataset("half", torch::tensor({1.5f}).to(at::kHalf));
    w.set_int_attr("num_classes", 10);
    w.set_double_attr("scale_factor", 0.18215);
    w.set_string_attr("var", "abc");
    w.set_string_attr("fixed_utf8", "abcd", TextType::kFixedUtf8);
    w.set_string_attr("fixed_utf8_empty", "", TextType::kFixedUtf8);
    w.set_string_attr("fixed_ascii", "abcd", TextType::kFixedAscii);
    const std::string msg =
        data_error([&] { w.write_dataset("bad", torch::tensor({1.0}, at::kDouble)); });
    EXPECT_CONTAINS(msg, "/bad of '" + path + ".tmp'");  // float64 cannot be stored
    EXPECT_CONTAINS(msg, "float32, float16 or int64");
    w.commit();
  }
  Opened f(path);
  H5Id data = f.dataset("samples"), labels = f.dataset("labels"), seeds = f.dataset("seeds");
  H5Id dtype(H5Dget_type(data.get())), ltype(H5Dget_type(labels.get())),
      stype(H5Dget_type(seeds.get()));
  EXPECT_GT(H5Tequal(dtype.get(), H5T_IEEE_F32LE), 0);
  EXPECT_GT(H5Tequal(ltype.get(), H5T_STD_I64LE), 0);
  EXPECT_GT(H5Tequal(stype.get(), H5T_STD_I64LE), 0);
  // Contiguous, and the rows allocated (H5Dget_offset is where pread reads).
  EXPECT_EQ(layout_of(data.get()), H5D_CONTIGUOUS);
  EXPECT_EQ(layout_of(labels.get()), H5D_CONTIGUOUS);
  EXPECT_NE(H5Dget_offset(data.get()), HADDR_UNDEF);
  int64_t seed_values[2] = {0, 0};
  ASSERT_GE(H5Dread(seeds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, seed_values), 0);
  EXPECT_EQ(seed_values[0], 10);
  EXPECT_EQ(seed_values[1], 11);

  EXPECT_GT(H5Tequal(f.attr_type("num_classes").get(), H5T_STD_I64LE), 0);
  EXPECT_GT(H5Tequal(f.attr_type("scale_factor").get(), H5T_IEEE_F64LE), 0);
  H5Id var = f.attr_type("var");
  EXPECT_GT(H5Tis_variable_str(var.get()), 0);
  EXPECT_EQ(H5Tget_cset(var.get()), H5T_CSET_UTF8);
  H5Id fixed = f.attr_type("fixed_utf8");
  EXPECT_EQ(H5Tis_variable_str(fixed.get()), 0);
  EXPECT_EQ(H5Tget_size(fixed.get()), 4u);
  EXPECT_EQ(H5Tget_cset(fixed.get()), H5T_CSET_UTF8);
  EXPECT_EQ(H5Tget_size(f.attr_type("fixed_utf8_empty").get()), 1u);
  H5Id ascii = f.attr_type("fixed_ascii");
  EXPECT_EQ(H5Tis_variable_str(ascii.get()), 0);
  EXPECT_EQ(H5Tget_size(ascii.get()), 5u);  // with the terminating NUL
  EXPECT_EQ(H5Tget_cset(ascii.get()), H5T_CSET_ASCII);
}

TEST(DatasetWriter, EveryStringKindReadsBackAsText) {
  const std::string dir = nt::test::scratch_dir();
  for (TextType type : {TextType::kVariableUtf8, TextType::kFixedUtf8, TextType::kFixedAscii}) {
    const std::string path = dir + "/s" + std::to_string(static_cast<int>(type)) + ".h5";
    {
      DatasetWriter w(path, "latents", {1, 1, 1, 1}, at::kFloat);
      w.write_rows(0, at::zeros({1, 1, 1, 1}));
      w.write_labels({0});
      w.set_int_attr("num_classes", 1);
      w.set_string_attr("latent_space", "pixels", type);
      w.set_string_attr("source", "", type);
      w.commit();
    }
    LatentDataset ds({path});
    EXPECT_EQ(ds.info().latent_space, "pixels") << static_cast<int>(type);
    EXPECT_EQ(ds.info().source, "") << static_cast<int>(type);
  }
}

// ---- the temporary file -------------------------------------------------------------------

TEST(DatasetWriter, TemporaryFileRemovedWithoutCommit) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/x.h5";
  {
    DatasetWriter w(path, "latents", {4, 1, 2, 2}, at::kFloat);
    w.write_rows(0, values(2, 1, 2, 2));
    EXPECT_TRUE(fs::exists(path + ".tmp"));
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_FALSE(fs::exists(path));

  // The same when an exception leaves the scope; an existing output stays as it was.
  nt::test::write_text(path, "old");
  try {
    DatasetWriter w(path, "latents", {4, 1, 2, 2}, at::kFloat);
    w.write_labels({0, 1, 2, 3});
    throw std::runtime_error("stop");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(nt::test::read_text(path), "old");
}

TEST(DatasetWriter, CommitReplacesAnExistingFile) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/r.h5";
  nt::test::write_text(path, "not HDF5");
  nt::test::write_text(path + ".tmp", "left over from a crash");
  {
    DatasetWriter w(path, "latents", {1, 1, 1, 2}, at::kFloat);
    w.write_rows(0, torch::tensor({1.0f, 2.0f}).view({1, 1, 1, 2}));
    w.write_labels({0});
    w.set_int_attr("num_classes", 1);
    w.commit();
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  at::Tensor x, y;
  read_all(path, &x, &y);
  EXPECT_TRUE(torch::equal(x, torch::tensor({1.0f, 2.0f}).view({1, 1, 1, 2})));
}

// ---- errors name the file -----------------------------------------------------------------

TEST(DatasetWriter, ErrorsNameTheFile) {
  const std::string dir = nt::test::scratch_dir();
  const std::string missing = dir + "/no/such/folder/a.h5";
  std::string msg =
      data_error([&] { DatasetWriter w(missing, "latents", {1, 1, 1, 1}, at::kFloat); });
  EXPECT_CONTAINS(msg, missing + ".tmp");
  EXPECT_CONTAINS(msg, "HDF5 call H5Fcreate");
  msg = data_error([&] { DatasetWriter w(dir + "/d.h5", "latents", {1, 1}, at::kDouble); });
  EXPECT_CONTAINS(msg, "float32 or float16");
  EXPECT_CONTAINS(msg, dir + "/d.h5.tmp");
  msg = data_error([&] { DatasetWriter w(dir + "/n.h5", "latents", {-1, 1}, at::kFloat); });
  EXPECT_CONTAINS(msg, "negative");
  EXPECT_FALSE(fs::exists(dir + "/d.h5.tmp"));

  const std::string path = dir + "/e.h5";
  const std::string tmp = "'" + path + ".tmp'";
  {
    DatasetWriter w(path, "latents", {4, 2, 3, 3}, at::kFloat);
    msg = data_error([&] { w.write_rows(0, at::zeros({2, 2, 3, 4})); });
    EXPECT_CONTAINS(msg, "/latents of " + tmp);
    EXPECT_CONTAINS(msg, "[2,2,3,4]");
    EXPECT_CONTAINS(msg, "expected [2,2,3,3]");
    EXPECT_CONTAINS(data_error([&] { w.write_rows(3, at::zeros({2, 2, 3, 3})); }),
                    "rows [3, 5) lie outside the 4 samples");
    EXPECT_CONTAINS(data_error([&] { w.write_rows(-1, at::zeros({1, 2, 3, 3})); }), tmp);
    msg = data_error([&] { w.write_labels({0, 1, 2}); });
    EXPECT_CONTAINS(msg, "/labels of " + tmp);
    EXPECT_CONTAINS(msg, "3 labels for the 4 samples");
    w.write_labels({0, 1, 2, 3});
    // HDF5's own failure (the name exists): the checked call names the file and the object.
    msg = data_error([&] { w.write_labels({0, 1, 2, 3}); });
    EXPECT_CONTAINS(msg, "/labels of " + tmp);
    EXPECT_CONTAINS(msg, "HDF5 call H5Dcreate2");
    w.set_int_attr("num_classes", 4);
    msg = data_error([&] { w.set_int_attr("num_classes", 4); });
    EXPECT_CONTAINS(msg, "root attribute num_classes of " + tmp);
    EXPECT_CONTAINS(msg, "HDF5 call H5Acreate2");
    w.commit();
    EXPECT_CONTAINS(data_error([&] { w.write_rows(0, at::zeros({1, 2, 3, 3})); }),
                    "already committed");
    EXPECT_CONTAINS(data_error([&] { w.commit(); }), "already committed");
  }
  EXPECT_TRUE(fs::exists(path));  // a failed call after commit() deletes nothing

  // A rename that fails (the output is a non-empty folder): both names, no temporary file.
  const std::string folder = dir + "/taken.h5";
  fs::create_directories(folder + "/inside");
  {
    DatasetWriter w(folder, "latents", {1, 1, 1, 1}, at::kFloat);
    msg = data_error([&] { w.commit(); });
  }
  EXPECT_CONTAINS(msg, "cannot rename '" + folder + ".tmp' to '" + folder + "'");
  EXPECT_FALSE(fs::exists(folder + ".tmp"));
}

}  // namespace
