"""The per-fold rows of docs/trust.md section 7 for one cross-validated recipe, and its pooled top-1.

Reads runs/cv<k>-NAME/eval_test.json (from `trainer evaluate --split test`) for the folds that have one, and
the train CPU seconds from cv.sh's logs (the `/usr/bin/time` lines it prints), if given.

usage: python experiments/trust/fold_table.py NAME [CV_LOG ...]
   e.g. python experiments/trust/fold_table.py l1-j cv-l1.log
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def train_cpu(name: str, logs: list[Path]) -> dict[int, float]:
    """fold -> user CPU seconds of its (last) `trainer train` in cv.sh's logs."""
    line = re.compile(r"train(?: \(resumed\))? runs/cv(\d+)-%s [\d.]+ s wall ([\d.]+) s user" % re.escape(name))
    cpu: dict[int, float] = {}
    for log in logs:
        for m in line.finditer(log.read_text(errors="replace")):
            cpu[int(m[1])] = float(m[2])
    return cpu


def row(k: int, ev: dict, cpu: float | None) -> str:
    m, t = ev["metrics"], ev["trust"]
    s = t["split"]
    acc = f" ({s['auto_accuracy'] * 100:.1f} %)" if s["auto_accuracy"] is not None else ""
    cpu_s = f"{cpu:,.0f}" if cpu is not None else "–"
    return (f"| {k} | {m['n']} | {m['top1'] * 100:.1f} % | {m['ece']:.3f} | {s['coverage'] * 100:.1f} %{acc} | "
            f"{s['coverage_at_target'] * 100:.1f} % | {t['non_artwork']['auroc']:.3f} | {t['shifted']['all']['auroc']:.3f} | "
            f"{cpu_s} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="the recipe's NAME in runs/cv<k>-NAME")
    p.add_argument("logs", nargs="*", type=Path, help="cv.sh output, for the train CPU column")
    a = p.parse_args()
    cpu = train_cpu(a.name, a.logs)
    run = re.compile(r"cv(\d+)-%s" % re.escape(a.name))
    folds = sorted(int(m[1]) for d in Path("runs").glob(f"cv*-{a.name}")
                   if (m := run.fullmatch(d.name)) and (d / "eval_test.json").exists())
    if not folds:
        raise SystemExit(f"no runs/cv<k>-{a.name}/eval_test.json")
    preds = []
    for k in folds:
        ev = json.loads(Path(f"runs/cv{k}-{a.name}/eval_test.json").read_text())
        print(row(k, ev, cpu.get(k)))
        preds += ev["predictions"]
    right = sum(q["pred"] == q["target"] for q in preds)
    print(f"pooled top-1 {right}/{len(preds)} = {right / len(preds) * 100:.1f} %")


if __name__ == "__main__":
    main()
