// A folder of images as the reference's fid.py takes it (eval/image_folder.h): which files, in
// which order, which subset, and the values read, from a folder or a zip archive; the files it
// cannot take are errors that name them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/latent_dataset.h"  // DataError
#include "eval/image_file.h"
#include "eval/image_folder.h"
#include "eval/image_grid.h"
#include "test_util.h"

#include <zip.h>

namespace {

namespace fs = std::filesystem;

// A [h, w, c] uint8 image whose levels are (a + 7·i) mod 256 over its elements i.
at::Tensor levels(int64_t h, int64_t w, int64_t c, int64_t a) {
  return ((torch::arange(h * w * c, torch::kLong) * 7 + a) % 256).to(torch::kUInt8).reshape({h, w, c});
}

// The message of the DataError that opening `path` throws ("" and a test failure if none).
std::string open_error(const std::string& path) {
  try {
    nt::ImageFolder folder(path);
  } catch (const nt::DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "opening " << path << " did not fail";
  return "";
}

std::vector<std::string> names_of(const nt::ImageFolder& folder) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < folder.size(); ++i) out.push_back(folder.name(i));
  return out;
}

TEST(ImageFolder, TheReferencesFilesInItsOrder) {
  const std::string dir = nt::test::scratch_dir();
  // EDM's ImageFolderDataset: every file under the folder (os.walk) whose lower-cased extension
  // PIL knows, names with a leading dot too, sorted by relative path (img_10 before img_2,
  // sub.png before sub/inner.png).
  for (const char* name : {"img_2.png", "img_10.png", ".hidden.png", "b.jpg", "a.JPEG", "Z.png", "upper.PNG",
                           "sub.png", "sub/inner.png", "folder.png/in.png"}) {
    fs::create_directories(fs::path(dir + "/" + name).parent_path());
    nt::write_png(dir + "/" + name, levels(4, 5, 1, 3));  // PNG bytes under any name: read by content
  }
  for (const char* name : {"notes.txt", "png", "x.png.bak", "dataset.json"})
    nt::test::write_text(dir + "/" + name, "not an image");

  const std::vector<std::string> expected = {".hidden.png", "Z.png", "a.JPEG", "b.jpg", "folder.png/in.png",
                                             "img_10.png", "img_2.png", "sub.png", "sub/inner.png", "upper.PNG"};
  if (!nt::jpeg_supported()) {
    EXPECT_THROW(nt::ImageFolder{dir}, nt::DataError);
    GTEST_SKIP() << "this build reads no JPEG";
  }
  const nt::ImageFolder folder(dir);
  EXPECT_EQ(names_of(folder), expected);
  EXPECT_EQ(folder.where(4), (fs::path(dir) / "folder.png/in.png").string());
}

