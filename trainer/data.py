"""Datasets from a corpus manifest: taxonomy mapping, augmentation, samplers.

Evaluation images go through `streams.contract.imaging.to_model_input` exactly (the serving preprocessing).
Training augmentation (random crop, optionally TrivialAugmentWide, flip, brightness/contrast) ends in that
same letterbox. Augmentation
randomness is drawn from a generator seeded by (seed, epoch, sample index), so a sample's augmentation
does not depend on the number of processes, DataLoader workers or where a run was resumed.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from streams.contract.cli import UserError
from streams.contract.imaging import MAX_IMAGE_PIXELS, load_image, to_model_input, to_rgb
from trainer.corpus.manifest import ManifestRow, manifest_path, read_manifest, resolve_image
from streams.contract.taxonomy import Taxonomy



class DataError(UserError):
    """A corpus that cannot be trained on; the message is one line."""


@dataclass
class Sample:
    path: Path
    label: str       # the manifest label
    target: int      # class index in the taxonomy


def load_split(rows: list[ManifestRow], base: Path, taxonomy: Taxonomy, split: str,
               max_images: int | None = None) -> list[Sample]:
    """The rows of one split whose label the taxonomy keeps, as (path, label, target)."""
    index = taxonomy.label_to_index()
    out = []
    for r in rows:
        if r.split != split or r.label not in index:
            continue
        path = resolve_image(base, r)
        if isinstance(path, str):
            raise DataError(f"{r.path}: remote images are not supported for training; stage the corpus locally")
        out.append(Sample(path, r.label, index[r.label]))
    if max_images is not None and len(out) > max_images:
        rng = np.random.default_rng(0)  # a fixed subset, stratification is not worth the code here
        out = [out[i] for i in sorted(rng.choice(len(out), max_images, replace=False))]
    return out


def load_corpus(corpus: str | Path) -> tuple[list[ManifestRow], Path]:
    path = manifest_path(corpus)
    return read_manifest(path), path.parent


def class_weights(samples: list[Sample], num_classes: int) -> torch.Tensor:
    """Inverse-frequency loss weights, mean 1 over present classes; absent classes get 0."""
    counts = Counter(s.target for s in samples)
    present = [c for c in range(num_classes) if counts[c]]
    w = torch.zeros(num_classes)
    for c in present:
        w[c] = len(samples) / (len(present) * counts[c])
    return w


def trivial_augment(img: Image.Image, g: torch.Generator) -> Image.Image:
    """torchvision's TrivialAugmentWide (one random op at a random strength), drawn from `g`: the op uses
    torch's global generator, so it runs in a forked RNG state seeded from g (nothing else is disturbed)."""
    from torchvision.transforms import TrivialAugmentWide

    seed = int(torch.randint(2**62, (), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TrivialAugmentWide()(img)


def photo_augment(img: Image.Image, g: torch.Generator) -> Image.Image:
    """A change of photography, each with probability 0.25 (trainer/shift.py's kinds at its strengths, other
    draws): new backdrop, perspective, colour cast, lighting, then blur or a phone photo."""
    from trainer.shift import apply_kind

    rng = np.random.default_rng(int(torch.randint(2**62, (), generator=g)))
    for kind in ("background", "perspective", "colour", "lighting", rng.choice(["blur", "phone"])):
        if rng.random() < 0.25:
            img = apply_kind(img, kind, rng)
    return img


def augment(img: Image.Image, size: tuple[int, int], g: torch.Generator, policy: str = "basic") -> np.ndarray:
    """Random crop (60-100% area, aspect 3/4-4/3), [TrivialAugmentWide | a change of photography],
    letterbox, horizontal flip, brightness/contrast."""
    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=g).item()

    if policy == "photo":  # the letterbox bars of the stored photo are no part of the scene
        from trainer.shift import trim_bars

        img = trim_bars(img)
    w, h = img.size
    area = u(0.6, 1.0) * w * h
    ratio = math.exp(u(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, round(math.sqrt(area * ratio))), min(h, round(math.sqrt(area / ratio)))
    x0, y0 = round(u(0, w - cw)), round(u(0, h - ch))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if policy == "trivial":
        img = trivial_augment(img, g)
    elif policy == "photo":
        img = photo_augment(img, g)
    x = to_model_input(img, size).astype(np.float32)
    if u(0, 1) < 0.5:
        x = x[:, :, ::-1]
    mean = x.mean()
    x = (x - mean) * u(0.8, 1.2) + mean * u(0.8, 1.2)
    return np.ascontiguousarray(np.clip(x, 0, 255).astype(np.uint8))


class ImageDataset(Dataset):
    """(uint8 tensor (3,H,W), class index, sample index); `epoch` is set by the trainer each epoch."""

    def __init__(self, samples: list[Sample], size: tuple[int, int], train: bool, seed: int = 0,
                 policy: str = "basic"):
        self.samples, self.size, self.train, self.seed, self.policy = samples, size, train, seed, policy
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> Image.Image:
        # Exactly the worker's decode (EXIF orientation, JPEG draft mode, 16-bit scaling, alpha on white), so
        # training and evaluation see what serving sees.
        data = Path(self.samples[i].path).read_bytes()
        return to_rgb(load_image(data, MAX_IMAGE_PIXELS, self.size))

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.train:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            x = augment(img, self.size, g, self.policy)
        else:
            x = to_model_input(img, self.size)
        return torch.from_numpy(x), self.samples[i].target, i


class ShardSampler(Sampler[int]):
    """Evaluation shard without padding: rank r gets indices r, r+world, ... (every sample exactly once)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
