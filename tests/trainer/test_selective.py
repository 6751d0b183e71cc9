"""Fitting the routing rule (trainer/selective.py): the stated guarantees hold on simulated models."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.selective import (NEVER, conformal_set_threshold, coverage_at_accuracy, fit_rule, ltt_threshold,
                               min_testable, risk_coverage, upper_bound)

TARGET, DELTA = 0.95, 0.1


def population(rng, n):
    """A calibrated 4-class model: top-1 confidence c, right with probability c (selective accuracy rises with c)."""
    conf = 0.25 + 0.75 * rng.beta(3.0, 0.4, size=n)
    return conf, rng.random(n) < conf


def true_accuracy(lam: float, big_conf: np.ndarray, big_right: np.ndarray) -> float:
    sel = big_conf >= lam
    return float(big_right[sel].mean()) if sel.any() else 1.0


def test_ltt_keeps_its_guarantee_where_the_naive_threshold_does_not():
    rng = np.random.default_rng(0)
    big_conf, big_right = population(rng, 400_000)
    misses = naive_misses = 0
    coverages = []
    trials = 300
    for _ in range(trials):
        conf, right = population(rng, 300)
        lam, _ = ltt_threshold(conf, right, TARGET, DELTA)
        misses += true_accuracy(lam, big_conf, big_right) < TARGET
        coverages.append(float((big_conf >= lam).mean()))
        # naive: the lowest threshold whose empirical accuracy on the same photos reaches the target
        order = np.argsort(-conf)
        acc = np.cumsum(right[order]) / np.arange(1, len(conf) + 1)
        naive = conf[order][np.flatnonzero(acc >= TARGET).max()]
        naive_misses += true_accuracy(naive, big_conf, big_right) < TARGET
    assert misses / trials <= DELTA + 0.05          # P(accuracy of auto-routed < target) <= delta (+ MC slack)
    assert naive_misses / trials > 0.3               # what the guarantee protects against
    assert np.median(coverages) > 0.2                # and it is not vacuous


def test_too_few_validation_photos_never_auto_route():
    assert min_testable(0.05, 0.1) == 45 and 0.95**45 <= 0.1 < 0.95**44
    conf, right = np.full(44, 0.99), np.ones(44, bool)
    assert ltt_threshold(conf, right, TARGET, DELTA) == (NEVER, None)
    lam, p = ltt_threshold(np.full(45, 0.99), np.ones(45, bool), TARGET, DELTA)
    assert lam <= 0.99 and p == pytest.approx(0.95**45)


def test_conformal_sets_hold_the_truth_as_often_as_asked():
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(200):
        probs = rng.dirichlet([0.4] * 4, size=200 + 2000)
        labels = (rng.random((len(probs), 1)) > probs.cumsum(1)).sum(1)  # calibrated: the label drawn from the probs
        thr = conformal_set_threshold(probs[:200], labels[:200], 0.9)
        test, y = probs[200:], labels[200:]
        covered.append(np.mean((test[np.arange(len(y)), y] >= thr) | (test.argmax(1) == y)))
    assert np.mean(covered) >= 0.9 - 0.005
    assert np.mean(covered) <= 0.95  # and not trivially (all classes)


def test_fit_rule_measures_itself_on_the_validation_photos():
    rng = np.random.default_rng(2)
    n = 400
    conf, right = population(rng, n)
    targets = rng.integers(0, 3, n)
    probs = np.zeros((n, 3))
    pred = np.where(right, targets, (targets + 1) % 3)
    probs[np.arange(n), pred] = conf
    probs[np.arange(n), (pred + 2) % 3] = 1 - conf
    u = rng.uniform(0, 1, n)
    rule = fit_rule(probs, targets, ["a", "b", "c"], TARGET, DELTA, unfamiliarity=u, unfamiliar_threshold=0.9,
                    unfamiliar_false_alarm=0.1)
    v = rule.validation
    assert rule.method == "ltt" and 0.5 < rule.confidence_threshold < 1 and v.n == n
    auto = (probs.max(1) >= rule.confidence_threshold) & (u <= 0.9)
    assert v.auto_share == pytest.approx(auto.mean()) and v.auto_accuracy == pytest.approx(right[auto].mean())
    assert v.auto_accuracy >= TARGET and v.risk_bound == pytest.approx(upper_bound(int((~right[auto]).sum()),
                                                                                   int(auto.sum()), DELTA))
    assert v.unfamiliar_share == pytest.approx((u > 0.9).mean())
    assert v.set_coverage >= 0.94


def test_risk_coverage_curve():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    targets = np.array([0, 1, 1, 0])  # right, wrong, right, right
    c = risk_coverage(probs, targets)
    assert c["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert c["risk"] == pytest.approx([0, 0.5, 1 / 3, 0.25], abs=1e-5)
    assert coverage_at_accuracy(c, 0.75) == 1.0 and coverage_at_accuracy(c, 0.9) == 0.25
    eligible = np.array([True, False, True, True])
    assert risk_coverage(probs, targets, eligible)["risk"] == [0, 0, 0]
