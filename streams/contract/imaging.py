"""Image preprocessing shared by serving and training: what the model sees is decided here, once.

The served TorchScript model takes uint8 NCHW RGB images of the size its model repository declares;
`to_model_input` produces exactly that from a decoded PIL image. The trainer uses the same function for
evaluation so that served and evaluated inputs are identical.

`decode_image` is the worker's fetch-side entry point: object bytes -> that same tensor, or a typed
`ImageRejected` (its `kind` becomes the dead-letter error kind). `to_rgb` is its mode normalisation
(16-bit, float, palette, alpha, CMYK), usable on any PIL image. Its memory is bounded: JPEGs are decoded
scaled down, other large images are converted to RGB and shrunk band by band (never a whole-image copy
in another mode), and a `ByteBudget` shared by the decode threads bounds what concurrent decodes hold.
"""
from __future__ import annotations

import io
import threading
from contextlib import nullcontext
import warnings
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from streams.contract import jpeg
from streams.contract.budget import ByteBudget

PAD_RGB = (0, 0, 0)
MAX_IMAGE_PIXELS = 120_000_000
"""Default decompression-bomb guard (pixels): the worker's ARTROUTE_MAX_IMAGE_PIXELS and the trainer's decoder."""


def _fitted(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`img` in RGB, resized to fit inside (height, width) keeping its aspect ratio."""
    h, w = size
    img = img.convert("RGB") if img.mode != "RGB" else img
    scale = min(w / img.width, h / img.height)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    if (nw, nh) != img.size:
        img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    return img


def letterbox(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fit the whole artwork inside (height, width) keeping its aspect ratio; pad with black bars."""
    h, w = size
    img = _fitted(img, size)
    if img.size == (w, h):
        return img
    canvas = Image.new("RGB", (w, h), PAD_RGB)
    canvas.paste(img, ((w - img.width) // 2, (h - img.height) // 2))
    return canvas


def to_chw_uint8(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> contiguous uint8 array of shape (3, H, W)."""
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))


def to_model_input(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Decoded image -> the model's input tensor for one image: uint8 (3, H, W), letterboxed.

    The same pixels as `to_chw_uint8(letterbox(img, size))`, written straight into the padded array
    (no padded canvas and no second copy: this runs once per image in the worker)."""
    h, w = size
    img = _fitted(img, size)
    out = np.full((3, h, w), np.array(PAD_RGB, dtype=np.uint8)[:, None, None])
    top, left = (h - img.height) // 2, (w - img.width) // 2
    out[:, top:top + img.height, left:left + img.width] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return out


# --- Fetch-side decoding: object bytes -> model input, or a typed rejection ---------------------------

ALPHA_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white: museum cut-outs are shown on white, and the colour data
under fully transparent pixels is arbitrary (often black), so dropping alpha would show garbage."""

RejectionKind = Literal["empty", "not_image", "corrupt", "truncated", "bomb", "unsupported"]

# Formats we can name but do not decode (checked before Pillow, which would only say "unidentified").
_UNSUPPORTED_BRANDS = (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypheim", b"ftypheis", b"ftypmif1", b"ftypmsf1")
# Raster signatures: bytes that start like an image but do not decode are "corrupt", not "not_image".
_RASTER_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a", b"BM",
                 b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")
_PIL_LIMIT_LOCK = threading.Lock()
_DNG_VERSION_TAG = 50706  # a TIFF carrying this tag is a DNG camera raw (Pillow would decode its preview)
# Bytes per pixel of Pillow's in-memory storage, by mode (anything unlisted: 4).
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Codecs that decode into a whole-image buffer of their own first: bytes per pixel (per band for JPEG 2000,
# whose openjpeg output is one int32 per sample).
_OWN_BUFFER_BYTES = {"WEBP": 4, "JPEG2000": 4}
BAND_PIXELS = 1_000_000
"""Images over this many pixels that are not RGB already are converted and shrunk in horizontal bands."""
REDUCING_GAP = 3.0
"""As `letterbox` resizes (Pillow's reducing_gap): shrink by an integer factor to >= 3x the target first."""
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose does).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


class ImageRejected(Exception):
    """The object is not a decodable image; `kind` is stable (metrics label, dead-letter error kind)."""

    def __init__(self, kind: RejectionKind, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind: RejectionKind = kind
        self.message = message


def decode_image(data: bytes, max_pixels: int, target: tuple[int, int],
                 budget: ByteBudget | None = None) -> np.ndarray:
    """Object bytes -> the model input for one image: uint8 (3, H, W) RGB, letterboxed to `target` (H, W).

    Raises `ImageRejected` with kind "empty", "not_image" (text, PDF, unknown bytes), "unsupported"
    (HEIC, DNG, SVG, unconvertible modes), "bomb" (declared width*height > `max_pixels`, or more memory
    to decode than the whole `budget`), "truncated" or "corrupt". See `load_image` and `to_rgb` for the
    steps. Memory: `decode_cost` bytes, held under `budget` while the full-size image exists; the EXIF
    orientation is applied after shrinking.
    """
    img, orientation = _open_for_target(data, max_pixels, target)
    cost = decode_cost(img, target, data)
    if budget is not None and cost > budget.capacity:
        raise ImageRejected("bomb", f"{img.width}x{img.height} {img.mode} needs ~{cost / 2**20:.0f} MiB to "
                                    f"decode, more than the decode memory budget of {budget.capacity / 2**20:.0f} MiB")
    with budget.hold(cost) if budget is not None else nullcontext():
        img = _load_pixels(data, img)
        if orientation is None:  # formats other than JPEG: EXIF can come after the pixels (PNG eXIf)
            orientation = _exif_orientation(img)
        stored = target[::-1] if orientation in (5, 6, 7, 8) else target  # the target before rotation
        small = shrink_to_rgb(img, stored)
        del img
    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
    return to_model_input(small, target)


def decode_cost(img: Image.Image, target: tuple[int, int], data: bytes | None = None) -> int:
    """Bytes that decoding `img` (opened from `data`, not loaded; after `draft`) to `target` holds at its
    peak: the image in its source mode (Pillow's storage), libtiff's raw strip buffer, libjpeg's
    whole-image coefficient buffer for multi-scan JPEGs, and the shrunk RGB copy plus one band of
    conversion when it is converted in bands."""
    w, h = img.size
    cost = w * h * _STORAGE_BYTES.get(img.mode, 4) + 2**20
    if img.format == "JPEG":  # TurboJPEG's packed output, then Pillow's copy of it (`_load_pixels`)
        cost += w * h * len(img.getbands()) + jpeg.coefficient_bytes(img, data)
    elif img.format == "TIFF":
        cost += _tiff_strip_bytes(img)
    elif img.format in _OWN_BUFFER_BYTES:  # the codec decodes into a buffer of its own, then Pillow copies
        cost += w * h * _OWN_BUFFER_BYTES[img.format] * (len(img.getbands()) if img.format == "JPEG2000" else 1)
    if w * h > BAND_PIXELS:
        fx, fy = _reduce_factors(img.size, target)
        cost += -(-w // fx) * -(-h // fy) * 4
        if img.mode != "RGB":
            cost += max(fy, BAND_PIXELS // w) * w * 20  # a band: the crop, RGB, and int arithmetic
    return cost


def shrink_to_rgb(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """A loaded image -> RGB, reduced by the integer factor `letterbox` would first reduce it by.

    Images up to BAND_PIXELS go through `to_rgb` whole (letterbox then reduces them itself). Larger RGB
    images are reduced here; other modes are converted and reduced in horizontal bands, so no whole-image
    copy in another mode (or as a wider integer or float) ever exists.
    """
    w, h = img.size
    if w * h <= BAND_PIXELS:
        return to_rgb(img)
    fx, fy = _reduce_factors(img.size, target)
    if img.mode == "RGB":
        return img.reduce((fx, fy)) if (fx, fy) != (1, 1) else img
    rows = max(fy, (BAND_PIXELS // w) // fy * fy)
    float_range = img.getextrema() if img.mode == "F" else None
    out = Image.new("RGB", (-(-w // fx), -(-h // fy)))
    for y in range(0, h, rows):
        band = to_rgb(img.crop((0, y, w, min(h, y + rows))), float_range)
        out.paste(band.reduce((fx, fy)) if (fx, fy) != (1, 1) else band, (0, y // fy))
    return out


def _reduce_factors(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The integer factors Pillow's resize (reducing_gap=REDUCING_GAP) reduces by before `letterbox`'s
    resize of an image of `size` (W, H) into `target` (H, W)."""
    (w, h), (th, tw) = size, target
    scale = min(tw / w, th / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return max(1, int(w / nw / REDUCING_GAP)), max(1, int(h / nh / REDUCING_GAP))


def _tiff_strip_bytes(img: Image.Image) -> int:
    """libtiff decodes a TIFF strip (or tile) into a buffer of its raw size; one strip may be the image."""
    tags = getattr(img, "tag_v2", {})
    bits = tags.get(258, 8)
    bits = sum(bits) if isinstance(bits, tuple) else int(bits) * int(tags.get(277, 1))
    w, h = img.size
    if 322 in tags and 323 in tags:
        return int(tags[322]) * int(tags[323]) * bits // 8
    return min(int(tags.get(278, h) or h), h) * w * bits // 8


def load_image(data: bytes, max_pixels: int, target: tuple[int, int] | None = None) -> Image.Image:
    """Object bytes -> a loaded, upright PIL image in its source mode, or `ImageRejected`.

    The pixel limit is checked on the declared size, before any pixel is decoded. With a `target`
    (H, W), JPEGs are decoded in draft mode (libjpeg DCT scaling by 1/2, 1/4 or 1/8) to no less than
    the size the letterbox fits them into (which then only ever shrinks), so a 24-megapixel photo costs
    a fraction of a full decode. (Measured: 2.9 ms instead of 4.5 ms for an 800x600 JPEG to 224 px; to
    96 px, drafting to the fitted 96x72 instead of the 96x96 box decodes at 1/8 instead of 1/4: 2.75
    instead of 3.1 ms, docs/benchmarks.md.)
    EXIF orientation is applied (the image comes back as a viewer would show it).
    """
    img, orientation = _open_for_target(data, max_pixels, target)
    img = _load_pixels(data, img)
    if orientation is None:  # JPEG's was read from its header (its decoded copy carries no EXIF)
        orientation = _exif_orientation(img)
    return img.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else img


def _open_for_target(data: bytes, max_pixels: int, target: tuple[int, int] | None) -> tuple[Image.Image, int | None]:
    """Header checks (size limit, formats we name but do not decode) and JPEG draft; nothing decoded yet.
    The EXIF orientation comes back for JPEG only (None: read it after loading)."""
    if not data:
        raise ImageRejected("empty", "object has no bytes")
    _reject_known_non_images(data)
    img = _open(data, max_pixels)
    w, h = img.size
    if w * h > max_pixels:
        raise ImageRejected("bomb", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    if img.format == "TIFF" and _DNG_VERSION_TAG in getattr(img, "tag_v2", {}):
        raise ImageRejected("unsupported", "DNG camera raw (only its preview would decode)")
    # Read before any pixel only for JPEG (its EXIF is in the header; PNG's getexif() decodes the whole image)
    orientation = _exif_orientation(img) if img.format == "JPEG" else None
    if target is not None and img.format == "JPEG":
        th, tw = target
        if orientation in (5, 6, 7, 8):  # stored transposed; the target applies after rotation
            th, tw = tw, th
        scale = min(tw / w, th / h, 1.0)  # the size `letterbox` fits it into: draft to no less than that
        img.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
    return img, orientation


def _load_pixels(data: bytes, img: Image.Image) -> Image.Image:
    """`img` (opened from `data`, drafted) loaded: JPEG pixels through TurboJPEG when it takes them
    (streams.contract.jpeg), the rest through Pillow."""
    pixels = jpeg.turbo_pixels(data, img)
    if pixels is not None:
        return pixels
    _load(img)
    return img


def _load(img: Image.Image) -> None:
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected("bomb", str(exc)) from exc
    except MemoryError as exc:
        raise ImageRejected("bomb", f"{img.format} {img.width}x{img.height}: out of memory while decoding") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, zlib.error ...
        kind: RejectionKind = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise ImageRejected(kind, f"{img.format} decode failed: {exc}") from exc


def to_rgb(img: Image.Image, float_range: tuple[float, float] | None = None) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB with faithful colours.

    16-bit integer modes (I;16*, and I, assumed to hold 16-bit data) are scaled by 255/65535 (not clipped
    to white as Pillow's convert does); F is scaled from [0, 1] when it fits, else min-max stretched (over
    `float_range` when given: the whole image's extrema, for a band of it); alpha is composited on
    `ALPHA_BACKGROUND`; CMYK uses Pillow's conversion (Adobe-inverted CMYK JPEGs are un-inverted by the
    JPEG decoder; embedded ICC profiles are not applied).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        scaled = (np.clip(arr, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535  # = rint(v * 255 / 65535)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(img, dtype=np.float64), float_range), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, ALPHA_BACKGROUND)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageRejected("unsupported", f"cannot convert mode {mode} to RGB: {exc}") from exc


def _float_to_uint8(arr: np.ndarray, float_range: tuple[float, float] | None = None) -> np.ndarray:
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float_range if float_range is not None else (float(arr.min()), float(arr.max()))
    lo, hi = (0.0 if not np.isfinite(lo) else lo), (0.0 if not np.isfinite(hi) else hi)
    if lo < 0 or hi > 1:
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)


def _reject_known_non_images(data: bytes) -> None:
    head = data[:512]
    if head.startswith(b"%PDF"):
        raise ImageRejected("not_image", "PDF document")
    if head[4:12] in _UNSUPPORTED_BRANDS:
        raise ImageRejected("unsupported", f"HEIF/HEIC image ({head[8:12].decode('ascii', 'replace')})")
    if b"<svg" in head.lower():
        raise ImageRejected("unsupported", "SVG (vector) image")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Image.open (header only) with Pillow's bomb check at `max_pixels`, its warning raised as an error.

    Pillow reads the limit from a module global, so it is set and restored under a lock: concurrent
    decodes (a thread pool) cannot see each other's limit, and nothing leaks after the call. Pixel data
    is decoded outside the lock; `load_image` checks the declared size itself as well.
    """
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("bomb", str(exc)) from exc
        except UnidentifiedImageError as exc:
            if data.startswith(_RASTER_MAGIC) or data[8:12] == b"WEBP":
                raise ImageRejected("corrupt", "image signature present but the header does not decode") from exc
            raise ImageRejected("not_image", _describe_non_image(data)) from exc
        except Exception as exc:  # noqa: BLE001 - broken headers raise assorted errors
            raise ImageRejected("corrupt", f"header does not decode: {exc}") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _describe_non_image(data: bytes) -> str:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 512-byte boundary
            return "unrecognised binary data, not an image"
    return "text, not an image"


def _exif_orientation(img: Image.Image) -> int | None:
    if img.format == "JPEG" and "exif" not in img.info and "xmp" not in img.info:
        return None  # nothing to parse (getexif() would cost as much as a tenth of the decode)
    try:
        return img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF must not reject a decodable image
        return None
