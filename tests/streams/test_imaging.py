"""decode_image / load_image / to_rgb: bad bytes give the right ImageRejected kind; good images decode to
the right colours. Every image is generated here with Pillow."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from streams.contract.imaging import ImageRejected, decode_image, letterbox, load_image, to_chw_uint8, to_model_input, to_rgb

TARGET = (64, 64)
LIMIT = 120_000_000
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def halves(mode: str, left, right, size=(64, 64)) -> Image.Image:
    """Left half `left`, right half `right`."""
    img = Image.new(mode, size, left)
    img.paste(Image.new(mode, (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return img


def pixel(chw: np.ndarray, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in chw[:, y, x])


def assert_close(actual, expected, tol=6):
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True)), (actual, expected)


def png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, followed by a tiny IDAT: a decompression-bomb header."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def noise_jpeg(size=(256, 256)) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), "JPEG")


# --- rejections ------------------------------------------------------------------------------------

def rejection(data: bytes, max_pixels: int = LIMIT) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels, TARGET)
    return info.value


@pytest.mark.parametrize(("name", "data", "kind"), [
    ("empty", b"", "empty"),
    ("text", "Ägyptische Statue, Kalkstein\nH. 32 cm\n".encode(), "not_image"),
    ("json", b'{"not": "an image"}', "not_image"),
    ("pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", "not_image"),
    ("random bytes", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_image"),
    ("jpeg signature then garbage", b"\xff\xd8\xff\xe0" + b"\x13\x37" * 500, "corrupt"),
    ("png signature then garbage", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "corrupt"),
    ("heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "unsupported"),
    ("svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
     "unsupported"),
])
def test_bad_inputs_are_rejected_with_their_kind(name, data, kind):
    assert rejection(data).kind == kind


def test_truncated_jpeg():
    data = noise_jpeg()
    err = rejection(data[: len(data) * 6 // 10])
    assert err.kind == "truncated"


def test_jpeg_with_damaged_entropy_data_is_corrupt():
    data = bytearray(noise_jpeg())
    data[2000:4000] = b"\xff" * 2000  # a run of marker bytes in the middle of the scan
    assert rejection(bytes(data)).kind == "corrupt"


def test_png_with_bad_header_crc_is_corrupt():
    data = bytearray(encode(halves("RGB", RED, BLUE), "PNG"))
    data[29] ^= 0xFF  # last byte of the IHDR CRC
    assert rejection(bytes(data)).kind == "corrupt"


def test_decompression_bomb_header_is_rejected_before_decoding():
    err = rejection(png_with_declared_size(100_000, 100_000))
    assert err.kind == "bomb"


def test_pixel_limit_is_per_call_and_the_global_is_restored():
    saved = Image.MAX_IMAGE_PIXELS
    data = encode(halves("RGB", RED, BLUE, size=(150, 100)), "PNG")  # 15,000 pixels
    assert rejection(data, max_pixels=10_000).kind == "bomb"      # between limit and 2x limit
    assert rejection(data, max_pixels=5_000).kind == "bomb"       # Pillow's own error (> 2x limit)
    assert decode_image(data, 15_000, TARGET).shape == (3, 64, 64)
    assert Image.MAX_IMAGE_PIXELS == saved


# --- good images -----------------------------------------------------------------------------------

def test_rgb_png_halves():
    out = decode_image(encode(halves("RGB", RED, BLUE), "PNG"), LIMIT, TARGET)
    assert out.dtype == np.uint8 and out.shape == (3, 64, 64) and out.flags.c_contiguous
    assert pixel(out, 32, 8) == RED and pixel(out, 32, 56) == BLUE


def test_sixteen_bit_tiff_is_scaled_not_clipped():
    arr = np.full((64, 64), 128 * 257, dtype=np.uint16)
    arr[:, 32:] = 40 * 257
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    data = encode(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode_image(data, LIMIT, TARGET)
    assert pixel(out, 32, 8) == (128, 128, 128)
    assert pixel(out, 32, 56) == (40, 40, 40)


def test_cmyk_jpeg_with_adobe_inversion_decodes_to_rgb_colours():
    cyan, yellow = (255, 0, 0, 0), (0, 0, 255, 0)
    data = encode(halves("CMYK", cyan, yellow), "JPEG", quality=95)
    assert b"Adobe" in data[:200]  # APP14: the CMYK samples are stored inverted
    out = decode_image(data, LIMIT, TARGET)
    assert_close(pixel(out, 32, 8), (0, 255, 255), tol=10)
    assert_close(pixel(out, 32, 56), (255, 255, 0), tol=10)


def test_palette_with_transparency_composites_on_white():
    img = Image.new("P", (64, 64), 1)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    img.paste(2, (32, 0, 64, 64))
    plain = decode_image(encode(img, "PNG"), LIMIT, TARGET)
    assert pixel(plain, 32, 8) == RED and pixel(plain, 32, 56) == BLUE
    transparent = decode_image(encode(img, "PNG", transparency=2), LIMIT, TARGET)
    assert pixel(transparent, 32, 8) == RED and pixel(transparent, 32, 56) == WHITE


def test_rgba_alpha_is_composited_on_white():
    img = halves("RGBA", (255, 0, 0, 255), (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (16, 16), (0, 0, 0, 128)), (0, 0))
    out = decode_image(encode(img, "PNG"), LIMIT, TARGET)
    assert pixel(out, 32, 8) == RED
    assert pixel(out, 32, 56) == WHITE  # transparent black is white, not black
    assert_close(pixel(out, 4, 4), (127, 127, 127), tol=2)


def test_la_alpha_is_composited_on_white():
    out = decode_image(encode(halves("LA", (0, 255), (0, 0)), "PNG"), LIMIT, TARGET)
    assert pixel(out, 32, 8) == BLACK and pixel(out, 32, 56) == WHITE


def test_grayscale_and_bilevel():
    out = decode_image(encode(halves("L", 100, 200), "PNG"), LIMIT, TARGET)
    assert pixel(out, 32, 8) == (100, 100, 100) and pixel(out, 32, 56) == (200, 200, 200)
    out = decode_image(encode(halves("1", 0, 1), "PNG"), LIMIT, TARGET)
    assert pixel(out, 32, 8) == BLACK and pixel(out, 32, 56) == WHITE


def test_lossless_webp():
    out = decode_image(encode(halves("RGB", GREEN, BLUE), "WEBP", lossless=True), LIMIT, TARGET)
    assert pixel(out, 32, 8) == GREEN and pixel(out, 32, 56) == BLUE


def test_float_and_int32_modes():
    f = np.zeros((64, 64), dtype=np.float32)
    f[:, 32:] = 0.5
    assert to_rgb(Image.fromarray(f, "F")).getpixel((48, 10)) == (128, 128, 128)
    i = np.zeros((64, 64), dtype=np.int32)
    i[:, 32:] = 65535
    assert to_rgb(Image.fromarray(i, "I")).getpixel((48, 10)) == WHITE


def test_exif_orientation_is_applied():
    # Stored 64 wide x 32 tall, red top-left corner; orientation 6 = display rotated 90 degrees clockwise,
    # so upright the image is 32 wide x 64 tall with the red corner at the top right.
    img = Image.new("RGB", (64, 32), BLUE)
    img.paste(Image.new("RGB", (16, 16), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(img, "JPEG", quality=95, exif=exif)
    upright = load_image(data, LIMIT)
    assert upright.size == (32, 64)
    out = decode_image(data, LIMIT, TARGET)  # letterboxed: content in columns 16..47
    assert_close(pixel(out, 6, 42), RED, tol=20)
    assert_close(pixel(out, 6, 20), BLUE, tol=20)
    assert_close(pixel(out, 56, 42), BLUE, tol=20)
    assert pixel(out, 32, 4) == BLACK  # letterbox bar


def test_large_jpeg_is_decoded_in_draft_mode():
    big = halves("RGB", RED, GREEN, size=(6000, 4000))
    data = encode(big, "JPEG", quality=85)
    img = load_image(data, LIMIT, (224, 224))
    assert img.size == (750, 500)  # DCT-scaled by 1/8 (the largest factor), still >= the target
    medium = load_image(encode(halves("RGB", RED, GREEN, size=(800, 600)), "JPEG"), LIMIT, (224, 224))
    assert medium.size == (400, 300)  # 1/2: the smallest DCT scale that keeps both sides >= 224
    # Drafted to the size the letterbox fits it into (96x72), not the 96x96 box: 1/8, not 1/4.
    assert load_image(encode(halves("RGB", RED, GREEN, size=(800, 600)), "JPEG"), LIMIT, (96, 96)).size == (100, 75)
    out = decode_image(data, LIMIT, (224, 224))
    assert out.shape == (3, 224, 224)
    assert_close(pixel(out, 112, 40), RED, tol=12)
    assert_close(pixel(out, 112, 184), GREEN, tol=12)
    assert pixel(out, 10, 112) == BLACK  # 3:2 image letterboxed into a square


# --- bounded memory --------------------------------------------------------------------------------

def test_large_non_rgb_images_are_shrunk_in_bands_with_the_same_colours():
    arr = np.full((1500, 2000), 128 * 257, dtype=np.uint16)  # 3 MP: over BAND_PIXELS, converted in bands
    arr[:, 1000:] = 40 * 257
    out = decode_image(encode(Image.fromarray(arr), "PNG"), LIMIT, TARGET)
    assert pixel(out, 32, 16) == (128, 128, 128) and pixel(out, 32, 48) == (40, 40, 40)
    f = np.zeros((1500, 2000), dtype=np.float32)
    f[:, 1000:] = 2.0  # outside [0, 1]: stretched over the whole image's range, not per band
    out = decode_image(encode(Image.fromarray(f, "F"), "TIFF"), LIMIT, TARGET)
    assert pixel(out, 32, 16) == (0, 0, 0) and pixel(out, 32, 48) == (255, 255, 255)


def test_an_image_needing_more_than_the_whole_decode_budget_is_a_bomb():
    from streams.contract.budget import ByteBudget

    data = encode(Image.new("RGB", (3000, 2000), RED), "PNG")  # ~23 MiB decoded
    assert decode_image(data, LIMIT, TARGET, ByteBudget(64 * 2**20)).shape == (3, 64, 64)
    with pytest.raises(ImageRejected) as info:
        decode_image(data, LIMIT, TARGET, ByteBudget(16 * 2**20))
    assert info.value.kind == "bomb" and "budget" in info.value.message


def test_png_exif_orientation_is_applied_after_loading():
    img = Image.new("RGB", (64, 32), BLUE)
    img.paste(Image.new("RGB", (16, 16), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(encode(img, "PNG", exif=exif), LIMIT, TARGET)  # upright: 32 x 64, red at the top right
    assert pixel(out, 4, 44) == RED and pixel(out, 4, 20) == BLUE and pixel(out, 32, 4) == BLACK


def test_a_dng_is_unsupported_not_decoded_from_its_preview():
    data = encode(Image.new("RGB", (32, 24), RED), "TIFF", tiffinfo={50706: b"\x01\x04\x00\x00"})
    assert rejection(data).kind == "unsupported"


@pytest.mark.parametrize("size", [(800, 600), (600, 800), (96, 96), (40, 30), (97, 13), (1, 300)])
def test_model_input_is_the_letterboxed_image_pixel_for_pixel(size):
    rng = np.random.default_rng(size[0])
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    for target in ((96, 96), (64, 80), (224, 224)):
        out = to_model_input(img, target)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, to_chw_uint8(letterbox(img, target)))


def _photo(size=(800, 600), seed=0) -> Image.Image:
    """A photo-like RGB image (smooth gradients plus noise), so DCT and upsampling choices show in the pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8), "RGB")


