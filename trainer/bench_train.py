"""Training throughput: our loop (trainer.train.train_one_epoch + trainer.data.ImageDataset) vs a plain
torchvision-reference-style loop on the same model, files and threads, in one run; and data loading alone.

The reference reads the same image files with a plain torchvision-transforms dataset (RandomResizedCrop,
horizontal flip, ColorJitter, PILToTensor) and runs `for images, targets in loader: loss.backward();
optimizer.step()`. Both start from the same initial weights. After a short warm-up of each, the two loops
alternate for --repeats epochs each and the median images/s is reported, with the time each spent waiting
for its DataLoader. Data loading alone iterates each DataLoader once without a model. Writes JSON (--out) and
prints it. The corpus is a synthetic one written to a temporary directory unless --corpus is given.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms as T

from streams.contract.cli import invalid_option
from trainer import distributed as D
from trainer.data import DataError, ImageDataset, Sample, class_weights, load_corpus, load_split
from trainer.models import available, create_model
from trainer.run import TrainConfig
from trainer.synthetic import write_corpus
from streams.contract.taxonomy import load_taxonomy
from trainer.train import lr_factor, param_groups, train_one_epoch

SYNTHETIC_LABELS = ["disc", "square", "hstripes", "vstripes", "triangle", "ring"]


class BenchSettings(BaseModel):
    arch: str = "mobilenet_v3_small"
    images: int = Field(256, ge=1)
    image_size: int = Field(128, ge=16)
    batch_size: int = Field(32, ge=1)
    threads: int = Field(default_factory=torch.get_num_threads, ge=1)
    workers: int = Field(0, ge=0)
    repeats: int = Field(3, ge=1)
    warmup_batches: int = Field(2, ge=0)
    corpus: str | None = None
    seed: int = 0


class LoopResult(BaseModel):
    images_per_s: float          # median over the repeats
    runs_images_per_s: list[float]
    data_wait_s: float           # median time per epoch spent waiting for the next batch
    seconds: float               # median epoch time


class BenchResult(BaseModel):
    settings: BenchSettings
    torch_threads: int
    torch_version: str
    images: int
    classes: int
    ours: LoopResult
    reference: LoopResult
    ratio: float                 # ours / reference training images/s (>= 1.0: ours is not slower)
    data_loading_images_per_s: dict[str, float]  # {"ours": ..., "reference": ...}, no model


class ReferenceDataset(Dataset):
    """What a torchvision reference script would do with the same files: PIL + torchvision transforms."""

    def __init__(self, samples: list[Sample], size: int):
        self.samples = samples
        self.transform = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)),
                                    T.RandomHorizontalFlip(), T.ColorJitter(brightness=0.2, contrast=0.2),
                                    T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        with Image.open(self.samples[i].path) as im:
            img = im.convert("RGB")
        return self.transform(img), self.samples[i].target


class Timed:
    """Wraps a DataLoader; accumulates the seconds spent in next() (waiting for data) and counts images."""

    def __init__(self, loader, limit: int | None = None):
        self.loader, self.limit = loader, limit
        self.wait = 0.0
        self.images = 0

    def __iter__(self):
        it = iter(self.loader)
        for _ in range(len(self.loader) if self.limit is None else min(self.limit, len(self.loader))):
            tic = time.perf_counter()
            batch = next(it)
            self.wait += time.perf_counter() - tic
            self.images += len(batch[1])
            yield batch


def reference_epoch(model, loader, optimizer, weights, label_smoothing: float) -> None:
    """The torchvision reference's train_one_epoch, reduced to its essentials."""
    model.train()
    criterion = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
    for images, targets in loader:
        loss = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def load_samples(s: BenchSettings, tmp: Path) -> list[Sample]:
    """The train split of --corpus (or a synthetic corpus written under tmp), at most s.images images."""
    if s.corpus is None:
        per_class = -(-s.images // len(SYNTHETIC_LABELS))
        write_corpus(tmp / "corpus", SYNTHETIC_LABELS, per_class, fractions=(1.0, 0.0, 0.0), seed=s.seed)
    rows, base = load_corpus(s.corpus or tmp / "corpus")
    tax = load_taxonomy("corpus", (r.label for r in rows))
    samples = load_split(rows, base, tax, "train", s.images)
    if not samples:
        raise DataError(f"{s.corpus}: no train images")
    return samples


def median_result(runs: list[tuple[int, float, float]]) -> LoopResult:
    """runs: (images, seconds, data wait seconds) per epoch."""
    rates = [n / sec for n, sec, _ in runs]
    return LoopResult(images_per_s=statistics.median(rates), runs_images_per_s=rates,
                      seconds=statistics.median(sec for _, sec, _ in runs),
                      data_wait_s=statistics.median(w for _, _, w in runs))


def loading_rate(loader) -> float:
    timed = Timed(loader)
    tic = time.perf_counter()
    for _ in timed:
        pass
    return timed.images / (time.perf_counter() - tic)


def bench(s: BenchSettings) -> BenchResult:
    torch.set_num_threads(s.threads)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        samples = load_samples(s, Path(tmp))
        num_classes = max(x.target for x in samples) + 1
        cfg = TrainConfig(corpus=s.corpus or tmp, out=tmp, arch=s.arch, pretrained=False, image_size=s.image_size,
                          batch_size=s.batch_size, workers=s.workers, seed=s.seed, device="cpu", epochs=1000)
        d = D.Dist(0, 1, torch.device("cpu"))
        torch.manual_seed(s.seed)
        model = create_model(s.arch, num_classes, pretrained=False)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        weights = class_weights(samples, num_classes)

        ours_ds = ImageDataset(samples, (s.image_size, s.image_size), train=True, seed=s.seed)
        ours_dl = DataLoader(ours_ds, batch_size=s.batch_size, num_workers=s.workers,
                             sampler=DistributedSampler(ours_ds, num_replicas=1, rank=0, shuffle=True, seed=s.seed))
        ref_dl = DataLoader(ReferenceDataset(samples, s.image_size), batch_size=s.batch_size, shuffle=True,
                            num_workers=s.workers)

        def run_ours(limit: int | None) -> tuple[int, float, float]:
            model.load_state_dict(initial)
            model.to(memory_format=torch.channels_last)  # as trainer.train.train does
            optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, len(ours_dl)))
            timed = Timed(ours_dl, limit)
            tic = time.perf_counter()
            train_one_epoch(model, timed, optimizer, scheduler, weights, cfg, d, frozen=False, amp=False, epoch=0)
            return timed.images, time.perf_counter() - tic, timed.wait

        def run_reference(limit: int | None) -> tuple[int, float, float]:
            model.load_state_dict(initial)
            model.to(memory_format=torch.contiguous_format)
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            timed = Timed(ref_dl, limit)
            tic = time.perf_counter()
            reference_epoch(model, timed, optimizer, weights, cfg.label_smoothing)
            return timed.images, time.perf_counter() - tic, timed.wait

        if s.warmup_batches:
            run_ours(s.warmup_batches)
            run_reference(s.warmup_batches)
        ours, ref = [], []
        for _ in range(s.repeats):  # alternate, so both see the same machine load on average
            ours.append(run_ours(None))
            ref.append(run_reference(None))
        loading = {"ours": loading_rate(ours_dl), "reference": loading_rate(ref_dl)}
    o, r = median_result(ours), median_result(ref)
    return BenchResult(settings=s, torch_threads=torch.get_num_threads(), torch_version=torch.__version__,
                       images=len(samples), classes=num_classes, ours=o, reference=r,
                       ratio=o.images_per_s / r.images_per_s, data_loading_images_per_s=loading)


