"""`compare`: pooled held-out predictions of two recipes, paired per image."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.trainer.conftest import trainer_cmd
from tests.trainer.test_train import LABELS, tiny
from trainer.compare import CompareError, compare, mcnemar_p
from trainer.evaluate import evaluate_run
from trainer.synthetic import write_corpus
from trainer.train import train


def test_mcnemar_exact_values():
    assert mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 7) == pytest.approx(2 / 2**7)


def test_compare_two_real_runs_pairs_every_test_image(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", LABELS, per_class=20)
    a = train(tiny(corpus, tmp_path / "a", epochs=4))
    b = train(tiny(corpus, tmp_path / "b", epochs=1, lr=3e-4))
    ea = evaluate_run(a, "test", workers=0)["metrics"]
    eb = evaluate_run(b, "test", workers=0)["metrics"]
    c = compare([str(a)], [str(b)])
    assert c.n == ea["n"] == eb["n"]
    assert c.a.top1 == pytest.approx(ea["top1"]) and c.b.top1 == pytest.approx(eb["top1"])
    assert c.only_a_right - c.only_b_right == round(c.n * (ea["top1"] - eb["top1"]))
    out = tmp_path / "cmp.json"
    r = subprocess.run(trainer_cmd("compare", "--a", str(a), "--b", str(b), "--out", str(out)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["only_a_right"] == c.only_a_right
    with pytest.raises(CompareError, match="held out by two runs"):
        compare([str(a), str(a)], [str(b)])
    r = subprocess.run(trainer_cmd("compare", "--a", str(a), "--b", str(tmp_path / "nope")), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
