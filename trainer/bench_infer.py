"""Served images/s of a backbone: the traced two-output model (probabilities + unfamiliarity) on this CPU.

Builds `--arch` at `--image-size` with a fresh head for `--classes` classes and an unfamiliarity bank of
`--bank` training photos (trainer/unfamiliar.py; the weights do not change the speed), traces it
(TorchScript, channels_last, as served by the CPU config), and times batches of uint8 images after a
warm-up: the median images/s over `--repeats` for each `--batch`. Prints one line per batch size and
writes JSON with --out.

example: python -m trainer bench infer --arch tf_efficientnet_lite2 --image-size 260 --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from trainer.models import available, create_model
from trainer.unfamiliar import Trusted, Unfamiliarity, default_taps, logits_and_features


def bench(arch: str, image_size: int, batches: list[int], classes: int = 4, bank: int = 850, repeats: int = 5,
          threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(arch, classes).eval()
    taps = default_taps(model)
    with torch.no_grad():
        feats = logits_and_features(model, torch.zeros(1, 3, image_size, image_size), taps)[1].shape[1]
    served = Trusted(model, 1.0, Unfamiliarity(torch.randn(bank, feats), taps=taps)).eval()
    served = served.to(memory_format=torch.channels_last)
    out = {"arch": arch, "image_size": image_size, "torch_threads": torch.get_num_threads(),
           "torch_version": torch.__version__, "bank": bank, "images_per_s": {}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = torch.randint(0, 256, (max(batches), 3, image_size, image_size), dtype=torch.uint8)
        traced = torch.jit.trace(served, example.contiguous(memory_format=torch.channels_last))
        for b in batches:
            x = example[:b].contiguous(memory_format=torch.channels_last)
            for _ in range(2):
                traced(x)
            rates = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                traced(x)
                rates.append(b / (time.perf_counter() - t0))
            out["images_per_s"][str(b)] = round(statistics.median(rates), 2)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="tf_efficientnet_lite0", help=f"backbone: {', '.join(available())} (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=224, help="square input size (default: %(default)s)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (default: 1 8 32)")
    p.add_argument("--classes", type=int, default=4, help="output classes (default: %(default)s)")
    p.add_argument("--bank", type=int, default=850, help="training photos in the unfamiliarity bank (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed batches per size; the median is kept (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", help="write the result as JSON here (default: print only)")


def main(args: argparse.Namespace) -> int:
    r = bench(args.arch, args.image_size, args.batch, args.classes, args.bank, args.repeats, args.threads)
    for b, rate in r["images_per_s"].items():
        print(f"{r['arch']} {r['image_size']} px, batch {b}, {r['torch_threads']} thread(s): {rate} images/s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
