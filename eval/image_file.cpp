// PNG and JPEG files read as PIL's convert("RGB") reads them (see eval/image_file.h).
#include "eval/image_file.h"

#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

#ifdef NT_HAVE_JPEG
#include <jerror.h>
#include <jpeglib.h>
#endif

#include "data/latent_dataset.h"  // DataError

namespace nt {
namespace {

std::string q(const std::string& s) { return "'" + s + "'"; }

// ---- PNG -------------------------------------------------------------------------------------

struct PngState {  // on the heap: nothing that changes after setjmp lives in its frame
  char message[256] = {0};
  std::jmp_buf jump;
  Rgb8 image;
  std::vector<png_bytep> rows;
  const uint8_t* data = nullptr;  // the file's bytes, read from `pos` on
  size_t size = 0, pos = 0;
};

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* st = static_cast<PngState*>(png_get_io_ptr(png));
  if (st->size - st->pos < n) png_error(png, "the file ends before the image does (truncated)");
  std::memcpy(out, st->data + st->pos, n);
  st->pos += n;
}

void png_fail(png_structp png, png_const_charp message) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof(s->message), "%s", message);
  std::longjmp(s->jump, 1);
}
void png_ignore_warning(png_structp, png_const_charp) {}

#ifdef NT_HAVE_JPEG
// ---- JPEG ------------------------------------------------------------------------------------

struct JpegState {  // on the heap, as PngState
  jpeg_error_mgr err;  // first: libjpeg hands the handlers a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
  bool truncated = false;
  jpeg_decompress_struct cinfo;
  std::vector<uint8_t> row;
  Rgb8 image;
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* s = reinterpret_cast<JpegState*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, s->message);
  std::longjmp(s->jump, 1);
}

// Warnings (corrupt-data notes) are ignored, as PIL ignores them, except running out of data.
void jpeg_note(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) reinterpret_cast<JpegState*>(cinfo->err)->truncated = true;
}

// PIL's MULDIV255: a * b / 255 rounded, in integers.
inline int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

inline uint8_t clip8(int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }
#endif

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot open " + q(path) + ": " + std::strerror(errno));
  std::vector<uint8_t> bytes(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) throw DataError("cannot read " + q(path));
  return bytes;
}

}  // namespace

bool jpeg_supported() {
#ifdef NT_HAVE_JPEG
  return true;
#else
  return false;
#endif
}

Rgb8 read_image(const std::string& path) { return decode_image(read_bytes(path), path); }

Rgb8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (bytes.size() >= 8 && png_sig_cmp(bytes.data(), 0, 8) == 0) return decode_png(bytes, name);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return decode_jpeg(bytes, name);
  throw DataError(q(name) + " is neither a PNG nor a JPEG file (by its first bytes)");
}

Rgb8 read_png(const std::string& path) { return decode_png(read_bytes(path), path); }

Rgb8 decode_png(const std::vector<uint8_t>& bytes, const std::string& name) {
  if (bytes.size() < 8 || png_sig_cmp(bytes.data(), 0, 8) != 0) throw DataError(q(name) + " is not a PNG file (bad signature)");
  const std::unique_ptr<PngState> state(new PngState);
  state->data = bytes.data();
  state->size = bytes.size();
  state->pos = 8;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state.get(), png_fail, png_ignore_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_read_struct(png ? &png : nullptr, nullptr, nullptr);
    throw DataError("cannot read PNG " + q(name) + ": out of memory");
  }
  if (setjmp(state->jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw DataError("cannot read PNG " + q(name) + ": " + state->message);
  }
  png_set_read_fn(png, state.get(), png_read_memory);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != size_t(w) * 3) png_error(png, "unsupported pixel format");
  state->image.w = static_cast<int>(w);
  state->image.h = static_cast<int>(h);
  state->image.px.resize(size_t(w) * h * 3);
  state->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) state->rows[y] = state->image.px.data() + size_t(y) * w * 3;
  png_read_image(png, state->rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return std::move(state->image);
}

Rgb8 read_jpeg(const std::string& path) { return decode_jpeg(read_bytes(path), path); }

Rgb8 decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& path) {
#ifndef NT_HAVE_JPEG
  throw DataError(q(path) + " is a JPEG file, and this build reads no JPEG (libjpeg was not found when it was "
                  "configured: install libjpeg-dev and configure again)");
#else
  const std::unique_ptr<JpegState> st(new JpegState());  // zeroed: cinfo before jpeg_create_decompress
  jpeg_decompress_struct& cinfo = st->cinfo;
  cinfo.err = jpeg_std_error(&st->err);
  st->err.error_exit = jpeg_fail;
  st->err.emit_message = jpeg_note;
  if (setjmp(st->jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw DataError("cannot read JPEG " + q(path) + ": " + st->message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));  // the caller's: outlives cinfo
  jpeg_read_header(&cinfo, TRUE);
  const int components = cinfo.num_components;
  if (components == 1)
    cinfo.out_color_space = JCS_GRAYSCALE;
  else if (components == 3)
    cinfo.out_color_space = JCS_RGB;
  else if (components == 4)
    cinfo.out_color_space = JCS_CMYK;  // from CMYK or YCCK
  else
    ERREXIT1(&cinfo, JERR_BAD_J_COLORSPACE, components);
  jpeg_start_decompress(&cinfo);
  const int w = static_cast<int>(cinfo.output_width), h = static_cast<int>(cinfo.output_height);
  const int oc = cinfo.output_components;
  st->row.resize(size_t(w) * oc);
  st->image.w = w;
  st->image.h = h;
  st->image.px.resize(size_t(w) * h * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = st->image.px.data() + size_t(cinfo.output_scanline) * w * 3;
    JSAMPROW row = st->row.data();
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break;
    const uint8_t* in = st->row.data();
    for (int x = 0; x < w; ++x, out += 3, in += oc) {
      if (oc == 1) {
        out[0] = out[1] = out[2] = in[0];
      } else if (oc == 3) {
        out[0] = in[0], out[1] = in[1], out[2] = in[2];
      } else {  // Adobe polarity: stored inverted (PIL's "CMYK;I"), then PIL's cmyk2rgb
        const int c = 255 - in[0], m = 255 - in[1], y = 255 - in[2], nk = in[3];  // nk = 255 - k
        out[0] = clip8(nk - muldiv255(c, nk));
        out[1] = clip8(nk - muldiv255(m, nk));
        out[2] = clip8(nk - muldiv255(y, nk));
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (st->truncated)
    throw DataError(q(path) + " is truncated: its JPEG data ends before the image does (PIL refuses it too)");
  return std::move(st->image);
#endif
}

}  // namespace nt
