"""`compare`: pooled held-out predictions of two recipes, paired per image."""
from __future__ import annotations

import json
import subprocess

import numpy as np
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
    saved = json.loads(out.read_text())
    assert saved["only_a_right"] == c.only_a_right
    # beside each ECE, what a perfectly calibrated model with the same confidences shows on as many images
    assert 0 < saved["a"]["ece_floor"] < saved["a"]["ece_floor_p95"] < 1
    assert "perfectly calibrated" in r.stdout
    with pytest.raises(CompareError, match="held out by two runs"):
        compare([str(a), str(a)], [str(b)])
    r = subprocess.run(trainer_cmd("compare", "--a", str(a), "--b", str(tmp_path / "nope")), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _fold(run, first: int, n: int, rng):
    """An eval_test.json like `trainer evaluate` writes: n val and n test photos, 2 classes, a rule with an
    unfamiliarity gate at 0.5; val: confident and right (one unfamiliar); test: the same and one wrong."""
    from streams.contract.routing import RoutingRule
    from trainer.trust import redecide

    classes = ["Pottery", "Statuary"]
    rule = RoutingRule(method="ltt", classes=classes, confidence_threshold=1.0000001, target_accuracy=0.95,
                       delta=0.1, set_threshold=0.2, set_coverage=0.95, unfamiliar_threshold=0.5)

    def photo(i, right=True, u=0.1):
        c = float(rng.uniform(0.97, 0.999))
        t = i % 2
        probs = [c, 1 - c] if (t == 0) == right else [1 - c, c]
        return {"path": f"/photos/{i}.jpg", "target": classes[t], "pred": classes[int(probs[1] > probs[0])],
                "probs": probs, "unfamiliarity": u}

    val = [photo(10_000 + first + i) for i in range(n - 1)] + [photo(20_000 + first, u=0.9)]
    test = [photo(first + i) for i in range(n - 1)] + [photo(first + n - 1, right=False)]
    ev = redecide({"classes": classes, "predictions": test, "val_predictions": val, "trust": {"rule": {}}}, rule)
    run.mkdir()
    (run / "eval_test.json").write_text(json.dumps(ev))
    return str(run)


def test_pooled_val_certifies_what_one_fold_cannot(tmp_path):
    # 95 % with delta 0.1 needs >= 45 eligible val photos with no error; each fold has 39 (one is unfamiliar):
    # alone no threshold is certified, pooled (78) one is, and every fold applies it with its own gate.
    from trainer.selective import NEVER

    rng = np.random.default_rng(0)
    runs = [_fold(tmp_path / f"cv{k}", 100 * k, 40, rng) for k in range(2)]
    alone = compare(runs, runs[::-1], refit=(0.95, 0.1))
    assert alone.a.trust.coverage == 0 and alone.a.trust.pooled_threshold is None
    pooled = compare(runs, runs, refit=(0.95, 0.1), pool_val=True)
    t = pooled.a.trust
    assert t.pooled_threshold is not None and t.pooled_threshold < NEVER
    assert t.coverage == 1.0  # every test photo is familiar and at least as confident as the threshold
    assert t.auto_accuracy == pytest.approx(78 / 80)  # the two wrong test photos are confident: routed, wrong
    out = tmp_path / "pooled.json"
    r = subprocess.run(trainer_cmd("compare", "--a", *runs, "--b", *runs, "--pool-val", "--out", str(out)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pooled-val threshold" in r.stdout
    assert json.loads(out.read_text())["a"]["trust"]["pooled_threshold"] == pytest.approx(t.pooled_threshold)
