"""Compare two training recipes on pooled held-out predictions, paired image by image.

Each side is one or more evaluated runs (RUN/eval_<split>.json, from `python -m trainer evaluate`), e.g.
the same recipe trained on the folds of `corpus folds`; their predictions are pooled. Images are matched
by path (each must be held out by exactly one run of each side). Reports each side's top-1, macro-F1 and
calibrated ECE on the pooled images, and the paired comparison: images only A gets right, only B gets
right, and the exact two-sided McNemar (sign test) p-value of that split. Beside each ECE, the ECE a perfectly
calibrated model with the same confidences would show on as many images (trainer.calibration.ece_floor):
below its 95th percentile, the measured ECE cannot be told from sampling noise. With the routing decisions that
`trainer evaluate` stores, also each side's trust numbers, pooled (each run applies its own rule): share
auto-routed and their accuracy, prediction sets, the same under shifted photography, non-artwork photos
auto-routed, and the unfamiliarity AUROC (mean over runs). Writes JSON with --out.

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
from trainer.calibration import ece_floor
from trainer.metrics import summarize


class Trust(BaseModel):
    """Routing you can trust, pooled over a side's runs (each run applies its own fitted rule)."""
    coverage: float                     # share of held-out photos auto-routed
    auto_accuracy: float | None         # accuracy of the auto-routed ones
    mean_set_size: float
    set_coverage: float                 # share whose prediction set holds the true class
    shifted_top1: float | None = None
    shifted_coverage: float | None = None
    shifted_auto_accuracy: float | None = None
    non_artwork_auto_share: float | None = None
    auroc_non_artwork: float | None = None   # mean over the runs
    auroc_shifted: float | None = None       # mean over the runs
    pooled_threshold: float | None = None    # --pool-val: the one confidence threshold all runs applied


class Side(BaseModel):
    runs: list[str]
    top1: float
    macro_f1: float
    ece: float
    ece_floor: float | None = None      # mean ECE of a perfectly calibrated model with these confidences, n images
    ece_floor_p95: float | None = None  # ... and its 95th percentile
    trust: Trust | None = None          # when every run's eval has routing decisions (trainer evaluate)


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


