"""`corpus folds`: k stratified folds, every image held out once, duplicates kept together, paths valid."""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from tests.trainer.conftest import trainer_cmd
from trainer.corpus.manifest import read_manifest, resolve_image, write_manifest
from trainer.synthetic import write_corpus

LABELS = ["disc", "square", "hstripes"]


def make_corpus(root: Path) -> Path:
    manifest = write_corpus(root, LABELS, per_class={"disc": 20, "square": 13, "hstripes": 7})
    rows = read_manifest(manifest)
    dup = rows[0].model_copy(update={"object_id": "dup-of-" + rows[0].object_id, "split": "train"})
    write_manifest(manifest, [*rows, dup])
    return manifest


def folds(corpus: Path, out: Path, k: int, fold: int) -> subprocess.CompletedProcess:
    return subprocess.run(trainer_cmd("corpus", "folds", str(corpus), "--folds", str(k), "--fold", str(fold),
                                      "--out", str(out)), capture_output=True, text=True)


def test_every_image_is_test_once_and_val_is_the_next_fold(tmp_path):
    src = make_corpus(tmp_path / "src")
    source_rows = read_manifest(src)
    k = 5
    test_of, val_of = Counter(), Counter()
    per_fold = []
    for fold in range(k):
        out = tmp_path / "nested" / f"cv{fold}"
        r = folds(src, out, k, fold)
        assert r.returncode == 0, r.stderr
        rows = read_manifest(out / "manifest.jsonl")
        assert len(rows) == len(source_rows)
        for row in rows:
            assert resolve_image(out, row).resolve().is_file()
        by_id = {row.object_id: row for row in rows}
        test_of.update(o for o, row in by_id.items() if row.split == "test")
        val_of.update(o for o, row in by_id.items() if row.split == "val")
        per_fold.append({o for o, row in by_id.items() if row.split == "test"})
        dup = by_id["dup-of-" + source_rows[0].object_id]
        assert dup.split == by_id[source_rows[0].object_id].split  # byte-identical images stay together
        assert json.loads((out / "corpus.json").read_text())["source"] == "folds"
    assert set(test_of.values()) == {1} and set(val_of.values()) == {1}
    assert len(test_of) == len(source_rows)
    for fold in range(k):  # val of fold K is the test fold of K+1
        rows = read_manifest(tmp_path / "nested" / f"cv{fold}" / "manifest.jsonl")
        assert {row.object_id for row in rows if row.split == "val"} == per_fold[(fold + 1) % k]
    for label in LABELS:  # stratified: per label, test folds differ by at most one image
        sizes = [sum(1 for o in ids if next(r for r in source_rows if r.object_id == o).label == label)
                 for ids in per_fold]
        assert max(sizes) - min(sizes) <= 1 + (label == "disc"), (label, sizes)  # + the duplicate


def test_bad_arguments_fail_in_one_line(tmp_path):
    src = make_corpus(tmp_path / "src")
    for args, text in [((2, 0), "at least 3"), ((5, 5), "must be in 0..4")]:
        r = folds(src, tmp_path / "out", *args)
        assert r.returncode == 2 and text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = folds(tmp_path / "missing", tmp_path / "out", 5, 0)
    assert r.returncode == 2 and "no manifest.jsonl" in r.stderr
    r = folds(src, src.parent, 5, 0)
    assert r.returncode == 2 and "is the source corpus" in r.stderr
