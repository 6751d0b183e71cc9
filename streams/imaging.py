"""Image preprocessing shared by serving and training: what the model sees is decided here, once.

The served TorchScript model takes uint8 NCHW RGB images of the size its model repository declares;
`to_model_input` produces exactly that from a decoded PIL image. The trainer uses the same function for
evaluation so that served and evaluated inputs are identical.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

PAD_RGB = (0, 0, 0)


def letterbox(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fit the whole artwork inside (height, width) keeping its aspect ratio; pad with black bars."""
    h, w = size
    img = img.convert("RGB") if img.mode != "RGB" else img
    scale = min(w / img.width, h / img.height)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    if (nw, nh) != img.size:
        img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if (nw, nh) == (w, h):
        return img
    canvas = Image.new("RGB", (w, h), PAD_RGB)
    canvas.paste(img, ((w - nw) // 2, (h - nh) // 2))
    return canvas


def to_chw_uint8(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> contiguous uint8 array of shape (3, H, W)."""
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))


def to_model_input(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Decoded image -> the model's input tensor for one image: uint8 (3, H, W), letterboxed."""
    return to_chw_uint8(letterbox(img, size))
