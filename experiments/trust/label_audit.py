"""How many of the Egyptian corpus's labels are artefacts of keyword matching, and what they cost a model.

The corpus's labels (../shared/data/egyptian-met/README.md) come from keyword rules applied as substrings to
the title, object name and medium, Jewellery's keywords first; one of them is "ring", so "Head of a Queen
Wearing a Vulture Headdress", "Relief from an Offering Niche" and "Syrians Bringing Horses" are Jewellery.
This counts the photos labelled Jewellery whose title and medium hold "ring" only inside other words and
no jewellery word at all, and scores cross-validated runs with and without them.

usage: python experiments/trust/label_audit.py [--labels CSV] RUN_GLOB [RUN_GLOB ...]
   e.g. python experiments/trust/label_audit.py 'runs/cv*-l0-j'
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import re
from pathlib import Path

JEWELLERY_WORDS = re.compile(r"\b(amulets?|necklaces?|rings?|earrings?|bracelets?|pendants?|beads?|scarabs?|jewel\w*|"
                             r"anklets?|collars?|pectorals?|diadems?|gold|silver|carnelian|lapis|inlays?)\b", re.I)


def ring_artefacts(labels_csv: Path) -> dict[str, str]:
    """object file name -> title, for Jewellery labels that only a 'ring' inside another word can explain."""
    out = {}
    for row in csv.DictReader(labels_csv.open(encoding="utf-8")):
        text = f"{row['title']} {row['medium']}"
        if row["label"] == "Jewellery" and "ring" in text.lower() and not JEWELLERY_WORDS.search(text):
            out[Path(row["file"]).name] = row["title"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directory globs holding eval_test.json (one per fold)")
    p.add_argument("--labels", type=Path, default=Path("../shared/data/egyptian-met/labels.csv"))
    args = p.parse_args()
    artefacts = ring_artefacts(args.labels)
    print(f"{len(artefacts)} photos of {args.labels} labelled Jewellery only by a 'ring' inside another word")
    for pattern in args.runs:
        evals = [Path(run) / "eval_test.json" for run in sorted(glob.glob(pattern))]
        preds = [q for ev in evals if ev.exists() for q in json.loads(ev.read_text())["predictions"]]
        if not preds:
            print(f"{pattern}: no evaluated run")
            continue
        flagged = [q for q in preds if Path(q["path"]).name in artefacts]
        rest = [q for q in preds if Path(q["path"]).name not in artefacts]
        right = sum(q["pred"] == q["target"] for q in preds)
        print(f"{pattern}: {len(preds)} held-out photos, top-1 {right / len(preds):.3f}; {len(flagged)} of them "
              f"flagged, the model calls {sum(q['pred'] != 'Jewellery' for q in flagged)} of those something else; "
              f"top-1 without them {sum(q['pred'] == q['target'] for q in rest) / len(rest):.3f}")
        for q in sorted(flagged, key=lambda q: -q["confidence"])[:5]:
            print(f"  {q['confidence']:.2f} {q['pred']:9s} {artefacts[Path(q['path']).name]}")


if __name__ == "__main__":
    main()
