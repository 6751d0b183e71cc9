"""Evaluate a run on a split: top-1/top-3, macro-F1, per-class precision/recall, confusion, calibration, and
routing you can trust (coverage and accuracy of auto-routed decisions, unfamiliar photos).

The temperature is (re)fitted on the val split and stored in RUN/calibration.json (export bakes it into the
served model); the split's expected calibration error is reported before and after it. The unfamiliarity
score (fitted on the train split's features) and the routing rule (fitted on val for --target-accuracy)
are stored in RUN/unfamiliar.pt and RUN/routing.json, and measured on the split, on shifted copies of its
photos and on non-artwork photos (trainer/trust.py, docs/trust.md). Writes RUN/eval_<split>.json with the
metrics and every sample's prediction (path, label, calibrated probs, unfamiliarity, auto_route, reason,
prediction_set), so a report can show the best and worst examples. `--group-by met-6` adds the same metrics for a coarser
taxonomy, summing the fine classes' probabilities per group.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from trainer import distributed as D
from trainer import trust, unfamiliar
from trainer.calibration import ece, ece_floor, fit_temperature, nll, softmax
from trainer.data import DataError, ImageDataset, load_corpus, load_split
from trainer.metrics import group_probs, summarize
from trainer.run import Calibration, RunInfo, load_model, write_json
from streams.contract.taxonomy import Taxonomy, TaxonomyClass, TaxonomyError, load_taxonomy


def run_taxonomy(info: RunInfo) -> Taxonomy:
    """The taxonomy exactly as the run trained it (from run.json, not from today's YAML)."""
    return Taxonomy(name=info.taxonomy, classes=[TaxonomyClass(name=c, labels=info.class_labels[c])
                                                 for c in info.classes])


def grouping(info: RunInfo, group_by: str) -> tuple[Taxonomy, list[int]]:
    """The group taxonomy and, for each of the run's classes, its group index."""
    groups = load_taxonomy(group_by)
    index = groups.label_to_index()
    missing = [c for c in info.classes if c not in index]
    if missing:
        raise TaxonomyError(f"--group-by {group_by}: class {missing[0]!r} of the run is in no group")
    return groups, [index[c] for c in info.classes]


def evaluate_run(run_dir: str | Path, split: str = "test", group_by: str | None = None, corpus: str | None = None,
                 batch_size: int = 64, workers: int = 2, device: str = "cpu",
                 trust_cfg: trust.TrustConfig | None = None) -> dict:
    """Evaluate, refit and store the temperature, fit and store the unfamiliarity score and routing rule (with
    `trust_cfg`, default TrustConfig()), write RUN/eval_<split>.json; returns its content."""
    run_dir = Path(run_dir)
    trust_cfg = trust.TrustConfig() if trust_cfg is None else trust_cfg
    info, model = load_model(run_dir)
    d = D.setup(device)
    rows, base = load_corpus(corpus or info.manifest)
    tax = run_taxonomy(info)
    size = (info.image_size, info.image_size)

    cache: dict[str, tuple] = {}

    def outputs_of(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        if name in cache:
            return cache[name]
        samples = load_split(rows, base, tax, name)
        if not samples:
            raise DataError(f"{info.manifest}: no {name} images with a label in taxonomy {tax.name}")
        logits, feats = trust.predict_features(model, ImageDataset(samples, size, train=False), batch_size,
                                                  workers, d.device)
        cache[name] = logits, feats, np.array([s.target for s in samples]), samples
        return cache[name]

    val_logits, val_feats, val_targets, val_samples = outputs_of("val")
    t = fit_temperature(val_logits, val_targets)
    cal = Calibration(temperature=t, val_ece_before=ece(softmax(val_logits), val_targets),
                      val_ece_after=ece(softmax(val_logits, t), val_targets),
                      val_nll_before=nll(val_logits, val_targets), val_nll_after=nll(val_logits, val_targets, t))
    write_json(run_dir / "calibration.json", cal)
    logits, feats, targets, samples = outputs_of(split)
    probs = softmax(logits, t)
    result = {"run": info.name, "split": split, "classes": info.classes, "taxonomy": info.taxonomy,
              "temperature": t, "metrics": summarize(probs, targets, info.classes)}
    result["metrics"]["ece_uncalibrated"] = ece(softmax(logits), targets)
    result["metrics"]["ece_floor"], result["metrics"]["ece_floor_p95"] = ece_floor(probs)
    result["metrics"]["nll_uncalibrated"] = nll(logits, targets)
    result["metrics"]["nll"] = nll(logits, targets, t)
    if group_by:
        groups, of = grouping(info, group_by)
        g_probs = group_probs(probs, of, len(groups.classes))
        result["grouped"] = {"taxonomy": groups.name, "classes": groups.class_names,
                             "metrics": summarize(g_probs, np.array(of)[targets], groups.class_names)}
    train_feats = outputs_of("train")[1]
    rule, scorer = trust.fit(run_dir, info.classes, train_feats, softmax(val_logits, t), val_targets, val_feats,
                             trust_cfg, unfamiliar.default_taps(model))
    result["trust"], decided, extra = trust.measure(model, rule, scorer, probs, targets, feats, samples, size, t,
                                                    trust_cfg, batch_size, workers, d.device)
    result["predictions"] = [
        {"path": str(s.path), "label": s.label, "target": info.classes[s.target],
         "pred": info.classes[int(p.argmax())], "confidence": float(p.max()), "probs": [round(float(x), 6) for x in p],
         **dec}
        for s, p, dec in zip(samples, probs, decided)]
    result |= {f"{k}_predictions": v for k, v in extra.items()}
    result["val_predictions"] = trust.val_predictions(val_samples, softmax(val_logits, t),
                                                      trust.scores(scorer, val_feats), info.classes)
    write_json(run_dir / f"eval_{split}.json", result)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `python -m trainer train`")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate (default: test)")
    p.add_argument("--group-by", metavar="TAXONOMY",
                   help="also report metrics in a coarser taxonomy (e.g. met-6 for a met-19 run) (default: none)")
    p.add_argument("--corpus", help="corpus dir/manifest if it moved since training (default: the run's manifest)")
    p.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    dflt = trust.TrustConfig.model_fields
    p.add_argument("--target-accuracy", type=float, default=dflt["target_accuracy"].default,
                   help="required accuracy of auto-routed decisions; the routing rule is fitted on val for it "
                        "(default: %(default)s)")
    p.add_argument("--delta", type=float, default=dflt["delta"].default,
                   help="the target holds with probability 1 - delta over the val photos (default: %(default)s)")
    p.add_argument("--set-coverage", type=float,
                   help="conformal prediction sets hold the true class this often (default: --target-accuracy)")
    p.add_argument("--false-alarm", type=float, default=dflt["false_alarm"].default,
                   help="share of val photos above the unfamiliarity threshold (default: %(default)s)")
    p.add_argument("--knn", type=int, default=dflt["k"].default,
                   help="unfamiliarity: distance to the k-th nearest training photo (default: %(default)s)")
    p.add_argument("--no-shifted", dest="shifted", action="store_false",
                   help="skip the shifted and non-artwork photo sets (default: measure them)")


def main(args: argparse.Namespace) -> int:
    try:
        cfg = trust.TrustConfig(target_accuracy=args.target_accuracy, delta=args.delta, set_coverage=args.set_coverage,
                                false_alarm=args.false_alarm, k=args.knn, shifted=args.shifted)
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    r = evaluate_run(args.run, args.split, args.group_by, args.corpus, args.batch_size, args.workers, args.device, cfg)
    m = r["metrics"]
    print(f"{r['run']} {r['split']} n={m['n']}: top1={m['top1']:.4f} top3={m['top3']:.4f} macro_f1={m['macro_f1']:.4f} "
          f"ece {m['ece_uncalibrated']:.4f} -> {m['ece']:.4f} (T={r['temperature']:.3f}; a perfectly calibrated model "
          f"would show {m['ece_floor']:.4f}, 95 % under {m['ece_floor_p95']:.4f})")
    for name, pc in m["per_class"].items():
        print(f"  {name:40s} P={pc['precision']:.3f} R={pc['recall']:.3f} F1={pc['f1']:.3f} n={pc['support']}")
    if "grouped" in r:
        g = r["grouped"]["metrics"]
        print(f"grouped by {r['grouped']['taxonomy']}: top1={g['top1']:.4f} macro_f1={g['macro_f1']:.4f}")
    print(trust.summary_lines(r["trust"]))
    print(f"wrote {Path(args.run) / ('eval_' + args.split + '.json')}, {trust.RULE_FILE}, unfamiliar.pt")
    return 0
