"""A tiny synthetic corpus of class-distinct images, for tests and demos without real photos.

Class k draws a shape (disc, square, horizontal or vertical stripes, triangle, ring, ...) in a hue
of its own on a noisy background, at a random position, scale and aspect ratio, so a small CNN can
learn it in a few epochs while letterboxing and augmentation are still exercised.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.corpus.manifest import ManifestRow, write_manifest

SHAPES = ("disc", "square", "hstripes", "vstripes", "triangle", "ring", "cross", "checker")


def draw(k: int, rng: np.random.Generator, size: tuple[int, int] = (64, 48)) -> Image.Image:
    w, h = size
    bg = tuple(int(v) for v in rng.integers(0, 80, 3))
    img = Image.new("RGB", (w, h), bg)
    hue = np.array([(k * 97) % 256, (k * 53 + 128) % 256, (k * 151 + 64) % 256])
    color = tuple(int(v) for v in np.clip(hue + rng.integers(-25, 26, 3), 0, 255))
    d = ImageDraw.Draw(img)
    s = int(min(w, h) * rng.uniform(0.5, 0.9))
    x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    box = (x0, y0, x0 + s, y0 + s)
    shape = SHAPES[k % len(SHAPES)]
    if shape == "disc":
        d.ellipse(box, fill=color)
    elif shape == "square":
        d.rectangle(box, fill=color)
    elif shape in ("hstripes", "vstripes"):
        for i in range(0, s, 6):
            d.rectangle((x0, y0 + i, x0 + s, y0 + i + 2) if shape == "hstripes" else (x0 + i, y0, x0 + i + 2, y0 + s),
                        fill=color)
    elif shape == "triangle":
        d.polygon([(x0, y0 + s), (x0 + s, y0 + s), (x0 + s // 2, y0)], fill=color)
    elif shape == "ring":
        d.ellipse(box, outline=color, width=max(2, s // 6))
    elif shape == "cross":
        d.rectangle((x0 + s // 3, y0, x0 + 2 * s // 3, y0 + s), fill=color)
        d.rectangle((x0, y0 + s // 3, x0 + s, y0 + 2 * s // 3), fill=color)
    else:
        for i in range(0, s, 8):
            for j in range(0, s, 8):
                if (i + j) // 8 % 2 == 0:
                    d.rectangle((x0 + i, y0 + j, x0 + i + 3, y0 + j + 3), fill=color)
    noise = rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def write_corpus(root: str | Path, labels: list[str], per_class: dict[str, int] | int = 24,
                 fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0,
                 department_ids: dict[str, int] | None = None) -> Path:
    """Write JPEGs and manifest.jsonl under root; returns the manifest path.

    per_class: images per label (an int, or {label: n} for an imbalanced corpus). Splits are assigned
    per class in the given fractions (exact counts, so small corpora keep every class in every split).
    department_ids: label -> the department id its rows carry (default: none).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k, label in enumerate(labels):
        n = per_class if isinstance(per_class, int) else per_class[label]
        n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
        for i in range(n):
            size = (int(rng.integers(40, 96)), int(rng.integers(40, 96)))
            buf = io.BytesIO()
            draw(k, rng, size).save(buf, format="JPEG", quality=92)
            data = buf.getvalue()
            object_id = f"{k:02d}{i:05d}"
            rel = f"images/{object_id}.jpg"
            (root / rel).write_bytes(data)
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            rows.append(ManifestRow(object_id=object_id, label=label, path=rel, sha256=hashlib.sha256(data).hexdigest(),
                                    bytes=len(data), width=size[0], height=size[1], split=split,
                                    department_id=(department_ids or {}).get(label),
                                    title=f"synthetic {SHAPES[k % len(SHAPES)]} {i}"))
    return write_manifest(root / "manifest.jsonl", rows)
