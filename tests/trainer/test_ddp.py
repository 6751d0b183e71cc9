"""DDP: a 2-process gloo run under torchrun matches a 1-process run with the same global batch.

Tolerance: validation top-1/top-3/macro-F1 identical (per-sample predictions, counted exactly over
unpadded shards of an odd-sized val split), val loss within 1e-5 and weights within 1e-4 (only the order
of float additions differs: gloo averages the two half-batch gradients). The tiny model has no
BatchNorm, so per-rank batch statistics do not enter.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from trainer.corpus.manifest import read_manifest, write_manifest
from trainer.synthetic import write_corpus

TORCHRUN = Path(sys.executable).with_name("torchrun")


def run(cmd: list[str], tmp: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_two_process_gloo_run_matches_one_process(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", ["disc", "square", "hstripes", "vstripes"], per_class=40)
    rows = read_manifest(manifest)
    drop = next(r for r in rows if r.split == "val")
    write_manifest(manifest, [r for r in rows if r is not drop])  # 31 val images: shards of 16 and 15
    args = ["-m", "trainer", "train", "--corpus", str(manifest), "--arch", "tiny", "--no-pretrained",
            "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--workers", "0",
            "--device", "cpu"]
    run([sys.executable, *args, "--out", str(tmp_path / "one")], tmp_path)
    run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")], tmp_path)

    one, two = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(one) == len(two) == 2  # rank 0 alone writes the history
    for a, b in zip(one, two):
        for k in ("val_top1", "val_top3", "val_macro_f1"):
            assert a[k] == b[k], (k, a[k], b[k])
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["world_size"] == 2 and info["counts"]["val"] == 31
    wa = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["model"]
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    assert len(list((tmp_path / "two" / "tb").glob("events.out.tfevents.*"))) >= 1
