// Image files read as 8-bit RGB the way PIL's Image.open(path).convert("RGB") reads them (what
// ADM's and the nano reference's loaders hand to center_crop_arr): the format is told by the
// content, not the name (ImageNet holds a PNG named .JPEG), and
//  - PNG: palette expanded, grey replicated, alpha dropped, 16-bit reduced to the high byte,
//    no gamma correction;
//  - JPEG (where the build found libjpeg): libjpeg's default decoding, as PIL asks for it (slow
//    integer IDCT, fancy upsampling, the colour space libjpeg reads from the JFIF/Adobe
//    markers); 1 component -> grey replicated; 3 -> RGB; 4 (CMYK, YCCK) -> CMYK with Adobe's
//    inverted polarity, then PIL's cmyk2rgb (nk = 255 - k, c' = nk - c*nk/255 rounded as
//    PIL's MULDIV255). A file cut short is an error, as it is for PIL.
// Errors throw DataError naming the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nt {

struct Rgb8 {  // 8-bit RGB, row-major [h][w][3]
  int w = 0, h = 0;
  std::vector<uint8_t> px;
};

Rgb8 read_image(const std::string& path);  // PNG or JPEG, by content
Rgb8 read_png(const std::string& path);
Rgb8 read_jpeg(const std::string& path);
// The same from a file's bytes in memory (e.g. a zip archive's member); `name` names it in errors.
Rgb8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name);
Rgb8 decode_png(const std::vector<uint8_t>& bytes, const std::string& name);
Rgb8 decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& name);

bool jpeg_supported();  // whether this build reads JPEG (libjpeg found at configure time)

}  // namespace nt