def _pillow_draft(data: bytes, box: tuple[int, int] | None) -> np.ndarray:
    """Pillow's own decode of `data`, drafted to `box` (W, H) as load_image drafts."""
    img = Image.open(io.BytesIO(data))
    if box is not None:
        img.draft("RGB", box)
    img.load()
    return np.asarray(img)


@pytest.mark.parametrize("variant", ["420", "444", "grey", "progressive"])
@pytest.mark.parametrize("target,box", [(None, None), ((224, 224), (224, 168)), ((96, 96), (96, 72))])
def test_jpeg_pixels_are_pillows_draft_pixels(variant, target, box):
    # The TurboJPEG path (simplejpeg) must decode exactly what Pillow's draft decode gave, at each DCT scale
    # (1/1, 1/2, 1/8 for 800x600), so models trained and evaluated before it see the same inputs.
    photo = _photo()
    kw = {"quality": 90, "subsampling": 0 if variant == "444" else 2, "progressive": variant == "progressive"}
    data = encode(photo.convert("L") if variant == "grey" else photo, "JPEG", **kw)
    ref = _pillow_draft(data, box)
    got = np.asarray(load_image(data, LIMIT, target))
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)
    if target is not None:
        want = to_model_input(Image.fromarray(ref), target)
        assert np.array_equal(decode_image(data, LIMIT, target), want)


