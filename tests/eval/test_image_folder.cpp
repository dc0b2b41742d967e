// A folder of images as pytorch-fid takes it (eval/image_folder.h): which files, in which order,
// and the tensors ToTensor makes of them; the files it cannot take are errors that name them.
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

namespace {

namespace fs = std::filesystem;

// A [h, w, c] uint8 image whose levels are (a + 7·i) mod 256 over its elements i.
at::Tensor levels(int64_t h, int64_t w, int64_t c, int64_t a) {
  return ((torch::arange(h * w * c, torch::kLong) * 7 + a) % 256).to(torch::kUInt8).reshape({h, w, c});
}

std::vector<std::string> names_of(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) out.push_back(fs::path(p).filename().string());
  return out;
}

TEST(ImageFolder, PytorchFidsFilesInItsOrder) {
  const std::string dir = nt::test::scratch_dir();
  // pathlib's glob("*.png") etc.: case-sensitive extensions, files directly in the folder, names
  // with a leading dot too; sorted by name (so img_10 comes before img_2).
  for (const char* name : {"img_2.png", "img_10.png", ".hidden.png", "b.jpg", "a.jpeg", "Z.png"})
    nt::write_png(dir + "/" + name, levels(4, 5, 1, 3));  // PNG bytes under any name: read by content
  for (const char* name : {"upper.PNG", "photo.JPG", "notes.txt", "png", "x.png.bak"})
    nt::test::write_text(dir + "/" + name, "not an image pytorch-fid would read");
  fs::create_directories(dir + "/sub");
  nt::write_png(dir + "/sub/inner.png", levels(4, 5, 1, 3));
  fs::create_directories(dir + "/folder.png");  // a folder with an image's name

  const std::vector<std::string> expected = {".hidden.png", "Z.png", "a.jpeg", "b.jpg", "img_10.png", "img_2.png"};
  if (!nt::jpeg_supported()) {
    EXPECT_THROW(nt::fid_image_files(dir), nt::DataError);
    GTEST_SKIP() << "this build reads no JPEG";
  }
  const std::vector<std::string> files = nt::fid_image_files(dir);
  EXPECT_EQ(names_of(files), expected);
  EXPECT_EQ(files[0], (fs::path(dir) / ".hidden.png").string());
}

TEST(ImageFolder, FormatsItCannotReadEmptyAndMissingFoldersAreErrors) {
  const std::string dir = nt::test::scratch_dir();
  nt::write_png(dir + "/a.png", levels(2, 2, 3, 0));
  nt::test::write_text(dir + "/b.webp", "RIFF");
  try {
    nt::fid_image_files(dir);
    FAIL() << "a .webp file pytorch-fid would read must not be left out silently";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(e.what(), "b.webp");
    EXPECT_CONTAINS(e.what(), "PNG and JPEG");
  }
  const std::string empty = nt::test::scratch_dir() + "/empty";
  fs::create_directories(empty);
  nt::test::write_text(empty + "/readme.txt", "no images");
  try {
    nt::fid_image_files(empty);
    FAIL() << "a folder without images";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(e.what(), "no images in");
  }
  try {
    nt::fid_image_files(empty + "/nowhere");
    FAIL() << "a missing folder";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(e.what(), "nowhere");
  }
}

TEST(ImageFolder, ReadAsToTensorDoes) {
  const std::string dir = nt::test::scratch_dir();
  const at::Tensor rgb = levels(3, 4, 3, 11), grey = levels(5, 2, 1, 200);  // [h,w,c] uint8
  nt::write_png(dir + "/rgb.png", rgb);
  nt::write_png(dir + "/grey.png", grey);
  nt::test::write_text(dir + "/cut.png", "\x89PNG\r\n");
  const std::vector<at::Tensor> x = nt::read_images01({dir + "/rgb.png", dir + "/grey.png"});
  ASSERT_EQ(x.size(), 2u);
  // ToTensor: [c,h,w] float32, the level k as k / 255 (float32 division); grey replicated as by
  // convert("RGB").
  EXPECT_TRUE(torch::equal(x[0], rgb.permute({2, 0, 1}).to(torch::kFloat).div(255)));
  EXPECT_TRUE(torch::equal(x[1], grey.permute({2, 0, 1}).to(torch::kFloat).div(255).expand({3, 5, 2})));
  EXPECT_EQ(x[0].scalar_type(), torch::kFloat);
  try {
    nt::read_images01({dir + "/rgb.png", dir + "/cut.png"});
    FAIL() << "a truncated PNG";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(e.what(), "cut.png");
  }
}

}  // namespace
