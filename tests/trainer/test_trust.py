"""`trainer evaluate` fits and measures the routing rule and the unfamiliarity score on a real (tiny) run;
the stored rule, applied as the worker will, reproduces the evaluation; compare and report show it."""
from __future__ import annotations

import json
import subprocess
import warnings

import numpy as np
import pytest
import torch

from streams.contract.routing import RoutingRule
from tests.trainer.conftest import trainer_cmd
from tests.trainer.test_train import LABELS, tiny
from trainer import shift, trust, unfamiliar
from trainer.calibration import softmax
from trainer.compare import compare
from trainer.data import ImageDataset, load_corpus, load_split
from trainer.evaluate import evaluate_run, run_taxonomy
from trainer.report import write_report
from trainer.run import load_model, read_calibration
from trainer.synthetic import write_corpus
from trainer.train import train

CFG = trust.TrustConfig(target_accuracy=0.9, delta=0.2, false_alarm=0.1)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    corpus = write_corpus(root / "corpus", LABELS, per_class=40, fractions=(0.5, 0.3, 0.2))
    run = train(tiny(corpus, root / "run", epochs=8))
    return run, evaluate_run(run, "test", workers=0, trust_cfg=CFG)


def test_rule_and_score_are_saved_and_fitted_on_val(evaluated):
    run, ev = evaluated
    rule = trust.read_rule(run)
    assert rule == RoutingRule.model_validate(ev["trust"]["rule"])
    assert rule.method == "ltt" and rule.target_accuracy == 0.9 and rule.delta == 0.2
    assert rule.validation.n == 4 * 12 and rule.unfamiliar_false_alarm == 0.1
    assert rule.validation.unfamiliar_share <= 0.1
    assert rule.confidence_threshold < 1, "the tiny model should be certifiable at 90 % on 48 val photos"
    assert rule.validation.auto_accuracy >= 0.9
    assert unfamiliar.load(run).bank.shape[0] == 4 * 20  # the train photos


def test_the_stored_rule_applied_like_the_worker_reproduces_the_evaluation(evaluated):
    run, ev = evaluated
    rule = trust.read_rule(run)
    preds = ev["predictions"]
    probs = np.array([p["probs"] for p in preds])
    u = np.array([p["unfamiliarity"] for p in preds])
    auto, reasons, sets = rule.apply_batch(probs, u)
    assert auto.tolist() == [p["auto_route"] for p in preds]
    assert reasons == [p["reason"] for p in preds] and sets == [p["prediction_set"] for p in preds]
    s = ev["trust"]["split"]
    right = np.array([p["pred"] == p["target"] for p in preds])
    assert s["coverage"] == pytest.approx(auto.mean()) and s["auto_n"] == auto.sum() > 0
    assert s["auto_accuracy"] == pytest.approx(right[auto].mean())
    curve = s["risk_coverage"]
    assert len(curve["coverage"]) == len(preds) - (u > rule.unfamiliar_threshold).sum()


def test_the_traced_two_output_model_serves_the_evaluated_scores(evaluated):
    """What part B exports (Trusted: probabilities + unfamiliarity) gives what evaluate measured."""
    run, ev = evaluated
    info, model = load_model(run)
    served = unfamiliar.Trusted(model, read_calibration(run).temperature, unfamiliar.load(run)).eval()
    rows, base = load_corpus(info.manifest)
    ds = ImageDataset(load_split(rows, base, run_taxonomy(info), "test")[:6], (32, 32), train=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            probs, u = torch.jit.trace(served, x)(x)
    assert np.allclose(probs.numpy(), [p["probs"] for p in ev["predictions"][:6]], atol=1e-5)
    assert np.allclose(u.numpy(), [p["unfamiliarity"] for p in ev["predictions"][:6]], atol=1e-5)


def test_shifted_and_non_artwork_sets_are_measured(evaluated):
    _, ev = evaluated
    n = ev["metrics"]["n"]
    assert len(ev["shifted_predictions"]) == len(shift.KINDS) * n
    assert len(ev["non_artwork_predictions"]) == len(shift.NON_ARTWORK)
    t = ev["trust"]
    assert set(t["shifted"]) == {*shift.KINDS, "all"} and t["shifted"]["all"]["n"] == len(shift.KINDS) * n
    assert t["non_artwork"]["auroc"] > 0.6  # photos of the world are further from the training set than test photos
    na = ev["non_artwork_predictions"]
    assert t["non_artwork"]["auto_share"] == pytest.approx(np.mean([p["auto_route"] for p in na]))
    assert all(p["reason"] == "unfamiliar" for p in na if p["unfamiliarity"] > t["rule"]["unfamiliar_threshold"])


def test_compare_and_report_show_the_trust_numbers(evaluated, tmp_path):
    run, ev = evaluated
    c = compare([str(run)], [str(run)])
    assert c.a.trust is not None and c.a.trust.coverage == pytest.approx(ev["trust"]["split"]["coverage"])
    assert c.a.trust.auroc_non_artwork == pytest.approx(ev["trust"]["non_artwork"]["auroc"])
    report, slides = write_report(run, tmp_path / "report")
    html = report.read_text()
    assert "Routing you can trust" in html and "risk-coverage curve" in html and "unfamiliarity histograms" in html
    assert "Unfamiliar photos" in slides.read_text()


def test_evaluate_refuses_a_bad_target_in_one_line(evaluated):
    run, _ = evaluated
    r = subprocess.run(trainer_cmd("evaluate", "--run", str(run), "--target-accuracy", "1.5"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--target-accuracy" in r.stderr


def test_fit_run_refits_for_another_target_as_export_will(evaluated, tmp_path):
    import shutil

    run, ev = evaluated
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rule, scorer = trust.fit_run(copy, trust.TrustConfig(target_accuracy=0.9, delta=0.2, false_alarm=0.1))
    assert rule == trust.read_rule(run)  # the same photos, model and temperature: the same rule
    assert torch.equal(scorer.bank, unfamiliar.load(run).bank)
    strict, _ = trust.fit_run(copy, trust.TrustConfig(target_accuracy=0.99, delta=0.2, false_alarm=0.1))
    assert strict.confidence_threshold >= rule.confidence_threshold and trust.read_rule(copy) == strict


def test_refit_from_stored_val_predictions_equals_fitting_on_the_images(evaluated, tmp_path):
    import shutil

    run, ev = evaluated
    assert len(ev["val_predictions"]) == 48
    again = trust.refit(ev, 0.9, 0.2)
    assert again["trust"]["rule"]["confidence_threshold"] == ev["trust"]["rule"]["confidence_threshold"]
    assert [p["auto_route"] for p in again["predictions"]] == [p["auto_route"] for p in ev["predictions"]]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    strict_rule, _ = trust.fit_run(copy, trust.TrustConfig(target_accuracy=0.97, delta=0.3, false_alarm=0.1))
    strict = trust.refit(ev, 0.97, 0.3)
    assert strict["trust"]["rule"]["confidence_threshold"] == strict_rule.confidence_threshold
    c = compare([str(run)], [str(run)], refit=(0.97, 0.3))
    auto = [p["auto_route"] for p in strict["predictions"]]
    assert c.a.trust.coverage == pytest.approx(np.mean(auto))