def test_jpeg_exif_orientation_with_turbojpeg_pixels():
    # The decoded copy carries no EXIF: the orientation read from the header must still be applied.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(_photo((160, 80)), "JPEG", quality=95, exif=exif)
    assert load_image(data, LIMIT).size == (80, 160)
    assert load_image(data, LIMIT, (64, 64)).size == (40, 80)  # drafted by 1/2, then rotated


def test_decode_cost_counts_libjpegs_coefficient_buffer_for_progressive_jpegs():
    # libjpeg buffers every DCT coefficient (2 bytes, full size) of a multi-scan JPEG: 6 bytes per pixel at
    # 4:4:4, 3 at 4:2:0; a baseline JPEG (one interleaved scan) needs none, whatever its size.
    from streams.contract.imaging import _open_for_target, decode_cost

    def cost(**kw):
        data = encode(Image.new("RGB", (3000, 2000), (10, 20, 30)), "JPEG", **kw)
        img, _ = _open_for_target(data, LIMIT, (224, 224))
        assert img.size == (375, 250)  # drafted by 1/8: the pixels are small either way
        return decode_cost(img, (224, 224), data)

    baseline = cost(subsampling=0)
    assert baseline < 2 * 2**20
    assert cost(progressive=True, subsampling=0) - baseline == pytest.approx(3000 * 2000 * 6, rel=0.01)
    assert cost(progressive=True, subsampling=2) - baseline == pytest.approx(3000 * 2000 * 3, rel=0.01)
