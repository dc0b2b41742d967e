# Writes the JPEG decoding cases of tests/eval/test_image_file.cpp (see ../jpeg.md): a few JPEG
# files made with PIL from deterministic pictures, and next to each, as a PNG, the 8-bit RGB
# that PIL's Image.open(f).convert("RGB") gives for it (what ADM's and the nano reference's
# loaders feed center_crop_arr). Run with python3 from this folder; needs Pillow.
import io

from PIL import Image


def picture(w, h, mode):
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = ((x * 37 + y * 11) % 256, (x * x + 3 * y) % 256, (255 - 5 * x + y * y) % 256)
    return im.convert(mode)


cases = [
    ("rgb420", picture(37, 29, "RGB"), dict(quality=90, subsampling=2)),
    ("rgb444", picture(16, 21, "RGB"), dict(quality=75, subsampling=0)),
    ("rgb422_progressive", picture(33, 18, "RGB"), dict(quality=85, subsampling=1, progressive=True)),
    ("gray", picture(19, 23, "L"), dict(quality=80)),
    ("cmyk", picture(13, 17, "CMYK"), dict(quality=90)),
]
for name, im, opts in cases:
    im.save(name + ".jpg", "JPEG", **opts)
    Image.open(name + ".jpg").convert("RGB").save(name + ".pil.png")

# A PNG under a .jpg name (ImageNet has one): PIL goes by the content.
picture(9, 7, "RGB").save("png_named.jpg", "PNG")
Image.open("png_named.jpg").convert("RGB").save("png_named.pil.png")

# A JPEG cut short: PIL refuses it ("image file is truncated").
data = open("rgb420.jpg", "rb").read()
open("truncated.jpg", "wb").write(data[: len(data) // 2])
try:
    Image.open(io.BytesIO(data[: len(data) // 2])).convert("RGB")
    raise SystemExit("PIL read the truncated JPEG")
except OSError:
    pass
