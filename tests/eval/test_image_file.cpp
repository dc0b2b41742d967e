// Image files read as PIL's Image.open(f).convert("RGB") reads them (eval/image_file.h): each
// JPEG of tests/golden/jpeg (made by make_cases.py there with Pillow on Debian's libjpeg-turbo)
// gives exactly the pixels of the PNG holding PIL's decoding of it: 4:2:0, 4:4:4, progressive
// 4:2:2, grey, Adobe CMYK; a PNG named .jpg is read as PNG; a truncated JPEG and a file that is
// neither format are errors naming the file.
#include <gtest/gtest.h>

#include <string>

#include "data/latent_dataset.h"  // DataError
#include "eval/image_file.h"
#include "test_util.h"

namespace {

const std::string kCases = std::string(NT_SOURCE_DIR) + "/tests/golden/jpeg/";

class ImageFile : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nt::jpeg_supported()) GTEST_SKIP() << "this build reads no JPEG";
  }
};

TEST_F(ImageFile, JpegPixelsArePils) {
  for (const char* name : {"rgb420", "rgb444", "rgb422_progressive", "gray", "cmyk", "png_named"}) {
    const nt::Rgb8 got = nt::read_image(kCases + name + ".jpg");
    const nt::Rgb8 want = nt::read_png(kCases + name + ".pil.png");
    EXPECT_EQ(got.w, want.w) << name;
    EXPECT_EQ(got.h, want.h) << name;
    ASSERT_EQ(got.px.size(), want.px.size()) << name;
    size_t differ = 0;
    for (size_t i = 0; i < got.px.size(); ++i) differ += got.px[i] != want.px[i];
    EXPECT_EQ(differ, 0u) << name << ": " << differ << " of " << got.px.size() << " values differ from PIL's";
  }
}

TEST_F(ImageFile, TruncatedAndUnknownFilesAreErrors) {
  try {
    nt::read_image(kCases + "truncated.jpg");
    ADD_FAILURE() << "no error";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(std::string(e.what()), "truncated.jpg");
    EXPECT_CONTAINS(std::string(e.what()), "truncated");
  }
  const std::string dir = nt::test::scratch_dir();
  nt::test::write_text(dir + "/text.jpg", "this is text, not an image");
  try {
    nt::read_image(dir + "/text.jpg");
    ADD_FAILURE() << "no error";
  } catch (const nt::DataError& e) {
    EXPECT_CONTAINS(std::string(e.what()), "text.jpg");
    EXPECT_CONTAINS(std::string(e.what()), "neither a PNG nor a JPEG");
  }
  EXPECT_THROW(nt::read_image(dir + "/missing.png"), nt::DataError);
}

}  // namespace
