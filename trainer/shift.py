"""Test sets for the unfamiliarity score: corpus photos under a change of photography, and non-artwork photos.

`shift(img, kind, key)` re-photographs a corpus photo the way another museum, a phone or a bad light would,
reproducibly: the random draws come from a generator seeded by (kind, key), key being e.g. the image's
sha256. Kinds:

    background   the smooth studio backdrop (the flat region connected to the border) replaced by a
                 coloured, mottled surface (a table, a wall)
    colour       a colour cast (tungsten, fluorescent, daylight-blue white balance)
    lighting     a gamma change and light falling off across the object
    blur         out of focus (Gaussian blur, 1.5-3 px at 224 px)
    perspective  taken from an angle (the corners moved 8-18 % of the side)
    phone        a phone photo: down-sampled, sensor noise, over-sharpened, JPEG quality 20-35

`non_artwork()` returns the real photographs that scikit-image ships in `skimage.data` (an astronaut, a
cat, coffee, a rocket, a camera man, the moon, text, textures, micrographs...; `coins` is left out: it is a
museum photo of ancient coins, an artwork).
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageFilter

KINDS = ("background", "colour", "lighting", "blur", "perspective", "phone")
NON_ARTWORK = ("astronaut", "camera", "chelsea", "clock", "coffee", "moon", "page", "rocket", "text",
               "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "cell")


def rng_for(kind: str, key: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{kind}:{key}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _backdrop_mask(a: np.ndarray, flat: float = 2.5) -> np.ndarray:
    """Pixels of the studio backdrop: smooth (small luminance gradient, so a graded backdrop counts) and
    connected to the border of the photo."""
    from scipy import ndimage

    lum = a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    smooth = ndimage.gaussian_gradient_magnitude(lum, sigma=1.5) < flat
    labels, _ = ndimage.label(smooth)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    mask = np.isin(labels, edge[edge > 0])
    return ndimage.binary_opening(mask, iterations=2)


def _surface(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A mottled surface in a random colour: smoothed noise at two scales plus a gradient, (h, w, 3) float."""
    from scipy import ndimage

    base = rng.uniform(40, 220, size=3)
    blobs = Image.fromarray(rng.normal(0, 1, (6, 6)).astype(np.float32), mode="F")
    coarse = np.asarray(blobs.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    fine = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=1.5)
    tex = 40 * coarse / (coarse.std() + 1e-6) + 12 * fine / (fine.std() + 1e-6)
    ramp = np.linspace(-25, 25, w)[None, :] * rng.choice([-1, 1])
    return np.clip(base[None, None, :] + (tex + ramp)[..., None] * rng.uniform(0.6, 1.2, size=3), 0, 255)


def _background(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = _backdrop_mask(a)
    out = a.astype(np.float32)
    out[mask] = _surface(*a.shape[:2], rng)[mask]
    return out


def _colour(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    casts = [(1.25, 1.0, 0.7), (0.85, 1.12, 0.85), (0.75, 0.95, 1.3), (1.15, 0.9, 1.1)]
    gain = np.array(casts[rng.integers(len(casts))]) * rng.uniform(0.9, 1.1, size=3)
    return a.astype(np.float32) * gain


def _lighting(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = a.shape[:2]
    gamma = rng.choice([rng.uniform(0.55, 0.75), rng.uniform(1.4, 1.9)])
    x = 255.0 * (a.astype(np.float32) / 255.0) ** gamma
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5))
    return x * (1.0 + rng.uniform(0.6, 1.0) * ramp)[..., None]


def _perspective(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    dst = src + rng.uniform(0.08, 0.18, size=(4, 2)) * np.array([w, h]) * np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)])
    # coefficients mapping output (dst) points to input (src) points, as PIL's PERSPECTIVE expects
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(rows), src.reshape(-1))
    fill = tuple(int(c) for c in np.median(np.asarray(img)[0], axis=0))
    return img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR, fillcolor=fill)


def _phone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    s = rng.uniform(0.4, 0.6)
    small = img.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)
    a = np.asarray(small, dtype=np.float32) + rng.normal(0, rng.uniform(4, 9), size=(small.height, small.width, 3))
    small = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(ImageFilter.UnsharpMask(2, 160, 2))
    buf = io.BytesIO()
    small.resize((w, h), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=int(rng.integers(20, 36)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def trim_bars(img: Image.Image, level: int = 16) -> Image.Image:
    """Without black letterbox bars (rows/columns that are black all along), as the photo was taken."""
    a = np.asarray(img.convert("RGB")).max(axis=2)
    rows, cols = np.flatnonzero(a.max(axis=1) > level), np.flatnonzero(a.max(axis=0) > level)
    if len(rows) == 0 or len(cols) == 0:
        return img
    return img.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def shift(img: Image.Image, kind: str, key: str) -> Image.Image:
    """`img` (RGB) as photographed differently (`kind`, one of KINDS), without letterbox bars; the same
    (kind, key) always gives the same image."""
    if kind not in KINDS:
        raise ValueError(f"unknown shift {kind!r}; choose from {', '.join(KINDS)}")
    return apply_kind(trim_bars(img.convert("RGB")), kind, rng_for(kind, key))


def apply_kind(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One change of photography with the draws of `rng` (training augmentation uses it too)."""
    img = img.convert("RGB")
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 3.0) * max(img.size) / 224))
    if kind == "perspective":
        return _perspective(img, rng)
    if kind == "phone":
        return _phone(img, rng)
    a = np.asarray(img)
    out = {"background": _background, "colour": _colour, "lighting": _lighting}[kind](a, rng)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def non_artwork(names: tuple[str, ...] = NON_ARTWORK) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) for each of scikit-image's bundled real photographs (no download)."""
    from skimage import data

    out = []
    for name in names:
        a = np.asarray(getattr(data, name)())
        if a.dtype != np.uint8:
            a = np.clip(a * (255 if a.max() <= 1 else 1), 0, 255).astype(np.uint8)
        out.append((name, Image.fromarray(a).convert("RGB")))
    return out