def read_evals(runs: list[str], split: str) -> list[dict]:
    out = []
    for run in runs:
        path = Path(run) / f"eval_{split}.json"
        if not path.is_file():
            raise CompareError(f"{path}: missing; run `python -m trainer evaluate --run {run} --split {split}`")
        try:
            ev = json.loads(path.read_text(encoding="utf-8"))
            ev["classes"], ev["predictions"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CompareError(f"{path}: not an evaluation ({type(e).__name__}: {e})") from None
        out.append(ev)
    return out


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def pooled_trust(evals: list[dict]) -> Trust | None:
    """Trust numbers pooled over the runs' predictions; None when a run was evaluated without them."""
    preds = [p for ev in evals for p in ev["predictions"]]
    if not preds or any("auto_route" not in p for p in preds):
        return None
    auto = [p for p in preds if p["auto_route"]]
    shifted = [p for ev in evals for p in ev.get("shifted_predictions", [])]
    s_auto = [p for p in shifted if p["auto_route"]]
    non_art = [p for ev in evals for p in ev.get("non_artwork_predictions", [])]

    def mean_of(key: str) -> float | None:
        vals = [v for ev in evals if (v := _dig(ev, key)) is not None]
        return float(np.mean(vals)) if vals else None

    return Trust(coverage=len(auto) / len(preds), auto_accuracy=_share([p["pred"] == p["target"] for p in auto]),
                 mean_set_size=float(np.mean([len(p["prediction_set"]) for p in preds])),
                 set_coverage=float(np.mean([p["target"] in p["prediction_set"] for p in preds])),
                 shifted_top1=_share([p["pred"] == p["target"] for p in shifted]),
                 shifted_coverage=_share([p["auto_route"] for p in shifted]),
                 shifted_auto_accuracy=_share([p["pred"] == p["target"] for p in s_auto]),
                 non_artwork_auto_share=_share([p["auto_route"] for p in non_art]),
                 auroc_non_artwork=mean_of("trust.non_artwork.auroc"), auroc_shifted=mean_of("trust.shifted.all.auroc"))


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def pooled(runs: list[str], split: str) -> tuple[list[str], dict[str, tuple[int, np.ndarray]]]:
    """(classes, {image path: (target index, calibrated probs)}) over the runs' eval_<split>.json."""
    classes, out = None, {}
    for run, ev in zip(runs, read_evals(runs, split)):
        if classes is not None and ev["classes"] != classes:
            raise CompareError(f"{run}: classes {ev['classes']} differ from {classes}")
        classes = ev["classes"]
        for p in ev["predictions"]:
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


def compare(a_runs: list[str], b_runs: list[str], split: str = "test",
            refit: tuple[float, float] | None = None, pool_val: bool = False) -> Comparison:
    """`refit` = (target accuracy, delta): refit each run's routing rule from its stored val predictions first;
    with `pool_val`, one confidence threshold per side from all its runs' val predictions pooled
    (trainer.trust.refit_pooled)."""
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
        evals = read_evals(runs, split)
        lam = None
        if refit and all("val_predictions" in ev for ev in evals):
            from trainer.trust import refit as refit_rule, refit_pooled

            if pool_val:
                lam, evals = refit_pooled(evals, *refit)
            else:
                evals = [refit_rule(ev, *refit) for ev in evals]
        elif pool_val:
            raise CompareError(f"--pool-val needs val predictions in every eval_{split}.json (trainer evaluate stores "
                               "them with the routing rule)")
        trust = pooled_trust(evals)
        if trust is not None and lam is not None:
            trust = trust.model_copy(update={"pooled_threshold": lam})
        floor, floor_p95 = ece_floor(probs)
        return Side(runs=runs, top1=m["top1"], macro_f1=m["macro_f1"], ece=m["ece"], ece_floor=floor,
                    ece_floor_p95=floor_p95, trust=trust), probs.argmax(1) == targets

    sa, right_a = side(a_runs, a)
    sb, right_b = side(b_runs, b)
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return Comparison(split=split, n=len(keys), a=sa, b=sb, only_a_right=only_a, only_b_right=only_b,
                      mcnemar_p=mcnemar_p(only_a, only_b))


def trust_line(t: Trust) -> str:
    def f(x, pct=True):
        return "-" if x is None else (f"{100 * x:.1f} %" if pct else f"{x:.3f}")
    pooled = "" if t.pooled_threshold is None else f"pooled-val threshold {t.pooled_threshold:.3f}: "
    return (f"{pooled}auto-routed {f(t.coverage)} at accuracy {f(t.auto_accuracy)}; sets {f(t.set_coverage)} hold the truth, "
            f"size {t.mean_set_size:.2f}; shifted: top1 {f(t.shifted_top1)}, auto-routed {f(t.shifted_coverage)} at "
            f"accuracy {f(t.shifted_auto_accuracy)}; non-artwork auto-routed {f(t.non_artwork_auto_share)}; "
            f"unfamiliarity AUROC non-artwork {f(t.auroc_non_artwork, False)}, shifted {f(t.auroc_shifted, False)}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", nargs="+", required=True, metavar="RUN", help="evaluated run(s) of recipe A")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN", help="evaluated run(s) of recipe B")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split to pool (default: test)")
    p.add_argument("--target-accuracy", type=float, metavar="T",
                   help="refit each run's routing rule for this target from its stored val predictions "
                        "(default: the rules evaluate fitted)")
    p.add_argument("--delta", type=float, default=0.1, help="with --target-accuracy: 1 - confidence (default: 0.1)")
    p.add_argument("--pool-val", action="store_true",
                   help="fit ONE confidence threshold per side on all its runs' val predictions pooled (e.g. ten "
                        "folds: ~10x the photos of one val split, enough to certify 95 %%), each run keeping its "
                        "unfamiliarity gate; the guarantee is then the recipe's (default target: 0.95)")
    p.add_argument("--out", help="write the comparison as JSON here (default: print only)")


def main(args: argparse.Namespace) -> int:
    if args.pool_val and args.target_accuracy is None:
        args.target_accuracy = 0.95
    if args.target_accuracy is not None and not (0 < args.target_accuracy < 1 and 0 < args.delta < 1):
        raise CompareError("--target-accuracy and --delta must lie strictly between 0 and 1")
    c = compare(args.a, args.b, args.split, None if args.target_accuracy is None else (args.target_accuracy, args.delta),
                pool_val=args.pool_val)
    for name, s in (("A", c.a), ("B", c.b)):
        print(f"{name}: top1={s.top1:.4f} macro_f1={s.macro_f1:.4f} ece={s.ece:.4f} (perfectly calibrated: "
              f"{s.ece_floor:.4f}, 95 % under {s.ece_floor_p95:.4f})  ({len(s.runs)} run(s))")
        if s.trust:
            print(f"   {trust_line(s.trust)}")
    print(f"{c.n} {c.split} images: only A right {c.only_a_right}, only B right {c.only_b_right}, "
          f"McNemar p={c.mcnemar_p:.3g}")
    if args.out:
        Path(args.out).write_text(c.model_dump_json(indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