// A zip archive (EDM's dataset_tool.py writes them): its members as the folder's files, in name
// order, read from memory to the same values as the same files in a folder.
TEST(ImageFolder, AZipArchiveAsItsFolder) {
  const std::string dir = nt::test::scratch_dir();
  fs::create_directories(dir + "/files/b");
  const std::vector<std::pair<std::string, at::Tensor>> images = {
      {"b/x.png", levels(3, 4, 3, 1)}, {"a.png", levels(5, 2, 1, 2)}, {"c.PNG", levels(4, 4, 3, 9)}};
  std::vector<std::string> bytes;  // alive until the archive is written
  zip_t* z = zip_open((dir + "/images.zip").c_str(), ZIP_CREATE | ZIP_TRUNCATE, nullptr);
  ASSERT_NE(z, nullptr);
  ASSERT_GE(zip_dir_add(z, "b/", 0), 0);  // a folder's entry: not an image
  bytes.reserve(images.size() + 1);
  for (const auto& [name, hwc] : images) {
    nt::write_png(dir + "/files/" + name, hwc);
    bytes.push_back(nt::test::read_text(dir + "/files/" + name));
    ASSERT_GE(zip_file_add(z, name.c_str(), zip_source_buffer(z, bytes.back().data(), bytes.back().size(), 0), 0), 0);
  }
  bytes.push_back("{\"labels\": null}");
  ASSERT_GE(zip_file_add(z, "dataset.json", zip_source_buffer(z, bytes.back().data(), bytes.back().size(), 0), 0), 0);
  ASSERT_EQ(zip_close(z), 0);

  const nt::ImageFolder zip(dir + "/images.zip"), files(dir + "/files");
  EXPECT_EQ(names_of(zip), (std::vector<std::string>{"a.png", "b/x.png", "c.PNG"}));
  EXPECT_EQ(names_of(files), names_of(zip));
  EXPECT_EQ(zip.where(1), dir + "/images.zip:b/x.png");
  const std::vector<at::Tensor> a = zip.read01({2, 0, 1}), b = files.read01({2, 0, 1});
  ASSERT_EQ(a.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
  EXPECT_TRUE(torch::equal(a[0], images[2].second.permute({2, 0, 1}).to(torch::kFloat).div(255)));

  nt::test::write_text(dir + "/broken.zip", "PK not really");
  EXPECT_CONTAINS(open_error(dir + "/broken.zip"), "broken.zip' is not a readable zip archive");
}

// EDM's Dataset(max_size, random_seed): numpy's RandomState(seed % 2^31).shuffle of 0..n-1, the first
// max_size sorted. The expected indices were printed by numpy 1.24.2:
//   idx = np.arange(n); np.random.RandomState(seed % (1 << 31)).shuffle(idx); np.sort(idx[:m])
TEST(ImageFolder, SubsetsAsEdmsDatasetPicksThem) {
  EXPECT_EQ(nt::edm_subset(10, 4, 0), (std::vector<int64_t>{2, 4, 8, 9}));
  EXPECT_EQ(nt::edm_subset(11, 5, 0), (std::vector<int64_t>{2, 4, 6, 9, 10}));
  EXPECT_EQ(nt::edm_subset(1000, 7, 0), (std::vector<int64_t>{27, 298, 553, 672, 859, 971, 993}));
  EXPECT_EQ(nt::edm_subset(300, 5, 123), (std::vector<int64_t>{114, 165, 262, 278, 293}));
  EXPECT_EQ(nt::edm_subset(70000, 3, 0), (std::vector<int64_t>{10840, 14849, 56267}));
  EXPECT_EQ(nt::edm_subset(1 << 20, 4, (int64_t(1) << 31) + 5), (std::vector<int64_t>{545918, 584713, 645033, 1045202}));
  EXPECT_EQ(nt::edm_subset(50, 3, -1), (std::vector<int64_t>{31, 35, 49}));  // Python's -1 % 2^31 = 2^31 - 1
  EXPECT_EQ(nt::edm_subset(2, 1, 0), (std::vector<int64_t>{1}));
  EXPECT_EQ(nt::edm_subset(4, 4, 0), (std::vector<int64_t>{0, 1, 2, 3}));  // no subset: all, in order
  EXPECT_EQ(nt::edm_subset(3, 9, 0), (std::vector<int64_t>{0, 1, 2}));
}

TEST(ImageFolder, FormatsItCannotReadEmptyAndMissingFoldersAreErrors) {
  const std::string dir = nt::test::scratch_dir();
  nt::write_png(dir + "/a.png", levels(2, 2, 3, 0));
  fs::create_directories(dir + "/deeper");
  nt::test::write_text(dir + "/deeper/b.WebP", "RIFF");
  const std::string webp = open_error(dir);  // a file the reference would read is not left out silently
  EXPECT_CONTAINS(webp, "b.WebP");
  EXPECT_CONTAINS(webp, "PNG and JPEG");
  const std::string empty = nt::test::scratch_dir() + "/empty";
  fs::create_directories(empty + "/sub");
  nt::test::write_text(empty + "/sub/readme.txt", "no images");
  EXPECT_CONTAINS(open_error(empty), "no PNG or JPEG images in");
  EXPECT_CONTAINS(open_error(empty + "/nowhere"), "nowhere");
}

TEST(ImageFolder, ReadAsEightBitLevelsOverTwoFiftyFive) {
  const std::string dir = nt::test::scratch_dir();
  const at::Tensor rgb = levels(3, 4, 3, 11), grey = levels(5, 2, 1, 200);  // [h,w,c] uint8
  nt::write_png(dir + "/rgb.png", rgb);
  nt::write_png(dir + "/grey.png", grey);
  nt::test::write_text(dir + "/cut.png", "\x89PNG\r\n");
  const nt::ImageFolder folder(dir);  // cut.png, grey.png, rgb.png
  const std::vector<at::Tensor> x = folder.read01({2, 1});
  ASSERT_EQ(x.size(), 2u);
  // [c,h,w] float32, the level k as k / 255 (float32 division); grey replicated (the reference's
  // statistics repeat a grey image's channel).
  EXPECT_TRUE(torch::equal(x[0], rgb.permute({2, 0, 1}).to(torch::kFloat).div(255)));
  EXPECT_TRUE(torch::equal(x[1], grey.permute({2, 0, 1}).to(torch::kFloat).div(255).expand({3, 5, 2})));
  EXPECT_EQ(x[0].scalar_type(), torch::kFloat);
  try {
    folder.read01({2, 0});
    FAIL() << "a truncated PNG";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(e.what(), "cut.png");
  }
}

}  // namespace
