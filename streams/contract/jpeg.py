"""JPEG specifics of decoding (streams.contract.imaging): pixels through libjpeg-turbo's TurboJPEG API, and
the memory libjpeg needs for a file beyond its pixels.

Pillow opens the header (size guard, EXIF, draft scale); `turbo_pixels` then decodes the pixels with
simplejpeg at the scale Pillow's draft chose and with Pillow's settings (ISLOW DCT, fancy upsampling), so
they are the very same pixels (tests/streams/test_imaging.py) at less CPU: Pillow feeds libjpeg from
Python in chunks (2.36 vs 1.78 ms for an 800x600 q90 photo at 1/8, docs/benchmarks.md).
"""
from __future__ import annotations

import simplejpeg
from PIL import Image

SMALL_PIXELS = 250_000
"""Files up to this many pixels (before draft) are not worth reading the scan layout of."""


def turbo_pixels(data: bytes, img: Image.Image) -> Image.Image | None:
    """The pixels of `img` (a JPEG opened from `data` and drafted, RGB or greyscale) as a loaded image in
    its mode, or None for anything TurboJPEG refuses or warns about (truncated, corrupt, CMYK, 12-bit,
    arithmetic coding): Pillow then decodes it, or names the rejection, as before."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB" if img.mode == "RGB" else "GRAY",
                                     fastdct=False, fastupsample=False, strict=True,
                                     min_width=img.width, min_height=img.height)
    except ValueError:
        return None
    if arr.shape[:2] != (img.height, img.width):  # another scale than Pillow's draft: not the same pixels
        return None
    return Image.fromarray(arr[:, :, 0] if img.mode == "L" else arr, img.mode)


def coefficient_bytes(img: Image.Image, data: bytes | None) -> int:
    """A JPEG of more than one scan (progressive, or baseline with non-interleaved scans) is decoded by
    libjpeg through a buffer of every DCT coefficient of the whole image: 2 bytes per coefficient, 64 per
    8x8 block of each component, at full size whatever the DCT scaling. For a 100 MP progressive 4:4:4
    photo (1.1 MB of file) that is ~580 MB, where the drafted pixels are 6 MB. A baseline file whose
    first scan holds every component is single-scan; one that cannot be read so counts as multi-scan."""
    config = getattr(img, "decoderconfig", None)   # (scale, 0) once drafted
    scale = config[0] if config else 1
    w, h = img.width * scale, img.height * scale   # the size before draft (rounded up)
    if w * h <= SMALL_PIXELS:
        return 0
    layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * len(img.getbands())
    if not img.info.get("progressive") and data is not None:
        first = first_scan_components(data)
        if first is not None and first >= len(layers):  # one interleaved scan of every component: no buffer
            return 0
    hmax, vmax = max(lay[1] for lay in layers), max(lay[2] for lay in layers)
    blocks = 0
    for _, hs, vs, _ in layers:  # blocks of each component, padded to whole MCUs
        blocks += -(-w // (8 * hmax)) * hs * -(-h // (8 * vmax)) * vs
    return blocks * 64 * 2


def first_scan_components(data: bytes) -> int | None:
    """The number of components of a JPEG's first scan (its first SOS header), walking the marker
    segments from SOI; None when the header does not read so."""
    i, n = 2, len(data)
    while i + 4 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xDA:
            return data[i + 4]
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # standalone markers
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None
