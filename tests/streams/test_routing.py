"""The routing rule the worker applies (streams/contract/routing.py): pure numpy, JSON in the model contract."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from streams.contract.routing import RoutingRule

CLASSES = ["Egyptian Art", "Greek and Roman Art", "Asian Art"]


def rule(**kw) -> RoutingRule:
    base = dict(method="ltt", classes=CLASSES, confidence_threshold=0.8, target_accuracy=0.95, delta=0.1,
                set_threshold=0.2, set_coverage=0.95, unfamiliar_threshold=0.3, unfamiliar_false_alarm=0.05)
    return RoutingRule(**(base | kw))


def test_unfamiliar_goes_to_review_whatever_its_confidence():
    r = rule()
    assert r.apply([0.99, 0.005, 0.005], 0.31) == (False, "unfamiliar", ["Egyptian Art"])
    assert r.apply([0.99, 0.005, 0.005], 0.29) == (True, "confident", ["Egyptian Art"])
    assert r.apply([0.99, 0.005, 0.005], float("nan")).reason == "unfamiliar"  # a broken score is not familiar


def test_low_confidence_reviews_with_the_conformal_prediction_set():
    d = rule().apply([0.55, 0.35, 0.10], 0.1)
    assert d == (False, "low_confidence", ["Egyptian Art", "Greek and Roman Art"])
    assert rule().apply([0.10, 0.85, 0.05], 0.1) == (True, "confident", ["Greek and Roman Art"])
    # the set is never empty: the top-1 is always in it
    assert rule(set_threshold=0.9).apply([0.4, 0.35, 0.25], 0.0).prediction_set == ["Egyptian Art"]


def test_global_override_uses_margin_and_keeps_the_unfamiliar_gate():
    g = RoutingRule.global_thresholds(CLASSES, min_confidence=0.5, min_margin=0.15, base=rule())
    assert g.method == "global" and g.unfamiliar_threshold == 0.3
    assert g.apply([0.55, 0.45, 0.0], 0.1).reason == "small_margin"
    assert g.apply([0.45, 0.30, 0.25], 0.1).reason == "low_confidence"
    assert g.apply([0.75, 0.20, 0.05], 0.1) == (True, "confident", ["Egyptian Art"])
    assert g.apply([0.75, 0.20, 0.05], 0.9).reason == "unfamiliar"
    plain = RoutingRule.global_thresholds(CLASSES)
    assert plain.unfamiliar_threshold is None and plain.apply([0.8, 0.1, 0.1]).auto_route


def test_batch_equals_one_by_one_and_json_round_trips():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([0.5, 0.5, 0.5], size=200)
    u = rng.uniform(0, 0.5, size=200)
    r = rule()
    auto, reasons, sets = r.apply_batch(probs, u)
    assert [tuple(r.apply(p, x)) for p, x in zip(probs, u)] == list(zip(auto.tolist(), reasons, sets))
    assert {"confident", "unfamiliar", "low_confidence"} <= set(reasons)
    again = RoutingRule.model_validate_json(r.model_dump_json())
    assert again == r and again.apply_batch(probs, u)[1] == reasons


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="do not match 3 classes"):
        rule().apply([0.5, 0.5], 0.1)
    with pytest.raises(ValueError, match="no unfamiliarity scores"):
        rule().apply([0.9, 0.05, 0.05])
    with pytest.raises(ValidationError, match="needs target_accuracy"):
        RoutingRule(method="ltt", classes=CLASSES, confidence_threshold=0.9)
    with pytest.raises(ValidationError):
        rule(surprise=1)


def test_one_image_in_plain_python_answers_as_the_batch_does():
    # `apply` (one image, plain Python: the worker's per-decision path) must give apply_batch's answer,
    # ties (lower index first), NaN unfamiliarity, sets and margins included.
    rng = np.random.default_rng(1)
    probs = np.concatenate([rng.dirichlet([0.3, 0.3, 0.3], size=300),
                            [[0.5, 0.5, 0.0], [0.25, 0.375, 0.375], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]]])
    u = rng.uniform(0, 0.5, size=len(probs))
    u[::17] = np.nan
    for r in (rule(), RoutingRule.global_thresholds(CLASSES, 0.6, 0.2, base=rule()),
              RoutingRule.global_thresholds(CLASSES, 0.6, 0.2)):
        scores = None if r.unfamiliar_threshold is None else u
        auto, reasons, sets = r.apply_batch(probs, scores)
        one = [tuple(r.apply(p.tolist(), None if scores is None else float(x))) for p, x in zip(probs, u)]
        assert one == list(zip(auto.tolist(), reasons, sets))
        assert len({len(s) for s in sets}) > 1 or r.set_threshold is None