def add_arguments(p: argparse.ArgumentParser) -> None:
    dflt = BenchSettings.model_fields
    p.add_argument("--out", metavar="FILE.json", help="also write the JSON result here (default: stdout only)")
    p.add_argument("--arch", default=dflt["arch"].default,
                   help=f"model, random weights: {', '.join(available())} (default: {dflt['arch'].default})")
    p.add_argument("--corpus", help="corpus dir/manifest whose train split is read (default: a synthetic corpus "
                   "of --images JPEGs, 40-96 px, written to a temporary directory)")
    for name, text in [("images", "images per epoch (train split capped to this)"),
                       ("image_size", "square model input in pixels"),
                       ("batch_size", "batch size of both loops"),
                       ("workers", "DataLoader worker processes of both loops"),
                       ("repeats", "timed epochs per loop (alternating); the median is reported"),
                       ("warmup_batches", "untimed warm-up batches per loop before timing"),
                       ("seed", "seed of weights, shuffle and synthetic corpus")]:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=dflt[name].default,
                       help=f"{text} (default: {dflt[name].default})")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch intra-op threads for both loops (default: torch's, here {torch.get_num_threads()})")


def main(args: argparse.Namespace) -> int:
    try:
        settings = BenchSettings(**{k: getattr(args, k) for k in BenchSettings.model_fields})
    except ValidationError as e:
        raise invalid_option(e) from None
    result = bench(settings)
    text = result.model_dump_json(indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    print(f"ours {result.ours.images_per_s:.1f} images/s, reference {result.reference.images_per_s:.1f} images/s, "
          f"ratio {result.ratio:.3f}; data loading ours {result.data_loading_images_per_s['ours']:.1f}, "
          f"reference {result.data_loading_images_per_s['reference']:.1f} images/s", file=sys.stderr)
    return 0
