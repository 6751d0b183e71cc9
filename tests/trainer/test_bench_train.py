"""`python -m trainer bench train` on a tiny setting: both loops and both loaders measured, JSON written."""
from __future__ import annotations

import json
import subprocess

from trainer.bench_train import BenchResult

from .conftest import trainer_cmd


def test_bench_train_writes_rates_ratio_and_settings(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(trainer_cmd("bench", "train", "--out", str(out), "--arch", "tiny", "--images", "24",
                                      "--image-size", "32", "--batch-size", "8", "--threads", "1", "--repeats", "2"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    raw = json.loads(out.read_text())
    assert set(raw) == {"settings", "torch_threads", "torch_version", "images", "classes", "ours", "reference",
                        "ratio", "data_loading_images_per_s"}
    r = BenchResult.model_validate(raw)
    assert r.torch_threads == 1 and r.images == 24 and r.classes == 6
    assert (r.settings.arch, r.settings.image_size, r.settings.batch_size) == ("tiny", 32, 8)
    for loop in (r.ours, r.reference):
        assert len(loop.runs_images_per_s) == 2 and loop.images_per_s > 0
        assert 0 <= loop.data_wait_s <= loop.seconds
        assert abs(loop.images_per_s - sum(loop.runs_images_per_s) / 2) < 1e-9  # the median of two runs
    assert abs(r.ratio - r.ours.images_per_s / r.reference.images_per_s) < 1e-9
    assert r.data_loading_images_per_s["ours"] > 0 and r.data_loading_images_per_s["reference"] > 0
    assert json.loads(proc.stdout.split("\n}\n")[0] + "\n}") == raw  # the same JSON on stdout


def test_bench_train_missing_corpus_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(trainer_cmd("bench", "train", "--corpus", str(tmp_path / "none"), "--arch", "tiny"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "python -m trainer bench train: error:" in proc.stderr


def test_bench_infer_times_the_traced_two_output_model(tmp_path):
    out = tmp_path / "infer.json"
    proc = subprocess.run(trainer_cmd("bench", "infer", "--arch", "tiny", "--image-size", "32", "--batch", "1", "4",
                                      "--repeats", "2", "--threads", "1", "--bank", "50", "--out", str(out)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["arch"] == "tiny" and r["torch_threads"] == 1 and set(r["images_per_s"]) == {"1", "4"}
    assert all(v > 0 for v in r["images_per_s"].values())
    assert "tiny 32 px, batch 4, 1 thread(s):" in proc.stdout
