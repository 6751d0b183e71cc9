"""Compare two training recipes on pooled held-out predictions, paired image by image.

Each side is one or more evaluated runs (RUN/eval_<split>.json, from `python -m trainer evaluate`), e.g.
the same recipe trained on the folds of `corpus folds`; their predictions are pooled. Images are matched
by path (each must be held out by exactly one run of each side). Reports each side's top-1, macro-F1 and
calibrated ECE on the pooled images, and the paired comparison: images only A gets right, only B gets
right, and the exact two-sided McNemar (sign test) p-value of that split. Writes JSON with --out.

example (10-fold cross-validation, test folds 0 2 4 6 8):
  python -m trainer compare --a runs/cv{0,2,4,6,8}-ft --b runs/cv{0,2,4,6,8}-probe --out cv.json
"""
from __future__ import annotations

import argparse
import json
from math import comb
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from streams.contract.cli import UserError
from trainer.metrics import summarize


class Side(BaseModel):
    runs: list[str]
    top1: float
    macro_f1: float
    ece: float


class Comparison(BaseModel):
    split: str
    n: int
    a: Side
    b: Side
    only_a_right: int
    only_b_right: int
    mcnemar_p: float      # exact two-sided binomial test of only_a_right vs only_b_right


class CompareError(UserError):
    """Runs that cannot be compared; the message is one line."""


def pooled(runs: list[str], split: str) -> tuple[list[str], dict[str, tuple[int, np.ndarray]]]:
    """(classes, {image path: (target index, calibrated probs)}) over the runs' eval_<split>.json."""
    classes, out = None, {}
    for run in runs:
        path = Path(run) / f"eval_{split}.json"
        if not path.is_file():
            raise CompareError(f"{path}: missing; run `python -m trainer evaluate --run {run} --split {split}`")
        try:
            ev = json.loads(path.read_text(encoding="utf-8"))
            ev_classes, predictions = ev["classes"], ev["predictions"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CompareError(f"{path}: not an evaluation ({type(e).__name__}: {e})") from None
        if classes is not None and ev_classes != classes:
            raise CompareError(f"{run}: classes {ev_classes} differ from {classes}")
        classes = ev_classes
        for p in predictions:
            key = str(Path(p["path"]).resolve())
            if key in out:
                raise CompareError(f"{run}: {p['path']} is held out by two runs of the same side")
            out[key] = (classes.index(p["target"]), np.array(p["probs"]))
    return classes, out


def mcnemar_p(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(a_runs: list[str], b_runs: list[str], split: str = "test") -> Comparison:
    classes, a = pooled(a_runs, split)
    classes_b, b = pooled(b_runs, split)
    if classes_b != classes:
        raise CompareError(f"the two sides have different classes: {classes} vs {classes_b}")
    if set(a) != set(b):
        raise CompareError(f"the sides hold out different images ({len(set(a) ^ set(b))} not in both)")
    keys = sorted(a)
    targets = np.array([a[k][0] for k in keys])

    def side(runs, preds) -> tuple[Side, np.ndarray]:
        probs = np.stack([preds[k][1] for k in keys])
        m = summarize(probs, targets, classes)
        return Side(runs=runs, top1=m["top1"], macro_f1=m["macro_f1"], ece=m["ece"]), probs.argmax(1) == targets

    sa, right_a = side(a_runs, a)
    sb, right_b = side(b_runs, b)
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return Comparison(split=split, n=len(keys), a=sa, b=sb, only_a_right=only_a, only_b_right=only_b,
                      mcnemar_p=mcnemar_p(only_a, only_b))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", nargs="+", required=True, metavar="RUN", help="evaluated run(s) of recipe A")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN", help="evaluated run(s) of recipe B")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to pool (default: test)")
    p.add_argument("--out", help="write the comparison as JSON here (default: print only)")


def main(args: argparse.Namespace) -> int:
    c = compare(args.a, args.b, args.split)
    for name, s in (("A", c.a), ("B", c.b)):
        print(f"{name}: top1={s.top1:.4f} macro_f1={s.macro_f1:.4f} ece={s.ece:.4f}  ({len(s.runs)} run(s))")
    print(f"{c.n} {c.split} images: only A right {c.only_a_right}, only B right {c.only_b_right}, "
          f"McNemar p={c.mcnemar_p:.3g}")
    if args.out:
        Path(args.out).write_text(c.model_dump_json(indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
