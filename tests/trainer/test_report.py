"""The run report: a tiny trained run -> self-contained report.html and slides.html; errors are one line."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from trainer.report import Evaluation, examples
from trainer.run import TrainConfig
from trainer.synthetic import write_corpus
from trainer.train import train

from .conftest import trainer_cmd

LABELS = ["disc", "square", "hstripes", "vstripes"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    corpus = write_corpus(root / "corpus", LABELS, per_class=15)
    cfg = TrainConfig(corpus=str(corpus), out=str(root / "run"), arch="tiny", pretrained=False, image_size=32,
                      epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, workers=0, device="cpu")
    return train(cfg)


@pytest.fixture(scope="module")
def written(run_dir, tmp_path_factory):
    """`python -m trainer report` on a run without eval_test.json: it evaluates first, then writes both files."""
    assert not (run_dir / "eval_test.json").exists()
    out = tmp_path_factory.mktemp("report-out")
    proc = subprocess.run(trainer_cmd("report", "--run", str(run_dir), "--out", str(out)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def test_report_is_self_contained_and_shows_the_evaluation(run_dir, written):
    evaluation = json.loads((run_dir / "eval_test.json").read_text())  # written by the report's evaluate step
    page = (written / "report.html").read_text()
    sources = image_sources(page)
    # 4 figures (counts, curves, confusion, reliability) and the example photos, all embedded
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)
    assert "<link" not in page and "<script src" not in page
    for name in LABELS:
        assert name in page
    assert f"top-1 {evaluation['metrics']['top1']:.3f}" in page
    assert f"<td>{evaluation['metrics']['macro_f1']:.3f}</td>" in page
    m = evaluation["metrics"]   # ECE beside what sampling noise alone gives on as many images
    assert f"<td>{m['ece_floor']:.3f} / {m['ece_floor_p95']:.3f}</td>" in page
    for section in ("Data", "Training curves", "Calibration", "Most confident correct predictions",
                    "Most confident mistakes"):
        assert f"<h2>{section}</h2>" in page
    # per-class counts come from the manifest: 15 images per class -> 9 train, 3 val, 3 test
    assert "<tr><td>disc</td><td>9</td><td>3</td><td>3</td><td>15</td>" in page


def test_examples_are_the_most_confident_right_and_wrong(run_dir, written):
    ev = Evaluation.model_validate_json((run_dir / "eval_test.json").read_text())
    right, wrong = examples(ev.predictions, True), examples(ev.predictions, False)
    assert len(right) + len(wrong) >= min(8, len(ev.predictions))
    assert all(p.pred == p.target for p in right) and all(p.pred != p.target for p in wrong)
    for chosen, correct in ((right, True), (wrong, False)):
        rest = [p.confidence for p in ev.predictions if (p.pred == p.target) == correct and p not in chosen]
        assert [p.confidence for p in chosen] == sorted((p.confidence for p in chosen), reverse=True)
        assert not rest or min(p.confidence for p in chosen) >= max(rest)
    page = (written / "report.html").read_text()
    if right:
        assert f"predicted <b>{right[0].pred}</b> ({right[0].confidence:.0%})" in page


def test_slides_reuse_the_report_figures(written):
    report, slides = (written / "report.html").read_text(), (written / "slides.html").read_text()
    assert 6 <= slides.count('<section class="slide"') <= 10
    figures = set(re.findall(r'<img class="fig" src="([^"]*)"', slides))
    assert len(figures) >= 3 and figures <= set(image_sources(report))
    assert all(s.startswith("data:image/png;base64,") for s in image_sources(slides))
    assert "keydown" in slides  # keyboard navigation


def test_missing_run_directory_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(trainer_cmd("report", "--run", str(tmp_path / "nope")), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"python -m trainer report: error: {tmp_path / 'nope'}: no such run directory"]


def test_unfinished_run_is_one_line_exit_2(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps(info | {"finished": None}))
    proc = subprocess.run(trainer_cmd("report", "--run", str(copy)), capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "training has not finished" in lines[0]
    assert not (copy / "report").exists()
