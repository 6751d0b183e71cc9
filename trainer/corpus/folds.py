"""Re-split a corpus for k-fold cross-validation: fold K is test, fold K+1 (mod k) is val, the rest train.

A ~100-image val or test split cannot tell two training recipes apart (one photo is a point; the 95 %
interval of a top-1 near 0.8 is about +/-8 points). Training the same recipe on several folds and pooling
the test predictions gives every image of the corpus (or of the folds run) a held-out prediction.

Folds are stratified by label and keep byte-identical images together (same sha256: same fold). Images
of each label are ordered by a hash of (seed, sha256) and dealt round-robin, so fold sizes per label
differ by at most one and the folds do not depend on the corpus' original split. Rows keep every
column except `split`; paths are rewritten relative to OUT, images are not copied.

example (10 folds, the 5 disjoint test folds 0, 2, 4, 6, 8 each ~10 % of the images):
  for k in 0 2 4 6 8; do
    python -m trainer corpus folds corpora/egyptian --folds 10 --fold $k --out corpora/egyptian-cv$k
  done
"""
from __future__ import annotations

import argparse
import hashlib
from collections import defaultdict
from pathlib import Path

from trainer.corpus.common import CorpusInfo, CorpusInputError, finish_corpus, jsonable_args, utc_now
from trainer.corpus.manifest import ManifestRow, dumps_summary, manifest_path, read_manifest, relocate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", metavar="CORPUS", help="corpus directory (holding manifest.jsonl) or a manifest file")
    p.add_argument("--folds", type=int, default=10, help="number of folds k, >= 3 (default: 10)")
    p.add_argument("--fold", type=int, required=True, help="test fold, 0..k-1; fold+1 (mod k) becomes val")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default: 0)")
    p.add_argument("--out", required=True, help="new corpus directory (manifest.jsonl + corpus.json)")


def fold_of_groups(rows: list[ManifestRow], folds: int, seed: int) -> dict[str, int]:
    """sha256 -> fold, stratified by label (a duplicate group goes with its first row's label)."""
    label_of: dict[str, str] = {}
    for r in rows:
        label_of.setdefault(r.sha256, r.label)
    by_label: dict[str, list[str]] = defaultdict(list)
    for sha, label in label_of.items():
        by_label[label].append(sha)
    out, offset = {}, 0
    for label in sorted(by_label):
        order = sorted(by_label[label], key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).digest())
        for i, sha in enumerate(order):
            out[sha] = (offset + i) % folds
        offset += len(order)  # the next label starts where this one stopped: fold sizes stay even overall
    return out


def resplit(rows: list[ManifestRow], source_dir: Path, out: Path, folds: int, fold: int,
            seed: int = 0) -> list[ManifestRow]:
    if folds < 3:
        raise CorpusInputError(f"--folds {folds}: need at least 3 (test, val and train folds)")
    if not 0 <= fold < folds:
        raise CorpusInputError(f"--fold {fold}: must be in 0..{folds - 1}")
    of = fold_of_groups(rows, folds, seed)
    val = (fold + 1) % folds
    new = []
    for r in rows:
        f = of[r.sha256]
        new.append(relocate(r, source_dir, out, split="test" if f == fold else "val" if f == val else "train"))
    return new


def main(args: argparse.Namespace) -> int:
    manifest = manifest_path(args.corpus)
    if not manifest.is_file():
        raise CorpusInputError(f"{args.corpus}: no manifest.jsonl")
    out = Path(args.out)
    if out.resolve() == manifest.parent.resolve():
        raise CorpusInputError(f"--out {args.out}: is the source corpus; choose a new directory")
    rows = read_manifest(manifest)
    if not rows:
        raise CorpusInputError(f"{manifest}: no rows")
    new = resplit(rows, manifest.parent, out, args.folds, args.fold, args.seed)
    info = CorpusInfo(source="folds", created=utc_now(), split_seed=args.seed, args=jsonable_args(args))
    finish_corpus(out, new, info)
    print(dumps_summary(new))
    print(f"wrote {out / 'manifest.jsonl'} ({len(new)} images; fold {args.fold} of {args.folds} is test)")
    return 0
